"""Does reading more of each text help? A probe on the untouched model's vectors at several max lengths,
cross-validated over every row of a labelled set (train and test files together, the same stratified folds
at each length), with a paired bootstrap of each length's accuracy against the first.

Why cross-validation: topics' 531 test rows give a 95% interval of about 4 points, wider than the effect
asked about; 10 folds over all 2,657 rows score every row once. Used for issue #15's "a max length that
follows the texts' lengths" (docs/performance.md, "Measured again with more rows").

    .venv/bin/python benchmarks/bench_max_length.py [--data ../shared/data/topics] [--lengths 128,256,512]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "topics"))
    ap.add_argument("--lengths", default="128,256,512")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--folds", type=int, default=10)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    from tunesmith.models.embed import embed

    print(cpu_line())
    files = [Path(a.data) / f for f in ("train.csv", "test.csv") if (Path(a.data) / f).exists()]
    if not files or files[0].name != "train.csv":
        sys.exit(f"{a.data}: no train.csv")
    frames = [pd.read_csv(f) for f in files]
    texts = [str(t) for f in frames for t in f["text"]]
    y = np.array([str(v) for f in frames for v in f["label"]])
    lengths = [int(x) for x in a.lengths.split(",")]
    folds = list(StratifiedKFold(a.folds, shuffle=True, random_state=0).split(texts, y))
    right = {}
    print(f"{len(texts)} rows of {', '.join(map(str, files))}, {len(set(y))} classes, {a.folds} folds, model {a.model}\n")
    print("| max length | accuracy | macro-F1 | embedding s (about 0 when cached) |\n|---|---|---|---|")
    for n in lengths:
        t = time.perf_counter()
        # per file, as a run's audit and baselines embed them: the same cache entries (a rerun only scores)
        X = np.vstack([embed(a.model, [str(t) for t in f["text"]], n) for f in frames])
        took = time.perf_counter() - t
        pred = np.empty(len(y), dtype=object)
        for tr, te in folds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence warnings: the probe is the baselines' (C = 10)
                pred[te] = LogisticRegression(C=10.0, max_iter=2000).fit(X[tr], y[tr]).predict(X[te])
        right[n] = pred == y
        print(f"| {n} | {right[n].mean():.4f} | {f1_score(y, pred, average='macro'):.4f} | {took:.0f} |", flush=True)
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, len(y), len(y)) for _ in range(2000)]
    for n in lengths[1:]:
        d = right[n].astype(float) - right[lengths[0]]
        lo, hi = np.percentile([d[i].mean() for i in draws], [2.5, 97.5])
        print(f"{n} against {lengths[0]}: accuracy {100 * d.mean():+.1f} points, paired 95% CI {100 * lo:+.1f} to "
              f"{100 * hi:+.1f}")


if __name__ == "__main__":
    main()
