"""Hugging Face folder: safetensors weights, config with label names, tokenizer files."""
from __future__ import annotations

import numpy as np


def export(run, out, ref, quantize=None) -> dict:
    from transformers import AutoModelForSequenceClassification

    from tunesmith.evaluate.predict import encode, predict_logits

    ref.model.save_pretrained(out, safe_serialization=True)
    ref.tok.save_pretrained(out)
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()

    def predict(texts) -> np.ndarray:
        import torch

        ids = encode(ref.tok, texts, ref.max_length)
        logits = predict_logits(reloaded, ids, ref.tok.pad_token_id, 16, False, torch.device("cpu"))
        return ref.task.probabilities(logits, ref.temperature)

    return {"files": sorted(p.name for p in out.iterdir()), "predict": predict}
