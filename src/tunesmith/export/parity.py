"""Parity: the exported model must give PyTorch's probabilities on sample rows, within a tolerance."""
from __future__ import annotations

import numpy as np

from tunesmith.errors import TunesmithError

MANIFEST = "tunesmith_export.json"
N_ROWS = 64
# fp32 graphs differ from PyTorch only by kernel rounding (~1e-6): every probability must match to 1e-4.
# int8 weights are a lossy compression by design (max |Δp| ~0.1 on MiniLM with per-channel scales), so
# int8 is held to what a user sees: the predicted label's probability moves by at most 0.03 on
# average and the label itself agrees on at least 90% of rows (flips happen only on near-ties).
TOLERANCE = {"fp32": {"max_abs_prob_diff": 1e-4},
             "int8": {"mean_top_prob_diff": 0.03, "min_label_agreement": 0.90}}
FALLBACK_TEXTS = ["hello", "my card has not arrived yet, what should I do?", "refund please " * 40,
                  "Where is my parcel?", "I forgot my password and now my account is locked", "ok"]


class Reference:
    """The run's PyTorch model through the Predictor, in fp32 on the CPU: what an fp32 graph must give."""

    def __init__(self, run):
        import torch

        from tunesmith.predictor import Predictor

        self.run = run
        self.predictor = Predictor.load(run, device=torch.device("cpu"), bf16=False)
        p = self.predictor
        self.model, self.tok, self.task = p.model, p.tok, p.task
        self.max_length, self.temperature = p.max_length, p.temperature

    def texts(self, n: int) -> list[str]:
        """Sample rows from the run's own test (or train) file; built-in texts if neither is readable."""
        for key in ("test", "train"):
            path = self.run.recipe.get(key)
            try:
                texts = self.task.read_inputs(path, self.run.recipe.get("text_column"))[1] if path else []
            except Exception:
                texts = []
            if texts:
                idx = np.random.default_rng(0).choice(len(texts), min(n, len(texts)), replace=False)
                return [texts[i] for i in sorted(idx)] + FALLBACK_TEXTS[2:3]  # one that must be truncated
        return FALLBACK_TEXTS

    def probabilities(self, texts: list[str], predictor=None) -> np.ndarray:
        """Calibrated probabilities of the run's model, or of `predictor` (the same settings, another model)."""
        return self.task.probabilities((predictor or self.predictor).outputs(texts), self.temperature)


def check(ref: Reference, predict, tolerance: dict, n_rows: int) -> dict:
    texts = ref.texts(n_rows)
    want, got = ref.probabilities(texts), predict(texts)
    agreement = ref.task.agreement(want, got)
    agree = agreement["label_agreement"]
    res = {"n": len(texts), "max_abs_prob_diff": float(np.abs(want - got).max()), **agreement,
           "tolerance": tolerance}
    bad = [f"{k} {res[k]:.3g} > {v:g}" for k, v in tolerance.items() if k != "min_label_agreement"
           and not res[k] <= v]
    if agree < tolerance.get("min_label_agreement", 0):
        bad.append(f"label agreement {agree:.3f} < {tolerance['min_label_agreement']:g}")
    if bad:
        raise TunesmithError(f"export parity check failed on {len(texts)} sample rows: {'; '.join(bad)} "
                             f"(exported model vs PyTorch); the export was removed")
    return res
