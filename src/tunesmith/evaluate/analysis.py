"""After training: everything that can be computed from test/validation logits and the baselines.

Kept free of models so `tunesmith report` and other tasks can reuse it; retention (which needs the
encoders) is measured by the caller.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from tunesmith.evaluate.baselines import best_baseline
from tunesmith.evaluate.bootstrap import bootstrap_ci, confusion, paired_bootstrap, scorer
from tunesmith.evaluate.calibration import calibrate, ece, reliability
from tunesmith.evaluate.overfit import overfitting
from tunesmith.evaluate.slices import per_slice

MIN_VAL_ROWS = 30  # below this a fitted temperature follows the noise of a handful of rows


def per_class(task, y_true, y_pred) -> dict:
    kw = {"labels": np.arange(len(task.labels))} if not task.multi_label else {}
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0, **kw)
    return {l: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, l in enumerate(task.labels)}


def analyse(task, y_test, test_logits, *, y_val=None, val_logits=None, baseline_metrics=None,
            baseline_preds=None, history=None, slice_values=None, slice_column=None, seed: int = 0) -> dict:
    """Returns the metrics.json additions: test ci95, per_class, confusion, comparison, calibration, ..."""
    y_test = np.asarray(y_test).astype(int)
    preds = task.decide(task.probabilities(test_logits))
    out = {"ci95": bootstrap_ci(scorer(task), y_test, preds, seed=seed), "per_class": per_class(task, y_test, preds)}
    if not task.multi_label:
        out["confusion"] = confusion(y_test, preds, len(task.labels)).tolist()
    best = best_baseline(baseline_metrics or {}, task.main_metric)
    if best and baseline_preds and best in baseline_preds:
        out["comparison"] = {"baseline": best, **paired_bootstrap(scorer(task), y_test, preds, baseline_preds[best],
                                                                  task.main_metric, seed=seed)}
    n_val = 0 if y_val is None or val_logits is None else len(y_val)
    if n_val >= MIN_VAL_ROWS:
        out["calibration"] = calibrate(task, val_logits, y_val, test_logits, y_test)
    else:
        probs = task.probabilities(test_logits)
        out["calibration"] = {"temperature": 1.0, "fitted_on": None, "test_ece_before": ece(task, probs, y_test),
                              "test_ece_after": ece(task, probs, y_test), "reliability_before": reliability(task, probs, y_test),
                              "note": f"temperature not fitted: {n_val} validation rows (needs {MIN_VAL_ROWS})"}
    if history:
        out["overfitting"] = overfitting(history)
    if slice_values is not None:
        out["slices"] = {"column": slice_column, **per_slice(task, y_test, preds, slice_values, task.main_metric, seed=seed)}
    return out
