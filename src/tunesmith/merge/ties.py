"""TIES (Yadav et al. 2023): trim each task vector to its top-`density` magnitudes, elect a sign per
parameter (sign of the weighted sum), average only the entries that agree with it, add to the base.

Same arithmetic as mergekit's `ties` (magnitude sparsification, "sum" consensus, normalize=true);
--weight sets lambda, the scale of the merged task vector.
"""
from __future__ import annotations

import torch


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    if density >= 1:
        return delta
    k = max(1, int(density * delta.numel()))
    keep = torch.zeros(delta.numel(), dtype=torch.bool)
    keep[delta.abs().flatten().argsort(descending=True)[:k]] = True
    return delta * keep.view_as(delta)


def merge(base: torch.Tensor, tuned: list[torch.Tensor], spec) -> torch.Tensor:
    deltas = torch.stack([trim(t - base, s.density) for t, s in zip(tuned, spec.models)])
    w = torch.tensor([s.weight for s in spec.models], dtype=deltas.dtype).view(-1, *[1] * base.dim())
    wd = deltas * w
    elected = torch.where(wd.sum(0) >= 0, 1.0, -1.0).to(deltas.dtype)
    agree = wd.sign() == elected  # trimmed zeros never agree: they drop out of the mean too
    mixed = (wd * agree).sum(0)
    if spec.normalize is not False:
        divisor = (w * agree).sum(0)
        mixed = mixed / torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return base + spec.lam * mixed


def with_weight(spec, w: float):
    return spec.model_copy(update={"lam": w})
