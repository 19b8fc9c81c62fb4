import numpy as np

from tunesmith.evaluate.bootstrap import bootstrap_ci, paired_bootstrap, scorer
from tunesmith.tasks import get_task

TASK = get_task("single_label", ["a", "b", "c", "d"])


def noisy(n, acc, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    wrong = rng.random(n) > acc
    return y, np.where(wrong, (y + rng.integers(1, 4, n)) % 4, y)


def test_fast_scorer_matches_sklearn_metrics():
    y, p = noisy(500, 0.6, 1)
    fast, ref = scorer(TASK)(y, p), TASK.metrics(y, p)
    assert abs(fast["accuracy"] - ref["accuracy"]) < 1e-12 and abs(fast["macro_f1"] - ref["macro_f1"]) < 1e-12


def test_ci_contains_point_and_shrinks_with_more_rows():
    widths = []
    for n in (200, 3200):
        y, p = noisy(n, 0.8, n)
        point = TASK.metrics(y, p)
        ci = bootstrap_ci(scorer(TASK), y, p)
        for k in ("accuracy", "macro_f1"):
            assert ci[k][0] <= point[k] <= ci[k][1]
        widths.append(ci["macro_f1"][1] - ci["macro_f1"][0])
    assert widths[1] < 0.5 * widths[0]  # 16x the rows: ~1/4 the width


def test_paired_bootstrap_separates_better_model_from_noise():
    y, good = noisy(1000, 0.9, 3)
    _, bad = noisy(1000, 0.6, 3)
    res = paired_bootstrap(scorer(TASK), y, good, bad, "macro_f1")
    assert res["significant"] and res["ci95"][0] > 0 and res["diff"] > 0.2
    same = paired_bootstrap(scorer(TASK), y, good, good, "macro_f1")
    assert not same["significant"] and same["diff"] == 0


def test_multilabel_intervals_use_task_metrics():
    task = get_task("multilabel", ["x", "y", "z"])
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) > 0.5).astype(int)
    p = np.where(rng.random((300, 3)) > 0.8, 1 - y, y)
    ci = bootstrap_ci(scorer(task), y, p, n_boot=200)
    point = task.metrics(y, p)
    p[:, 2] = 0  # a label never predicted: F1 0 in both
    fast, ref = scorer(task)(y, p), task.metrics(y, p)
    assert all(abs(fast[k] - ref[k]) < 1e-12 for k in ("micro_f1", "macro_f1", "subset_accuracy"))
    assert ci["micro_f1"][0] <= point["micro_f1"] <= ci["micro_f1"][1]
