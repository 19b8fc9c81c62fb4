"""Length-grouped batching with dynamic padding.

Why by hand: HF's group_by_length sampler pads to the longest text of a random mega-batch too, but
we also need the order to be a pure function of (seed, epoch) so an interrupted run resumes onto
exactly the same batches, and prediction needs the inverse permutation.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

MEGA = 64  # batches per sorted window: large enough to cut padding, small enough to stay random


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Every index exactly once: shuffle, sort windows of MEGA batches by length, shuffle batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    window = batch_size * MEGA
    batches = []
    for s in range(0, len(perm), window):
        chunk = sorted(perm[s:s + window], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def inference_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Sorted by length (longest first, so memory peaks at once); callers scatter results back."""
    idx = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [idx[b:b + batch_size] for b in range(0, len(idx), batch_size)]


def collate(ids: list[list[int]], pad_id: int, padding_side: str = "right") -> dict:
    # Filled through a boolean mask in numpy: a Python loop of per-row tensor copies cost ~1 ms per batch.
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    n = int(lens.max())
    pos = np.arange(n)
    mask = pos >= (n - lens)[:, None] if padding_side == "left" else pos < lens[:, None]
    input_ids = np.full((len(ids), n), pad_id, dtype=np.int64)
    input_ids[mask] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lens.sum()))
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
