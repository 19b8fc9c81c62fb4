"""Linear: weighted average of the base and the tuned models (WiSE-FT, model soups).

--weight w puts (1 - w) on the base and w, shared equally, on the tuned models; w=1 with one
tuned model gives it back unchanged. mergekit: `normalize` (default true) divides by the weight sum.
"""
from __future__ import annotations

import torch


def merge(base: torch.Tensor, tuned: list[torch.Tensor], spec) -> torch.Tensor:
    weights = [spec.base_weight] + [s.weight for s in spec.models]
    out = sum(w * t for w, t in zip(weights, [base, *tuned]))
    total = sum(weights)
    return out / total if spec.normalize is not False and abs(total) > 1e-8 else out


def with_weight(spec, w: float):
    n = len(spec.models)
    return spec.model_copy(update={"base_weight": 1.0 - w,
                                   "models": [s.model_copy(update={"weight": w / n}) for s in spec.models]})
