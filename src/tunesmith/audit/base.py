"""What every check sees (AuditData) and returns (Finding).

Row numbers everywhere are 0-based data rows of the file, header excluded, in the file's order.
Checks share the expensive parts (normalised texts, embeddings, near-duplicate pairs) through
cached properties here, so each is computed once per audit however many checks use it.
"""
from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

SEVERITIES = ("ok", "warning", "error")
NEAR_THRESHOLD = 0.95  # cosine of frozen embeddings; above it, texts differ by a word or two


@dataclass
class Finding:
    name: str
    severity: str                      # ok | warning | error
    rows: list[int] = field(default_factory=list)   # flagged rows, file order; count == len(rows)
    groups: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
    fix: str = ""
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict:
        return {"name": self.name, "severity": self.severity, "count": self.count, "rows": self.rows,
                "groups": self.groups, "details": self.details, "fix": self.fix,
                "seconds": round(self.seconds, 3)}


@dataclass
class Table:
    """One input file: the raw frame (for empty rows) and the rows training would use."""
    path: str
    frame: pd.DataFrame
    text_column: str
    label_column: str | None
    rows: list[int]      # file rows with a text (and a label, when there is a label column)
    texts: list[str]     # aligned with rows
    labels: list         # aligned with rows: str, or a sorted list for multilabel, or None

    def file_rows(self, positions) -> list[int]:
        return sorted(self.rows[i] for i in positions)


class _DropPunct(dict):
    """str.translate table filled on first sight of each character (a full table costs seconds)."""

    def __missing__(self, code: int):
        self[code] = None if unicodedata.category(chr(code)).startswith("P") else code
        return self[code]


_PUNCT = _DropPunct()
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case, white space and punctuation do not make a different text."""
    t = unicodedata.normalize("NFKC", text).casefold().translate(_PUNCT)
    return _SPACE.sub(" ", t).strip()


def label_key(label) -> str:
    return "|".join(label) if isinstance(label, list) else str(label)


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def similar_pairs(a: np.ndarray, b: np.ndarray | None, threshold: float, block: int = 2048):
    """(i, j) with cosine(a_i, b_j) >= threshold; within one set (b None) only i < j.

    Blocked so 10,000 x 10,000 never sits in memory at once (400 MB as float32).
    """
    same = b is None
    b = a if same else b
    out_i, out_j = [], []
    for s in range(0, len(a), block):
        sims = a[s:s + block] @ b.T
        if same:
            sims[np.tril_indices(sims.shape[0], k=s, m=sims.shape[1])] = -1  # j <= i
        i, j = np.nonzero(sims >= threshold)
        out_i.append(i + s)
        out_j.append(j)
    if not out_i:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(out_i), np.concatenate(out_j)


@dataclass
class AuditData:
    train: Table
    test: Table | None
    validation: Table | None
    task: str                # single_label | multilabel
    model: str
    max_length: int
    model_limit: int
    near_threshold: float = NEAR_THRESHOLD
    embed_seconds: float = 0.0
    _cache: dict = field(default_factory=dict, repr=False)

    @cached_property
    def tokenizer(self):
        from tunesmith.models.load import load_tokenizer
        from tunesmith.models.registry import resolve

        return load_tokenizer(resolve(self.model))

    def embeddings(self, table: Table) -> np.ndarray:
        """Frozen embeddings of table.texts via the shared on-disk cache: the baselines reuse them."""
        key = ("emb", table.path)
        if key not in self._cache:
            from tunesmith.models.embed import embed

            t0 = time.perf_counter()
            self._cache[key] = embed(self.model, table.texts, self.max_length)
            self.embed_seconds += time.perf_counter() - t0
        return self._cache[key]

    def norm(self, table: Table) -> list[str]:
        key = ("norm", table.path)
        if key not in self._cache:
            self._cache[key] = [normalise(t) for t in table.texts]
        return self._cache[key]

    @cached_property
    def exact_groups(self) -> list[list[int]]:
        """Positions in train.texts sharing one normalised text, groups of 2+, in file order."""
        by_text: dict[str, list[int]] = {}
        for i, t in enumerate(self.norm(self.train)):
            by_text.setdefault(t, []).append(i)
        return [g for g in by_text.values() if len(g) > 1]

    @cached_property
    def near_groups(self) -> list[list[int]]:
        """Positions of train texts linked by cosine >= threshold, spanning 2+ different normalised texts."""
        norm = self.norm(self.train)
        first: dict[str, int] = {}
        for i, t in enumerate(norm):
            first.setdefault(t, i)
        reps = sorted(first.values())              # one row per distinct text: exact copies are another check
        emb = self.embeddings(self.train)[reps]
        ii, jj = similar_pairs(emb, None, self.near_threshold)
        uf = UnionFind(len(reps))
        for i, j in zip(ii.tolist(), jj.tolist()):
            uf.union(i, j)
        comps: dict[int, list[int]] = {}
        for k in range(len(reps)):
            comps.setdefault(uf.find(k), []).append(k)
        members: dict[str, list[int]] = {}
        for i, t in enumerate(norm):
            members.setdefault(t, []).append(i)
        groups = []
        for comp in comps.values():
            if len(comp) > 1:
                groups.append(sorted(p for k in comp for p in members[norm[reps[k]]]))
        return sorted(groups)
