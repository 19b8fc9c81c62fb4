"""Checkpoints for resume: only what training changes (trainable tensors, optimizer, schedule, RNG)."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch

from tunesmith.errors import TunesmithError

LOW_SPACE = 64 << 20  # bytes free on the disk below which a failed write is taken for a full disk


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, state: dict) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def atomic_save(obj, path: Path) -> None:
    # Written beside and renamed: a crash mid-write never leaves a half checkpoint behind.
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
    except (OSError, RuntimeError) as e:
        # torch's writer reports a full disk as "unexpected pos" or an iostream error, not as ENOSPC
        free = shutil.disk_usage(path.parent).free
        tmp.unlink(missing_ok=True)
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or free < LOW_SPACE:
            raise TunesmithError(f"no space left on the disk to write {path} ({free >> 20} MB free): free some "
                                 "space and run the same command again (training continues from its last "
                                 "checkpoint with --resume)") from e
        raise
    os.replace(tmp, path)


def save_resume(path: Path, model, opt, sched, state: dict) -> None:
    """Everything an exact resume needs, shared by the classification and SFT loops."""
    atomic_save({"trainable": trainable_state(model), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "state": state}, path)


def load_resume(path: Path, model, opt, sched) -> dict:
    """Restores weights, optimizer, schedule and RNG in place; returns the loop's saved state."""
    ck = torch.load(path, weights_only=False)
    load_trainable(model, ck["trainable"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng"])
    return ck["state"]
