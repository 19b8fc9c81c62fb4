"""Checkpoints for resume: only what training changes (trainable tensors, optimizer, schedule, RNG)."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
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


def plain(x):
    """numpy scalars and arrays as Python numbers and lists: what torch's weights_only loader accepts."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(plain(v) for v in x)
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    return x


def save_resume(path: Path, model, opt, sched, state: dict) -> None:
    """Everything an exact resume needs, shared by the classification and SFT loops. Tensors, numbers,
    strings, lists and dicts only, so that it loads with weights_only=True (torch's RNG state is a tensor)."""
    atomic_save({"trainable": trainable_state(model), "optimizer": opt.state_dict(),
                 "scheduler": plain(sched.state_dict()), "rng": torch.get_rng_state(), "state": plain(state)},
                path)


def load_data(path: Path):
    """torch.load of data only (weights_only=True: a crafted pickle is refused, never run); a file that does not
    load is one line naming it."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a bad file
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise TunesmithError(f"{path}: not a readable tunesmith checkpoint ({why}); delete the checkpoint/ folder "
                             f"to train from the start, or rerun with --overwrite") from None


def load_weights(path: Path) -> dict:
    """best.pt: trainable tensors by name."""
    state = load_data(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TunesmithError(f"{path}: not a tunesmith checkpoint of weights; delete it or rerun with --overwrite")
    return state


def load_resume(path: Path, model, opt, sched) -> dict:
    """Restores weights, optimizer, schedule and RNG in place; returns the loop's saved state."""
    ck = load_data(path)
    if isinstance(ck, dict) and ck.get("shards"):  # its weights are in the per-process shard files
        raise TunesmithError(f"{path}: written by a sharded run; resume it with the same --nproc "
                             f"{ck['shards'].get('world')} --shard")
    try:
        load_trainable(model, ck["trainable"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        return ck["state"]
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # another run's file, or not a resume state
        why = (str(e).splitlines() or [""])[0][:120]
        raise TunesmithError(f"{path}: does not fit this run ({type(e).__name__}: {why}); delete the checkpoint/ "
                             f"folder to train from the start, or rerun with --overwrite") from None
