"""Rows whose label looks wrong: confident learning (cleanlab) on out-of-fold probabilities of a
logistic regression on the model's frozen embeddings."""
import warnings

import numpy as np

from tunesmith.audit.base import AuditData, Finding

NAME = "label_noise"
FOLDS = 3
MIN_ROWS = FOLDS    # a class needs a row in every fold to be judged; smaller ones go to class_balance
WEAK = 0.7          # out-of-fold accuracy below which the ranking is mostly the classifier's own errors
COST = 10_000 * 64 * 77  # rows x dims x classes of the LR solve; above it, PCA shrinks the dims (speed)


def _features(x: np.ndarray, classes: int) -> np.ndarray:
    dims = int(np.clip(COST // (len(x) * classes), 32, x.shape[1]))
    if dims >= x.shape[1]:
        return x
    from sklearn.decomposition import PCA  # unsupervised: fitting it on all rows leaks no labels

    return PCA(dims, random_state=0).fit_transform(x)


def _oof(x, y, multilabel: bool) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    lr = LogisticRegression(C=10.0, max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: 100 iterations rank the rows well enough
        if multilabel:
            from sklearn.multiclass import OneVsRestClassifier

            return cross_val_predict(OneVsRestClassifier(lr), x, y, cv=KFold(FOLDS, shuffle=True, random_state=0),
                                     method="predict_proba")
        return cross_val_predict(lr, x, y, cv=StratifiedKFold(FOLDS, shuffle=True, random_state=0),
                                 method="predict_proba")


def run(data: AuditData) -> Finding:
    from cleanlab.filter import find_label_issues

    t = data.train
    if t.label_column is None:
        return Finding(NAME, "ok", details={"skipped": "no label column"})
    multi = any(isinstance(ls, (list, tuple)) for ls in t.labels)  # label sets per row (pipe-separated)
    names = sorted({l for ls in t.labels for l in (ls if multi else [ls])})
    counts = {c: sum(c in (ls if multi else [ls]) for ls in t.labels) for c in names}
    classes = [c for c in names if counts[c] >= MIN_ROWS]
    idx = {c: k for k, c in enumerate(classes)}
    keep = [i for i, ls in enumerate(t.labels) if all(l in idx for l in (ls if multi else [ls]))]
    if len(classes) < 2 or len(keep) < 10 * FOLDS:
        return Finding(NAME, "ok", details={"skipped": "too few rows or classes to cross-validate"})
    x = _features(data.embeddings(t)[keep], len(classes))
    if multi:
        y = np.zeros((len(keep), len(classes)), dtype=int)
        for r, i in enumerate(keep):
            y[r, [idx[l] for l in t.labels[i]]] = 1
        probs = _oof(x, y, True)
        given = [list(np.flatnonzero(row)) for row in y]
        issues = find_label_issues(given, probs, multi_label=True, return_indices_ranked_by="self_confidence")
    else:
        y = np.array([idx[t.labels[i]] for i in keep])
        probs = _oof(x, y, False)
        issues = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    ranked = []
    for k in issues.tolist():
        i = keep[k]
        if multi:
            on = np.flatnonzero(probs[k] >= 0.5)
            suggested = "|".join(classes[j] for j in (on if len(on) else [int(probs[k].argmax())]))
            conf = float(np.min([probs[k][idx[l]] for l in t.labels[i]] or [1.0]))
            given_s = "|".join(t.labels[i])
        else:
            suggested, conf, given_s = classes[int(probs[k].argmax())], float(probs[k][y[k]]), t.labels[i]
        ranked.append({"row": t.rows[i], "given": given_s, "suggested": suggested,
                       "given_probability": round(conf, 4), "suggested_probability": round(float(probs[k].max()), 4)})
    acc = float((probs.argmax(1) == y).mean()) if not multi else None
    note = {"note": f"the frozen-embedding classifier is weak here (accuracy {acc:.2f}): many flags are its own "
                    f"mistakes; trust the top of the ranking most"} if acc is not None and acc < WEAK else {}
    return Finding(NAME, "warning" if ranked else "ok", sorted(r["row"] for r in ranked),
                   details={"ranked": ranked, "judged_rows": len(keep), "folds": FOLDS, "features": x.shape[1],
                            "classifier": f"logistic regression on {data.model} embeddings, cleanlab confident learning",
                            "out_of_fold_accuracy": None if acc is None else round(acc, 4), **note},
                   fix="review details.ranked; relabel where the suggestion is right")
