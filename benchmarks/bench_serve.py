"""Loopback load test of `tunesmith serve`: concurrent clients against one client, same server.

    .venv/bin/python benchmarks/bench_serve.py RUN [--data texts.csv] [--clients 8] [--requests 300]
                                               [--max-seconds 120] [--max-wait-ms 5] [--threads 1]

The server runs in this process on 127.0.0.1 (never another address); every phase is bounded in
request count and time. Prints throughput, p50/p99 latency and errors for (a) one client sending
one text at a time (the baseline) and (b) --clients concurrent clients, whose requests the server
micro-batches; the ratio of (b) to (a) is what batching by arrival buys. Also prints `uptime`'s
load average: on a shared machine the absolute figures move with it, the ratio much less.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from tunesmith.serve.app import Limits, create_app
from tunesmith.serve.runner import load_test, running

from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

FALLBACK = ["where is my card?", "I was charged twice for one payment", "how do I reset my passcode",
            "my transfer has not arrived", "can I get a refund for this purchase", "the app will not let me log in"]


def texts_from(path: str | None, run_recipe: dict) -> list[str]:
    from tunesmith.data.dataset import load_examples

    path = path or run_recipe.get("test") or run_recipe.get("train")
    try:
        return load_examples(path, run_recipe.get("text_column"), None, "single_label", need_labels=False).examples.texts[:2000]
    except Exception:
        return FALLBACK


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--baseline-requests", type=int, default=60)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, help="torch threads in the server (default: torch's own)")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    print(cpu_line(), flush=True)  # hosts differ: the ratios below hold for this one
    app = create_app(a.run, Limits(max_wait_ms=a.max_wait_ms, threads=a.threads))
    from tunesmith.run import open_run

    texts = texts_from(a.data, open_run(a.run).recipe)
    with running(app) as url:
        load_test(url, texts, clients=2, requests=10, max_seconds=30)  # warm-up: first calls allocate
        import httpx

        before = httpx.get(url + "/info").json()["batching"]
        base = load_test(url, texts, clients=1, requests=a.baseline_requests, max_seconds=a.max_seconds)
        conc = load_test(url, texts, clients=a.clients, requests=a.requests, max_seconds=a.max_seconds)
        after = httpx.get(url + "/info").json()["batching"]
    batches = after["batches"] - before["batches"]
    mean_batch = (after["texts"] - before["texts"]) / max(batches, 1)
    load = os.getloadavg()
    print(f"{'phase':<22}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, r in (("1 client (baseline)", base), (f"{a.clients} clients", conc)):
        print(f"{name:<22}{r['requests']:>9}{r['errors']:>7}{r['requests_per_s']:>9.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}")
    ratio = conc["requests_per_s"] / max(base["requests_per_s"], 1e-9)
    print(f"throughput ratio {a.clients} clients / 1 client: {ratio:.2f}x; mean micro-batch {mean_batch:.2f} texts "
          f"over {batches} forward passes; torch threads {a.threads or 'default'}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    out = {"baseline": base, "concurrent": conc, "ratio": ratio, "mean_batch": mean_batch, "loadavg": load}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    res = main()
    sys.exit(1 if res["baseline"]["errors"] or res["concurrent"]["errors"] else 0)
