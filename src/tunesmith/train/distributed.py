"""Data parallelism (DDP) through Hugging Face Accelerate: one process per GPU, or gloo on CPU.

`tunesmith train ... --nproc N` re-runs the same command under torch.distributed.run (what
`accelerate launch` uses for multi-GPU; `accelerate launch -m tunesmith.cli train ...` and `torchrun`
work too, also across nodes). Each process takes its share of every global batch; gradients are
averaged by DDP with the loss weighted so the update equals one process on the whole batch.
Only rank 0 writes the run folder and the feature cache files are written atomically per process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from tunesmith.errors import TunesmithError

_ACC = None


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def accelerator():
    """The process's Accelerator (joins the process group), or None when running alone."""
    global _ACC
    if world()[1] <= 1:
        return None
    if _ACC is None:
        from accelerate import Accelerator

        _ACC = Accelerator(cpu=not torch.cuda.is_available())
    return _ACC


def all_sum(values: list[float]) -> list[float]:
    """Sum of `values` over all processes (identity when alone)."""
    if world()[1] <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=accelerator().device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def launch(nproc: int, argv: list[str] | None = None, nnodes: int = 1, node_rank: int = 0,
           master_addr: str | None = None, master_port: int | None = None) -> int:
    """Run `tunesmith <argv>` in `nproc` processes on this machine, as node `node_rank` of `nnodes` when
    several (every node runs the same command; node 0 at `master_addr`:`master_port` holds the rendezvous
    and its rank 0 writes the run folder); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if nnodes > 1:
        if not master_addr or not master_port:
            raise TunesmithError(f"--nnodes {nnodes}: give every node the same --master-addr (node 0's address) "
                                 f"and --master-port")
        where = ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--master-addr", master_addr,
                 "--master-port", str(master_port)]
    else:
        where = ["--standalone", "--nnodes", "1"]
    cmd = [sys.executable, "-m", "tunesmith.train.torchrun", *where, "--nproc-per-node", str(nproc), "-m",
           "tunesmith.cli"]
    # The user's arguments travel in the environment: torch.distributed.run's own parser would
    # otherwise read --nproc, --log... as abbreviations of its options.
    env = {**os.environ, "TUNESMITH_ARGV": json.dumps(argv)}
    if not torch.cuda.is_available():
        # Share the cores instead of every process grabbing all of them (oversubscription thrashes).
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)
