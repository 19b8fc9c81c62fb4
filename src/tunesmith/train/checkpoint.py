"""Checkpoints for resume: only what training changes (trainable tensors, optimizer, schedule, RNG)."""
from __future__ import annotations

import os
from pathlib import Path

import torch


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
    torch.save(obj, tmp)
    os.replace(tmp, path)
