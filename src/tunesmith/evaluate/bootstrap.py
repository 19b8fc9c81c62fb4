"""Bootstrap intervals: how much a metric would move on another test set of the same size.

Resampling test rows 1000 times needs a metric that costs microseconds: for single-label tasks the
metrics come from a confusion matrix built with one bincount (sklearn's f1_score is ~100x slower).
"""
from __future__ import annotations

import numpy as np

N_BOOT = 1000


def confusion(y_true, y_pred, k: int) -> np.ndarray:
    return np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)


def single_label_scores(cm: np.ndarray) -> dict:
    """accuracy and macro-F1 (every class counts, F1 = 0 where a class has no support and no predictions)."""
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"accuracy": float(tp.sum() / max(cm.sum(), 1)), "macro_f1": float(f1.mean())}


def multilabel_scores(yt: np.ndarray, yp: np.ndarray) -> dict:
    """micro/macro-F1 and subset accuracy from per-label counts (same definitions as the task's sklearn ones)."""
    tp = (yt * yp).sum(0).astype(float)
    wrong = (yt != yp).sum(0)          # fp + fn per label
    denom = 2 * tp + wrong
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    exact = float((yt == yp).all(axis=1).mean())
    return {"micro_f1": float(2 * tp.sum() / max(denom.sum(), 1)), "macro_f1": float(f1.mean()),
            "subset_accuracy": exact, "accuracy": exact}


def scorer(task):
    """(y_true, y_pred) → dict of float metrics, fast where it matters."""
    multi = getattr(task, "multi_label", None)  # None: not a classifier, its own metrics
    if multi is False:
        k = len(task.labels)
        return lambda yt, yp: single_label_scores(confusion(yt, yp, k))
    if multi:
        return lambda yt, yp: multilabel_scores(np.asarray(yt, dtype=int), np.asarray(yp, dtype=int))
    return lambda yt, yp: {k: v for k, v in task.metrics(yt, yp).items() if k != "n"}


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(score, y_true, y_pred, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """{metric: [low, high]} percentile intervals over resampled rows."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return {}
    samples = [score(y_true[i], y_pred[i]) for i in _draws(len(y_true), n_boot, seed)]
    a = (1 - level) / 2
    return {k: [float(np.quantile([s[k] for s in samples], a)), float(np.quantile([s[k] for s in samples], 1 - a))]
            for k in samples[0]}


def paired_bootstrap(score, y_true, pred_a, pred_b, metric: str, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Difference a − b in `metric` on the same resampled rows: the noise both models share cancels."""
    y_true, pred_a, pred_b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    diffs = np.array([score(y_true[i], pred_a[i])[metric] - score(y_true[i], pred_b[i])[metric]
                      for i in _draws(len(y_true), n_boot, seed)])
    point = score(y_true, pred_a)[metric] - score(y_true, pred_b)[metric]
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"metric": metric, "diff": float(point), "ci95": [float(lo), float(hi)],
            "p_not_better": float((diffs <= 0).mean()), "significant": bool(lo > 0)}


def paired_mean_diff(a, b, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean of per-item scores a − b (same items, e.g. the same prompts), with its 95% interval."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0:
        return {"diff": 0.0, "ci95": [0.0, 0.0], "significant": False}
    means = d[_draws(len(d), n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)], "significant": bool(lo > 0 or hi < 0)}
