"""From a table to labelled examples: column detection, task detection, cleaning, splitting."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError

TEXT_NAMES = ["text", "texts", "sentence", "content", "body", "message", "msg", "review", "document",
              "utterance", "query", "question", "comment", "input", "abstract", "description"]
LABEL_NAMES = ["label", "labels", "class", "category", "categories", "intent", "target", "tag",
               "tags", "topic", "sentiment", "y"]
MULTILABEL_SEP = "|"


def find_column(df: pd.DataFrame, given: str | None, candidates: list[str], kind: str, path) -> str:
    cols = list(df.columns)
    if given is not None:
        if given not in cols:
            raise TunesmithError(f"{path}: no column '{given}'; the columns are: {', '.join(cols)}")
        return given
    lower: dict[str, list[str]] = {}
    for c in cols:
        lower.setdefault(c.lower().strip(), []).append(c)
    for name in candidates:
        if name in lower:
            if len(lower[name]) > 1:  # 'Label' and 'label': guessing one would silently drop the other
                twins = " and ".join(f"'{c}'" for c in lower[name])
                raise TunesmithError(f"{path}: columns {twins} differ only in case; pass --{kind}-column with "
                                     f"the one that holds the {kind}")
            return lower[name][0]
    raise TunesmithError(
        f"{path}: cannot tell which column holds the {kind}; the columns are: {', '.join(cols)}; "
        f"pass --{kind}-column NAME")


def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _missing_label(v) -> bool:
    """Empty, null, NaN, or the text 'NaN'/'nan': what pandas and numpy write for a missing value
    (`df.astype(str)` turns NaN into 'nan'). 'NA', 'None', 'null' stay class names: the CSV reader keeps
    them as written (keep_default_na=False), and they are plausible labels."""
    return _is_missing(v) or (isinstance(v, str) and v.strip().lower() == "nan")


def _label_list(v) -> list[str]:
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x).strip() for x in v if not _missing_label(x)]
    return [p.strip() for p in str(v).split(MULTILABEL_SEP) if p.strip() and not _missing_label(p)]


def _label_str(v) -> str:
    # Integers read from JSON/Parquet (or 1.0 from a float column) become "1": one name per class.
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    return str(v).strip()


def detect_task(values: list) -> str:
    """multilabel when labels are lists, or strings joined by '|' in more than a few rows."""
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in values):
        return "multilabel"
    piped = sum(1 for v in values if isinstance(v, str) and MULTILABEL_SEP in v)
    return "multilabel" if piped and piped >= 0.01 * len(values) else "single_label"


def sort_labels(names) -> list[str]:
    names = sorted(set(names))
    try:
        return sorted(names, key=lambda s: float(s))  # integer-like labels in numeric order
    except ValueError:
        return names


@dataclass
class Examples:
    """Texts with labels (a string each, or a list of strings for multilabel) and their file rows."""
    texts: list[str]
    labels: list
    rows: list[int]                     # 0-based data row in the source file
    frame: pd.DataFrame | None = None   # the source rows (for slice columns), aligned with texts
    source: str = ""

    def __len__(self):
        return len(self.texts)

    def subset(self, idx) -> "Examples":
        idx = list(idx)
        return Examples([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                        [self.rows[i] for i in idx],
                        None if self.frame is None else self.frame.iloc[idx].reset_index(drop=True),
                        self.source)


@dataclass
class Loaded:
    examples: Examples
    text_column: str
    label_column: str | None
    task: str
    dropped: dict = field(default_factory=dict)


def load_examples(path, text_column=None, label_column=None, task="auto", need_labels=True) -> Loaded:
    path = Path(path)
    df = read_table(path)
    tcol = find_column(df, text_column, TEXT_NAMES, "text", path)
    lcol = None
    if need_labels or label_column is not None:
        lcol = find_column(df, label_column, LABEL_NAMES, "label", path)
    elif label_column is None:
        lower = {c.lower(): c for c in df.columns}
        lcol = next((lower[n] for n in LABEL_NAMES if n in lower), None)
    texts_raw = df[tcol].tolist()
    keep, dropped = [], {"empty_text": 0, "missing_label": 0}
    for i, t in enumerate(texts_raw):
        if _is_missing(t):
            dropped["empty_text"] += 1
        elif lcol is not None and need_labels and _missing_label(df[lcol].iat[i]):
            dropped["missing_label"] += 1
        else:
            keep.append(i)
    if not keep:
        why = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in dropped.items() if n)
        raise TunesmithError(f"{path}: no rows left after dropping rows with empty text or label ({why}); "
                             f"check the '{tcol}' column")
    if task == "auto" and lcol is not None:
        task = detect_task([df[lcol].iat[i] for i in keep])
    labels = []
    if lcol is not None:
        for i in keep:
            v = df[lcol].iat[i]
            if _missing_label(v):
                labels.append(None)
            elif task == "multilabel":
                labels.append(sorted(set(_label_list(v))))
            else:
                labels.append(_label_str(v))
    else:
        labels = [None] * len(keep)
    ex = Examples([str(texts_raw[i]) for i in keep], labels, keep,
                  df.iloc[keep].reset_index(drop=True), str(path))
    return Loaded(ex, tcol, lcol, task if task != "auto" else "single_label", dropped)


DROP_REASONS = {"empty_text": "empty text", "missing_label": "a missing label (empty, null or NaN)"}


def dropped_lines(dropped: dict, path) -> list[str]:
    """One event line per reason rows of `path` were left out (Loaded.dropped)."""
    return [f"dropped {n} row{'s' if n != 1 else ''} of {path} with {DROP_REASONS.get(why, why.replace('_', ' '))}"
            for why, n in dropped.items() if n]


def label_set(labels, task: str) -> list[str]:
    if task == "multilabel":
        return sort_labels(l for ls in labels for l in ls)
    return sort_labels(labels)


def _held_out(fraction: float, n: int) -> int:
    return max(1, int(round(fraction * n)))  # stratified_split's count: at least one row goes out


def rows_needed(test_fraction: float | None, val_fraction: float) -> int:
    """The fewest rows that leave the held-out test part (None: --test given), validation and train one row each."""
    fractions = [f for f in (test_fraction, val_fraction) if f]
    n = 1
    while True:
        left = n
        for f in fractions:
            left -= _held_out(f, left)
        if left >= 1:
            return n
        n += 1


def check_enough_rows(ex: Examples, test_fraction: float | None, val_fraction: float, path) -> None:
    """Too few rows for the splits: one line with the number needed (sklearn's error names no file)."""
    need = rows_needed(test_fraction, val_fraction)
    if len(ex) >= need:
        return
    parts = " and ".join(p for p, f in (("a test row", test_fraction), ("a validation row", val_fraction)) if f)
    # the first change of flags that makes these rows enough, if any
    ways = [(None, val_fraction, "pass --test FILE"), (test_fraction, 0, "pass --val-fraction 0"),
            (None, 0, "pass --test FILE and --val-fraction 0")]
    way = next((w for t, v, w in ways if (t, v) != (test_fraction, val_fraction) and rows_needed(t, v) <= len(ex)),
               None)
    raise TunesmithError(f"{path}: {len(ex)} row{'s are' if len(ex) != 1 else ' is'} too few to hold out {parts} "
                         f"and keep one to train on; it needs at least {need} rows (a useful model needs dozens "
                         f"per class)" + (f", or {way}" if way else ""))


def stratified_split(ex: Examples, fraction: float, seed: int, task: str) -> tuple[Examples, Examples]:
    """Split off `fraction` of the rows, stratified by label where every class can spare one."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(ex))
    n_out = _held_out(fraction, len(ex))
    strat = None
    if task != "multilabel":
        y = np.array(ex.labels)
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2 and n_out >= len(counts) and len(ex) - n_out >= len(counts):
            strat = y
    keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=strat)
    return ex.subset(sorted(keep)), ex.subset(sorted(out))


def check_known_labels(ex: Examples, known: list[str], task: str, path, hint: str) -> None:
    """A label the model never saw cannot be scored: name the first such row."""
    known = set(known)
    for i, l in enumerate(ex.labels):
        for name in (l if task == "multilabel" else [l]):
            if name not in known:
                raise TunesmithError(f"{path}: row {ex.rows[i]} has label '{name}', {hint}")
