"""Measured child processes for the benchmarks: wall time and peak RSS of one command (os.wait4), and a
work folder that keeps each step's result so a rerun only measures what is missing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def popen_rss(args: list[str], env=None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `args`; a failing child ends the benchmark with its stderr's tail."""
    # communicate() reaps the child, so wait4 has to do the waiting itself.
    t = time.perf_counter()
    p = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        sys.exit(f"child failed ({code}): {' '.join(args)}\n{err.decode()[-3000:]}")
    return time.perf_counter() - t, usage.ru_maxrss / 1024


def stepper(work: Path, env: dict):
    """step(name, args, result): run a child unless its result is in `work` already; (wall, rss) kept beside it."""
    def step(name: str, args: list[str], result: Path):
        f = work / f"{name}.timing.json"
        if not (f.exists() and result.exists()):
            wall, rss = popen_rss(args, env)
            f.write_text(json.dumps([wall, rss]))
            print(f"{name}: {wall:.1f}s wall, {rss:.0f} MiB peak", flush=True)
        return json.loads(f.read_text())

    return step
