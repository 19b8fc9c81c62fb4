"""Batched inference: inference mode, length grouping, bf16 where fast. Results in input order."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from tunesmith import accel
from tunesmith.data.batching import collate, inference_batches
from tunesmith.train.feature_cache import replay_or_null
from tunesmith.accel.precision import autocast


@torch.inference_mode()
def predict_logits(model, ids: list[list[int]], pad_id: int, batch_size: int = 64, bf16: bool = False,
                   device: torch.device | None = None, padding_side: str = "right", replay=None) -> np.ndarray:
    """`replay`: a feature_cache.Replay over these same ids (frozen layers' outputs cached)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = None
    if replay is not None:
        replay.padding_side = padding_side
    direct = replay is not None and replay.direct
    # CPU engine: weights cast to bf16 once, activations bf16 throughout (accel/master_weights.py), kept
    # for the next call unless training goes on. Not over replayed frozen layers (cached fp32 features).
    engine = accel.for_device(device, bf16)
    bf16_whole = engine.inference(model, keep=not was_training) if replay is None else contextlib.nullcontext()
    with replay_or_null(replay), bf16_whole:
        for batch in inference_batches([len(x) for x in ids], batch_size):
            with autocast(bf16 and not direct, device):  # the direct head runs in fp32 (train/loop.py)
                if direct:
                    logits = replay.logits(torch.tensor(batch))
                else:
                    if replay is not None:
                        replay.select(batch)
                    b = {k: v.to(device) for k, v in collate([ids[i] for i in batch], pad_id, padding_side).items()}
                    logits = model(**b).logits
            logits = logits.float().cpu().numpy()
            if out is None:
                out = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
            out[batch] = logits
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)
