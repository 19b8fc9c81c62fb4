"""Single-label classification (binary and multiclass)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from tunesmith.tasks.classification.inference import ClassifierInference
from tunesmith.tasks.classification.task import Classification


class SingleLabel(ClassifierInference, Classification):
    name = "single_label"
    main_metric = "macro_f1"
    multi_label = False
    summary_columns = ("accuracy", "macro_f1")  # the test metrics tables show

    def targets(self, labels) -> torch.Tensor:
        return torch.tensor([self.index[l] for l in labels], dtype=torch.long)

    def loss(self, logits, targets, label_smoothing=0.0):
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)

    def probabilities(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        z = logits / temperature
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return probs.argmax(axis=1)

    def metrics(self, y_true, y_pred) -> dict:
        """y_true/y_pred: integer class ids."""
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        return {"accuracy": float(accuracy_score(y_true, y_pred)),
                "macro_f1": float(f1_score(y_true, y_pred, average="macro",
                                           labels=np.arange(len(self.labels)), zero_division=0)),
                "n": int(len(y_true))}
