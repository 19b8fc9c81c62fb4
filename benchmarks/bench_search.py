"""/search latency of an embedding run served over a 10k-text corpus (BANKING77 train questions), one client
on loopback (uvicorn, as `tunesmith serve RUN --corpus` runs it): p50/p99 of the whole request, and of the
exact numpy search alone (the query's embedding is the rest).

    .venv/bin/python benchmarks/bench_search.py --run RUN [--data ../shared/data/intents] [--corpus 10000]
                                                [--queries 200] [--k 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import cpu_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="an embedding run folder")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "intents"))
    ap.add_argument("--corpus", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    a = ap.parse_args()
    print(cpu_line(), flush=True)
    import httpx
    import pandas as pd

    from tunesmith.serve.app import Limits, create_app
    from tunesmith.serve.runner import running
    from tunesmith.tasks.embedding.serving import nearest

    texts = pd.read_csv(Path(a.data) / "train.csv")["text"].tolist()[:a.corpus]
    queries = pd.read_csv(Path(a.data) / "test.csv")["text"].tolist()[:a.queries]
    docs = Path(tempfile.mkdtemp(prefix="bench_search_")) / "docs.csv"
    pd.DataFrame({"text": texts}).to_csv(docs, index=False)
    t0 = time.perf_counter()
    app = create_app(a.run, Limits(threads=a.threads), task_options={"corpus": str(docs)})
    start = time.perf_counter() - t0
    lat, found = [], []
    with running(app) as url, httpx.Client(timeout=30) as c:
        for q in queries[:5]:  # warm-up
            c.post(url + "/search", json={"query": q, "k": a.k}).raise_for_status()
        for q in queries:
            t = time.perf_counter()
            r = c.post(url + "/search", json={"query": q, "k": a.k})
            lat.append(time.perf_counter() - t)
            r.raise_for_status()
            found.append(len(r.json()["hits"]))
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(len(texts), 384)).astype(np.float32)
    qv = rng.normal(size=384).astype(np.float32)
    alone = []
    for _ in range(200):
        t = time.perf_counter()
        nearest(qv, corpus, a.k)
        alone.append(time.perf_counter() - t)
    ms, al = np.array(lat) * 1000, np.array(alone) * 1000
    load = os.getloadavg()
    print(f"run {a.run}; corpus {len(texts)} texts embedded at start-up in {start:.1f}s; {len(lat)} queries, k {a.k}, "
          f"one client, server threads {a.threads}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"| /search over {len(texts)} texts | p50 ms | p99 ms |\n|---|---|---|")
    print(f"| whole request (loopback HTTP) | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} |")
    print(f"| exact search alone (numpy, 384 dims) | {np.percentile(al, 50):.2f} | {np.percentile(al, 99):.2f} |")
    assert all(n == a.k for n in found)


if __name__ == "__main__":
    main()
