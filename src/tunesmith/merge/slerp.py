"""SLERP between the base (t=0) and one tuned model (t=1), per tensor, as mergekit does it.

Near-parallel tensors (|cos| > 0.9995, common for a short fine-tune of a large matrix) fall back to
linear interpolation, where the arc is numerically a line anyway.
"""
from __future__ import annotations

import torch

DOT_THRESHOLD = 0.9995


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a, b = v0.double(), v1.double()
    na, nb = a.norm(), b.norm()
    dot = ((a / na) * (b / nb)).sum() if na > eps and nb > eps else torch.tensor(1.0, dtype=torch.float64)
    if dot.abs() > DOT_THRESHOLD:
        return ((1 - t) * a + t * b).to(v0.dtype)
    theta = torch.arccos(dot)
    s0 = torch.sin((1 - t) * theta) / torch.sin(theta)
    s1 = torch.sin(t * theta) / torch.sin(theta)
    return (s0 * a + s1 * b).to(v0.dtype)


def merge(base: torch.Tensor, tuned: list[torch.Tensor], spec) -> torch.Tensor:
    return slerp(spec.t, base, tuned[0])


def with_weight(spec, w: float):
    return spec.model_copy(update={"t": w})
