"""Parity: the exported model must give PyTorch's probabilities on sample rows, within a tolerance."""
from __future__ import annotations

import numpy as np

from tunesmith.errors import TunesmithError

MANIFEST = "tunesmith_export.json"
N_ROWS = 64
# Max |Δprobability| allowed. fp32 graphs differ from PyTorch only by kernel rounding (~1e-6);
# int8 weights move scores by a few hundredths, so int8 gets a looser bound.
TOLERANCE = {"fp32": 1e-4, "int8": 0.05}
FALLBACK_TEXTS = ["hello", "my card has not arrived yet, what should I do?", "refund please " * 40,
                  "Where is my parcel?", "I forgot my password and now my account is locked", "ok"]


class Reference:
    """The run's PyTorch model with the same preprocessing the API uses (api._load_for_inference)."""

    def __init__(self, run):
        from tunesmith.api import _load_for_inference

        self.run = run
        self.model, self.tok, self.task = _load_for_inference(run)
        self.model.eval()
        self.max_length = int(run.recipe.get("max_length") or 128)
        self.temperature = float(run.metrics.get("calibration", {}).get("temperature", 1.0))

    def texts(self, n: int) -> list[str]:
        """Sample rows from the run's own test (or train) file; built-in texts if neither is readable."""
        from tunesmith.data.dataset import load_examples

        for key in ("test", "train"):
            path = self.run.recipe.get(key)
            try:
                texts = load_examples(path, self.run.recipe.get("text_column"), None, self.task.name,
                                      need_labels=False).examples.texts if path else []
            except Exception:
                texts = []
            if texts:
                idx = np.random.default_rng(0).choice(len(texts), min(n, len(texts)), replace=False)
                return [texts[i] for i in sorted(idx)] + FALLBACK_TEXTS[2:3]  # one that must be truncated
        return FALLBACK_TEXTS

    def probabilities(self, texts: list[str]) -> np.ndarray:
        import torch

        from tunesmith.evaluate.predict import encode, predict_logits

        ids = encode(self.tok, texts, self.max_length)
        logits = predict_logits(self.model, ids, self.tok.pad_token_id, 16, False, torch.device("cpu"))
        return self.task.probabilities(logits, self.temperature)


def check(ref: Reference, predict, tolerance: float, n_rows: int) -> dict:
    texts = ref.texts(n_rows)
    want, got = ref.probabilities(texts), predict(texts)
    diff = float(np.abs(want - got).max())
    agree = float((ref.task.decide(want) == ref.task.decide(got)).all(axis=-1).mean()
                  if want.ndim == 2 and ref.task.name == "multilabel" else (want.argmax(1) == got.argmax(1)).mean())
    res = {"n": len(texts), "max_abs_prob_diff": diff, "tolerance": tolerance, "label_agreement": agree}
    if not np.isfinite(diff) or diff > tolerance:
        raise TunesmithError(f"export parity check failed: the exported model's probabilities differ from PyTorch's "
                             f"by up to {diff:.3g} on {len(texts)} sample rows (tolerance {tolerance:g}); "
                             f"the export was removed")
    return res
