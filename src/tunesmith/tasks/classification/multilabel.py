"""Multilabel classification: independent sigmoid per label, threshold 0.5."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from tunesmith.tasks.classification.inference import ClassifierInference
from tunesmith.tasks.classification.task import Classification


class MultiLabel(ClassifierInference, Classification):
    name = "multilabel"
    main_metric = "macro_f1"
    multi_label = True
    summary_columns = ("micro_f1", "macro_f1", "subset_accuracy")  # the test metrics tables show
    threshold = 0.5

    @classmethod
    def detect(cls, recipe) -> str | None:
        return None  # --task auto: single_label's prepare() reads the label column and decides

    def targets(self, labels) -> torch.Tensor:
        y = torch.zeros(len(labels), len(self.labels))
        for r, ls in enumerate(labels):
            for l in ls:
                y[r, self.index[l]] = 1.0
        return y

    def loss(self, logits, targets, label_smoothing=0.0):
        if label_smoothing:
            targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), targets)

    def probabilities(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-logits / temperature))

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return (probs >= self.threshold).astype(int)

    def metrics(self, y_true, y_pred) -> dict:
        """y_true/y_pred: 0/1 indicator matrices."""
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        return {"micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
                "subset_accuracy": float((y_true == y_pred).all(axis=1).mean()),
                "accuracy": float((y_true == y_pred).all(axis=1).mean()),
                "n": int(len(y_true))}
