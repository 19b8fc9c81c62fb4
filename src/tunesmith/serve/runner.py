"""Run an app with uvicorn in a background thread (tests, benchmarks) and a bounded loopback load test."""
from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

LOOPBACK = "127.0.0.1"  # load tests only ever target this machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@contextmanager
def running(app, timeout_s: float = 60.0):
    """Yields the base URL of `app` served on 127.0.0.1; stops the server on exit."""
    import httpx
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"server on {url} did not come up in {timeout_s:g}s")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def load_test(url: str, texts: list[str], *, clients: int = 8, requests: int = 200, texts_per_request: int = 1,
              max_seconds: float = 60.0, timeout_s: float = 30.0) -> dict:
    """`requests` POST /predict calls from `clients` concurrent clients, stopping early at max_seconds.
    Returns throughput, latency percentiles and the error count (non-200 answers and failures)."""
    import httpx

    if not url.startswith(f"http://{LOOPBACK}:") and not url.startswith("http://localhost:"):
        raise ValueError("load tests only target 127.0.0.1")
    lat, errors, lock = [], [], threading.Lock()
    stop_at = time.monotonic() + max_seconds
    counter = iter(range(requests))

    def client(cid: int):
        with httpx.Client(timeout=timeout_s) as c:
            for i in counter:  # shared iterator: the total is bounded, not per client
                if time.monotonic() > stop_at:
                    return
                body = {"texts": [texts[(i * texts_per_request + j) % len(texts)] for j in range(texts_per_request)]}
                t0 = time.perf_counter()
                try:
                    r = c.post(url + "/predict", json=body)
                    ok = r.status_code == 200 and len(r.json()["predictions"]) == texts_per_request
                except Exception as e:  # counted, not raised: the figure to report is the error count
                    ok, r = False, e
                dt = time.perf_counter() - t0
                with lock:
                    (lat.append(dt) if ok else errors.append(str(getattr(r, "status_code", r))[:80]))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    done = len(lat)
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"clients": clients, "requests": done + len(errors), "ok": done, "errors": len(errors),
            "error_samples": errors[:3], "seconds": round(wall, 3), "requests_per_s": round(done / wall, 2),
            "texts_per_s": round(done * texts_per_request / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}
