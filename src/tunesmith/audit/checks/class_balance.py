"""Class counts: classes too small to split (< 2 rows) or to learn (< MIN_LEARN), and the imbalance ratio."""
from collections import Counter

from tunesmith.audit.base import AuditData, Finding

NAME = "class_balance"
MIN_LEARN = 10      # below this a class is mostly memorised, and its test score is noise
MAX_RATIO = 10.0    # largest / smallest class; above it macro scores swing on a few rows


def _counts(labels) -> Counter:
    return Counter(l for ls in labels for l in (ls if isinstance(ls, list) else [ls]) if l is not None)


def run(data: AuditData) -> Finding:
    t = data.train
    if t.label_column is None:
        return Finding(NAME, "ok", details={"skipped": "no label column"})
    counts = _counts(t.labels)
    small = {c for c, n in counts.items() if n < MIN_LEARN}
    has = lambda l, c: c in (l if isinstance(l, list) else [l])
    rows = t.file_rows(i for i, l in enumerate(t.labels) if any(has(l, c) for c in small))
    ratio = max(counts.values()) / min(counts.values()) if counts else 0.0
    details = {"classes": len(counts), "counts": dict(counts.most_common()), "imbalance_ratio": round(ratio, 2),
               "too_small_to_split": sorted(c for c, n in counts.items() if n < 2),
               "too_small_to_learn": sorted(small), "min_to_learn": MIN_LEARN}
    errors = details["too_small_to_split"] or len(counts) < 2
    if data.test is not None and data.test.label_column is not None:
        tc = _counts(data.test.labels)
        details["test_counts"] = dict(tc.most_common())
        details["test_only"] = sorted(set(tc) - set(counts))       # cannot be learned, only scored wrong
        details["missing_in_test"] = sorted(set(counts) - set(tc))  # will have no test score
        errors = errors or details["test_only"]
    severity = "error" if errors else "warning" if small or ratio > MAX_RATIO else "ok"
    groups = [t.file_rows(i for i, l in enumerate(t.labels) if has(l, c)) for c in sorted(small)]
    return Finding(NAME, severity, rows, groups, details, fix=f"grow classes to {MIN_LEARN}+ rows, or merge or drop them")
