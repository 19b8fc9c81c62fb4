"""Baselines on the untouched model: what you get without fine-tuning, on the same test rows.

A registry of name → function(BaselineInput) → predictions (class ids, or 0/1 rows for multilabel).
A function raises Skip(reason) when it does not apply; the reason is recorded instead of metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tunesmith.evaluate.bootstrap import bootstrap_ci, scorer

FEW_SHOT_K = 8


class Skip(Exception):
    """This baseline does not apply here; the message says why."""


@dataclass
class BaselineInput:
    task: object                      # tunesmith.tasks task (labels, metrics)
    train_texts: list[str]
    train_y: np.ndarray               # class ids, or 0/1 indicator rows
    test_texts: list[str]
    embed: Callable[[list[str]], np.ndarray]   # frozen, L2-normalised embeddings (cached)
    is_decoder: bool = False
    label_texts: list[str] | None = None       # descriptions per label; default: the label names
    seed: int = 42
    _cache: dict = field(default_factory=dict)

    def emb(self, which: str) -> np.ndarray:
        if which not in self._cache:
            self._cache[which] = self.embed(self.train_texts if which == "train" else self.test_texts)
        return self._cache[which]


def is_decoder(config) -> bool:
    """Causal LMs (GPT-2, Llama, ...) attend left-to-right; their pooled states are no similarity space."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    t = config.model_type
    return t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and t not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _multilabel(inp: BaselineInput) -> bool:
    return inp.task.multi_label


def majority(inp: BaselineInput) -> np.ndarray:
    n = len(inp.test_texts)
    if _multilabel(inp):  # every label that is on in most training rows (usually none)
        return np.tile((inp.train_y.mean(0) > 0.5).astype(int), (n, 1))
    return np.full(n, np.bincount(inp.train_y, minlength=len(inp.task.labels)).argmax())


def zero_shot(inp: BaselineInput) -> np.ndarray:
    if inp.is_decoder:
        raise Skip("decoder model: its mean-pooled states do not compare texts with label names; "
                   "zero-shot by prompting is not run for classification")
    names = inp.label_texts or [l.replace("_", " ").replace("-", " ") for l in inp.task.labels]
    sims = inp.emb("test") @ inp.embed(names).T
    if _multilabel(inp):  # as many labels per text as a training row has on average
        m = max(1, int(round(inp.train_y.sum(1).mean())))
        out = np.zeros_like(sims, dtype=int)
        np.put_along_axis(out, np.argsort(-sims, axis=1)[:, :m], 1, axis=1)
        return out
    return sims.argmax(1)


def _k_per_class(y: np.ndarray, k: int, seed: int, multilabel: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = set()
    for c in range(y.shape[1] if multilabel else int(y.max()) + 1):
        rows = np.flatnonzero(y[:, c] > 0 if multilabel else y == c)
        if len(rows):
            picked.update(rng.choice(rows, size=min(k, len(rows)), replace=False).tolist())
    return np.array(sorted(picked))


def few_shot(k: int | None):
    """Logistic regression on frozen embeddings from k examples per class (None = all training rows)."""
    def run(inp: BaselineInput) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        X, y = inp.emb("train"), inp.train_y
        idx = np.arange(len(y)) if k is None else _k_per_class(y, k, inp.seed, _multilabel(inp))
        # C=10: unit-length embeddings have small norms; the default C=1 underfits them badly.
        clf = LogisticRegression(C=10.0, max_iter=2000)
        if _multilabel(inp):
            keep = (y[idx].min(0) == 0) & (y[idx].max(0) == 1)  # a label always on/off cannot be fitted
            out = np.tile((y[idx].mean(0) > 0.5).astype(int), (len(inp.test_texts), 1))
            if keep.any():
                out[:, keep] = OneVsRestClassifier(clf).fit(X[idx], y[idx][:, keep]).predict(inp.emb("test"))
            return out
        if len(np.unique(y[idx])) < 2:
            raise Skip("fewer than two classes in the training rows")
        return clf.fit(X[idx], y[idx]).predict(inp.emb("test"))
    return run


BASELINES: dict[str, Callable[[BaselineInput], np.ndarray]] = {
    "majority": majority,
    "zero_shot": zero_shot,
    f"few_shot_{FEW_SHOT_K}": few_shot(FEW_SHOT_K),
    "few_shot_all": few_shot(None),
}


def score(task, y_true, preds, seed: int = 0) -> dict:
    """The fine-tuned model's metric keys plus ci95 intervals."""
    m = task.metrics(y_true, preds)
    m["ci95"] = bootstrap_ci(scorer(task), y_true, preds, seed=seed)
    return m


def run_baselines(inp: BaselineInput, test_y: np.ndarray, names=None, on_event=None) -> tuple[dict, dict]:
    """Returns (metrics by name, predictions by name); skipped baselines get {"skipped": reason}."""
    metrics, preds = {}, {}
    for name in names or BASELINES:
        try:
            p = np.asarray(BASELINES[name](inp))
        except Skip as e:
            metrics[name] = {"skipped": str(e)}
            continue
        preds[name] = p
        metrics[name] = score(inp.task, test_y, p, inp.seed)
        if on_event:
            on_event("info", message=f"baseline {name}: macro_f1 {metrics[name]['macro_f1']:.4f}")
    return metrics, preds


def best_baseline(metrics: dict, metric: str = "macro_f1") -> str | None:
    scored = {n: m[metric] for n, m in metrics.items() if isinstance(m.get(metric), float)}
    return max(scored, key=scored.get) if scored else None


def for_run(recipe, task, train, test, model_config, max_length: int, on_event=None,
            label_texts: list[str] | None = None) -> tuple[dict, dict]:
    """Baselines of a training run: the untouched `recipe.model`, its own pooled embeddings (cached)."""
    from tunesmith.models.embed import embed

    inp = BaselineInput(task, list(train.texts), task.targets(train.labels).numpy().astype(int), list(test.texts),
                        lambda texts: embed(recipe.model, texts, max_length), is_decoder(model_config),
                        label_texts, recipe.seed)
    return run_baselines(inp, task.targets(test.labels).numpy().astype(int), on_event=on_event)
