"""Sequence-to-sequence data: a source text and the target text to produce, one pair a row.

Columns (case-insensitive): source/target, src/tgt, input/output or document/summary; any pair with
--prompt-column (the source) and --response-column (the target). Bad input is one line naming the file,
the row (1-based, header excluded) and the column.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError

PAIRS = (("source", "target"), ("src", "tgt"), ("input", "output"), ("document", "summary"))


@dataclass
class Pairs:
    sources: list[str]
    targets: list[str]
    rows: list[int]  # 1-based data rows of the file

    def __len__(self):
        return len(self.sources)

    def take(self, idx) -> "Pairs":
        return Pairs([self.sources[i] for i in idx], [self.targets[i] for i in idx], [self.rows[i] for i in idx])

    @property
    def texts(self) -> list[str]:  # Task.texts: tune sizes --max-length by the sources
        return self.sources


@dataclass
class Loaded:
    pairs: Pairs
    path: str
    columns: dict  # {"source": column, "target": column}


def find_columns(names, source=None, target=None) -> dict | None:
    """{"source", "target"} column names of a table, or None when no known pair is there."""
    if source or target:
        return {"source": source, "target": target}
    low = {str(c).lower(): c for c in names}
    for s, t in PAIRS:
        if s in low and t in low:
            return {"source": low[s], "target": low[t]}
    return None


def _classifier_columns(names) -> bool:
    """Whether the classification fallback would find a text and a label column in these names."""
    from tunesmith.data.dataset import LABEL_NAMES, TEXT_NAMES

    low = {str(c).lower() for c in names}
    return any(n in low for n in TEXT_NAMES) and any(n in low for n in LABEL_NAMES)


def detect(path, text_column=None, label_column=None) -> dict | None:
    """The pair columns for --task auto, only where no other task's data could be meant: no text/label
    columns named, and no text and label column the classifier would read (document, summary, label)."""
    if text_column or label_column:
        return None
    try:
        names = list(read_table(path).columns)
    except TunesmithError:
        return None
    found = find_columns(names)
    return found if found and not _classifier_columns(names) else None


def _text(v, path, row, col) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        raise TunesmithError(f"{path}: row {row}, column '{col}' is empty; every pair needs a source and a target")
    if not isinstance(v, str):
        v = str(v)
    if not v.strip():
        raise TunesmithError(f"{path}: row {row}, column '{col}' is empty; every pair needs a source and a target")
    return v.strip()


def read(path, source=None, target=None) -> Loaded:
    frame = read_table(path)
    if source is None and target is None:
        cols = find_columns(frame.columns)
        if cols is None:
            raise TunesmithError(f"{path}: no source/target columns; columns are {', '.join(map(str, frame.columns))}"
                                 f"; expected {', '.join('/'.join(p) for p in PAIRS)}, or pass --prompt-column "
                                 f"(source) and --response-column (target)")
    else:
        if not (source and target):
            raise TunesmithError(f"{path}: pass both --prompt-column (source) and --response-column (target)")
        for c in (source, target):
            if c not in frame.columns:
                raise TunesmithError(f"{path}: no column '{c}'; columns are {', '.join(map(str, frame.columns))}")
        cols = {"source": source, "target": target}
    if not len(frame):
        raise TunesmithError(f"{path}: no rows")
    s, t = cols["source"], cols["target"]
    src = [_text(v, path, i + 1, s) for i, v in enumerate(frame[s].tolist())]
    tgt = [_text(v, path, i + 1, t) for i, v in enumerate(frame[t].tolist())]
    return Loaded(Pairs(src, tgt, list(range(1, len(src) + 1))), str(path), cols)


def split(pairs: Pairs, fraction: float, seed: int) -> tuple[Pairs, Pairs]:
    """A random share held out (at least one pair, at least one left); each part keeps the file's order."""
    n = len(pairs)
    k = min(max(int(round(n * fraction)), 1), n - 1) if n > 1 else 0
    out = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    return (pairs.take([i for i in range(n) if i not in out]), pairs.take([i for i in range(n) if i in out]))
