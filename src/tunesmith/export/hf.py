"""Hugging Face folder: safetensors weights, config with label names, tokenizer files."""
from __future__ import annotations

import numpy as np


def export(run, out, ref, quantize=None) -> dict:
    ref.model.save_pretrained(out, safe_serialization=True)
    ref.tok.save_pretrained(out)
    reloaded = ref.predictor.with_model(ref.task.load_inference_model(out)[0])

    def predict(texts) -> np.ndarray:
        return ref.probabilities(texts, reloaded)

    return {"files": sorted(p.name for p in out.iterdir()), "predict": predict}
