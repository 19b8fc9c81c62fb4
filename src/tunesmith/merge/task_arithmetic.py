"""Task arithmetic (Ilharco et al. 2023): base + lambda * sum(weight_i * (tuned_i - base)).

--weight sets lambda, so w=0 is the base and w=1 adds every task vector in full.
"""
from __future__ import annotations

import torch


def merge(base: torch.Tensor, tuned: list[torch.Tensor], spec) -> torch.Tensor:
    weights = [s.weight for s in spec.models]
    delta = sum(w * (t - base) for w, t in zip(weights, tuned))
    if spec.normalize and abs(sum(weights)) > 1e-8:
        delta = delta / sum(weights)
    return base + spec.lam * delta


def with_weight(spec, w: float):
    return spec.model_copy(update={"lam": w})
