"""Audit 10,000 rows (BANKING77 intents train.csv) with every check, embedding pass included.

Target: under 60 s on 2 cores. Prints wall and CPU seconds (CPU / cores estimates the wall time on an
idle machine when the machine is shared), the load average, and each part's share; the baseline
measured here is the embedding pass alone, so the ratio says what the checks add on top of it.

    .venv/bin/python benchmarks/bench_audit.py [train.csv]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "intents" / "train.csv"


def main():
    print(cpu_line(), flush=True)  # hosts differ: the ratios below hold for this one
    os.environ["TUNESMITH_CACHE"] = tempfile.mkdtemp(prefix="bench-audit-")  # cold: the embedding pass counts
    from tunesmith.audit import audit

    print(f"data {DATA}, torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average before {os.getloadavg()}")
    wall, cpu = time.perf_counter(), time.process_time()
    report = audit(str(DATA))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    emb = report.timings["embeddings"]
    for f in report.checks:
        print(f"  {f.name:16s} {f.severity:8s} {f.count:6d} rows  {f.seconds:7.1f}s")
    print(f"rows {report.rows}: audit wall {wall:.1f}s, CPU {cpu:.1f}s (CPU/{torch.get_num_threads()} threads = "
          f"{cpu / torch.get_num_threads():.1f}s), embedding pass {emb:.1f}s (baseline), checks without it "
          f"{wall - emb:.1f}s, ratio audit/embedding {wall / max(emb, 1e-9):.2f}")
    print(f"target < 60 s wall on 2 cores: {'met' if wall < 60 else 'NOT met'}; load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
