"""Sentence embeddings of the untouched model, cached on disk.

The audit (near duplicates, label noise), the baselines (zero/few-shot) and retrieval for SFT
prompts all need the same frozen embeddings of the same texts; computing them once and keying the
cache by model, max length and the texts themselves makes every later use free.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from tunesmith.accel import run_device
from tunesmith.config import cache_root
from tunesmith.data.batching import encode
from tunesmith.data.batching import collate, inference_batches
from tunesmith.accel.precision import autocast, use_bf16


def cache_dir() -> Path:
    return cache_root() / "embeddings"


def _key(model_path: str, max_length: int, texts: list[str]) -> str:
    h = hashlib.sha256(f"{model_path}|{max_length}|".encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()[:32]


_MODELS: dict[str, tuple] = {}  # model path → (encoder, tokenizer); loaded once per process


def load_encoder(model_path: str):
    """The untouched encoder on this process's device (its GPU where there is one), and its tokenizer."""
    if model_path not in _MODELS:
        from transformers import AutoModel

        from tunesmith.models.load import load_tokenizer

        enc = AutoModel.from_pretrained(model_path).eval().to(run_device())
        _MODELS[model_path] = (enc, load_tokenizer(model_path))
    return _MODELS[model_path]


@torch.inference_mode()
def embed_with(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 64,
               bf16: bool = False) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states (all-MiniLM's own pooling), in input order. In eval mode
    (put back after): a model fresh from training is still in train mode, and dropout would blur its vectors."""
    device = next(model.parameters()).device
    ids = encode(tokenizer, texts, max_length)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    was = model.training
    model.eval()
    try:
        for batch in inference_batches([len(x) for x in ids], batch_size):
            b = {k: v.to(device) for k, v in collate([ids[i] for i in batch], tokenizer.pad_token_id).items()}
            with torch.inference_mode(), autocast(bf16, device):
                h = model(**b).last_hidden_state.float()
            m = b["attention_mask"].unsqueeze(-1).float()
            v = (h * m).sum(1) / m.sum(1).clamp(min=1)
            out[batch] = torch.nn.functional.normalize(v, dim=-1).cpu().numpy()
    finally:
        model.train(was)
    return out


def embed(model_name: str, texts: list[str], max_length: int = 128, batch_size: int = 64,
          use_cache: bool = True) -> np.ndarray:
    """Embeddings of `texts` with the untouched model `model_name` (built-in name, folder or hub id)."""
    from tunesmith.models.registry import resolve

    path = resolve(model_name)
    texts = [str(t) for t in texts]
    f = cache_dir() / f"{_key(path, max_length, texts)}.npy"
    if use_cache and f.exists():
        return np.load(f)
    model, tok = load_encoder(path)
    # bf16 rounding moves cosine similarities by ~1e-3: fine for audits and baselines.
    vecs = embed_with(model, tok, texts, max_length, batch_size, use_bf16("auto", next(model.parameters()).device))
    if use_cache:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f.stem + ".tmp.npy")
        np.save(tmp, vecs)
        os.replace(tmp, f)
    return vecs
