"""Metrics per slice of the test set (a region, product, demographic column) and the best-worst gap."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.bootstrap import bootstrap_ci, scorer

MAX_SLICES = 30


def slice_values(frame: pd.DataFrame | None, column: str, source: str) -> np.ndarray:
    if frame is None or column not in frame.columns:
        cols = ", ".join(map(str, frame.columns)) if frame is not None else "none"
        raise TunesmithError(f"{source}: no column '{column}' for --slice-column; the columns are: {cols}")
    return frame[column].astype(str).fillna("(missing)").to_numpy()


def per_slice(task, y_true, y_pred, values, metric: str = "macro_f1", min_rows: int = 1, seed: int = 0) -> dict:
    """{"column", "metric", "slices": {value: metrics+ci95}, "gap", "best", "worst"} over slices with rows."""
    y_true, y_pred, values = np.asarray(y_true), np.asarray(y_pred), np.asarray(values)
    out = {}
    counts = pd.Series(values).value_counts()
    keep = counts[counts >= min_rows].index[:MAX_SLICES]   # the largest slices: an id column has thousands
    for v in sorted(keep, key=str):
        m = values == v
        s = task.metrics(y_true[m], y_pred[m])
        s["ci95"] = bootstrap_ci(scorer(task), y_true[m], y_pred[m], n_boot=500, seed=seed)
        out[v] = s
    res = {"metric": metric, "slices": out, "not_shown": int(len(counts) - len(out))}
    if len(out) >= 2:
        best = max(out, key=lambda k: out[k][metric])
        worst = min(out, key=lambda k: out[k][metric])
        res.update(best=best, worst=worst, gap=float(out[best][metric] - out[worst][metric]))
    return res
