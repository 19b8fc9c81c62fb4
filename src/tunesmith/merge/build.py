"""Combine state dicts tensor by tensor with a registered method."""
from __future__ import annotations

import torch

from tunesmith.merge.registry import METHODS


def merge_state(spec, base_sd: dict, tuned_sds: list[dict], lacks: set[str]) -> dict[str, torch.Tensor]:
    method = METHODS[spec.method]
    out = {}
    for k, b in base_sd.items():
        ts = [sd[k] for sd in tuned_sds]
        if k in lacks:
            # The base has no such head: take it from the tuned models (their mean when there are several).
            out[k] = ts[0].clone() if len(ts) == 1 else torch.stack([t.float() for t in ts]).mean(0).to(ts[0].dtype)
        elif not b.is_floating_point():
            out[k] = b.clone()  # position ids and other integer buffers are not weights
        else:
            out[k] = method.merge(b.float(), [t.float() for t in ts], spec).to(b.dtype)
    return out
