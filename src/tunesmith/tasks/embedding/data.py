"""Embedding data, its form told by the columns:

- pairs: an anchor and its positive (anchor/positive, query/answer, question/document, sentence1/sentence2;
  source/target with --task embedding only, as translation pairs are);
- triplets: the same plus a `negative` column;
- scored pairs: sentence1, sentence2 and a `score` (STS-B's 0-5; any scale: only the order counts);
- labelled texts (text, label), only with --task embedding: texts sharing a label are positives.

Bad input is one line naming the file, the row (1-based, header excluded) and the column.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError

ANCHORS = ("anchor", "query", "question", "sentence1", "source")
POSITIVES = ("positive", "answer", "document", "sentence2", "target")
FORCED_ONLY = {("source", "target")}  # translation-shaped columns: an embedding only when asked for
KINDS = {"pairs": "anchor-positive pairs", "triplets": "triplets with hard negatives",
         "scored": "pairs scored for similarity", "labelled": "texts with labels"}


@dataclass
class Examples:
    """Rows of one split: `a` anchors (or sentence1, or texts), `b` positives (or sentence2), `neg` hard
    negatives, `score` similarity scores, `label` labels; `rows` the 1-based data rows they came from."""
    kind: str
    a: list[str]
    b: list[str] | None = None
    neg: list[str] | None = None
    score: list[float] | None = None
    label: list[str] | None = None
    rows: list[int] = field(default_factory=list)

    def __len__(self):
        return len(self.a)

    def take(self, idx) -> "Examples":
        pick = lambda v: None if v is None else [v[i] for i in idx]  # noqa: E731
        return Examples(self.kind, pick(self.a), pick(self.b), pick(self.neg), pick(self.score), pick(self.label),
                        pick(self.rows))


@dataclass
class Loaded:
    examples: Examples
    path: str
    columns: dict  # role → column name


def find_columns(names, text_column=None, label_column=None, forced: bool = False) -> tuple[str, dict] | None:
    """(kind, {role: column}) for a table's column names, or None when they are no embedding data."""
    low = {str(c).lower(): c for c in names}
    a = next((n for n in ANCHORS if n in low), None)
    b = next((n for n in POSITIVES if n in low), None)
    if a and b and (forced or (a, b) not in FORCED_ONLY):
        cols = {"a": low[a], "b": low[b]}
        if "negative" in low:
            return "triplets", {**cols, "neg": low["negative"]}
        if "score" in low:
            return "scored", {**cols, "score": low["score"]}
        return "pairs", cols
    t, l = text_column or low.get("text"), label_column or low.get("label")
    if forced and t in names and l in names:
        return "labelled", {"a": t, "label": l}
    return None


def detect(path, text_column=None, label_column=None) -> str | None:
    """The kind of embedding data a file holds by its columns alone (--task auto), or None."""
    if text_column or label_column:
        return None  # named text/label columns: the user means a classifier
    try:
        found = find_columns(read_table(path).columns)
    except TunesmithError:
        return None
    return found[0] if found else None


def _text(v, path, i, col) -> str:
    if isinstance(v, float) and np.isnan(v) or v is None or (isinstance(v, str) and not v.strip()):
        raise TunesmithError(f"{path}: row {i + 1}, column '{col}' is empty; every row needs all its texts")
    if not isinstance(v, str):
        raise TunesmithError(f"{path}: row {i + 1}, column '{col}' is {type(v).__name__}, not a text")
    return v.strip()


def read(path, text_column=None, label_column=None) -> Loaded:
    """Every row of an embedding file, checked; --task embedding is implied (labelled texts allowed)."""
    frame = read_table(path)
    found = find_columns(frame.columns, text_column, label_column, forced=True)
    if found is None:
        raise TunesmithError(f"{path}: columns {', '.join(map(str, frame.columns))} are no embedding data; "
                             f"expected anchor/positive (or query/answer, sentence1/sentence2), an optional "
                             f"negative or score, or text/label")
    kind, cols = found
    if not len(frame):
        raise TunesmithError(f"{path}: no rows")
    out = {role: [] for role in cols}
    for i, rec in enumerate(frame[list(cols.values())].itertuples(index=False)):
        for (role, col), v in zip(cols.items(), rec):
            if role == "score":
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    x = float("nan")
                if not np.isfinite(x):
                    raise TunesmithError(f"{path}: row {i + 1}, column '{col}' is {v!r}, not a number")
                out[role].append(x)
            elif role == "label":
                if v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip():
                    raise TunesmithError(f"{path}: row {i + 1}, column '{col}' is empty; give every text a label")
                out[role].append(str(v).strip())
            else:
                out[role].append(_text(v, path, i, col))
    ex = Examples(kind, rows=list(range(1, len(frame) + 1)), **out)
    return Loaded(ex, str(path), cols)


def split(ex: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """(kept, held out). Rows sharing an anchor stay on one side (no query answered from training)."""
    keys = ex.a
    uniq = sorted(set(keys))
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(len(uniq))[:max(1, round(fraction * len(uniq)))].tolist())
    out = {uniq[i] for i in held}
    keep = [i for i, k in enumerate(keys) if k not in out]
    rest = [i for i, k in enumerate(keys) if k in out]
    if not keep:
        raise TunesmithError(f"{len(uniq)} distinct anchors are too few to hold {fraction:.0%} out; add rows or "
                             f"pass --test")
    return ex.take(keep), ex.take(rest)
