"""Load the files once, run every registered check, collect the findings."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.audit.base import NEAR_THRESHOLD, AuditData, Finding, Table
from tunesmith.data.dataset import LABEL_NAMES, TEXT_NAMES, find_column, load_examples
from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError


@dataclass
class AuditReport:
    rows: int
    files: dict
    model: str
    max_length: int
    checks: list[Finding]
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)

    def get(self, name: str) -> Finding:
        return next(f for f in self.checks if f.name == name)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.checks if f.severity == "error"]

    def summary(self) -> list[dict]:
        """The compact form kept in a run's metrics: name, severity, count per check."""
        return [{"name": f.name, "severity": f.severity, "count": f.count} for f in self.checks]

    def to_dict(self) -> dict:
        return {"rows": self.rows, "files": self.files, "model": self.model, "max_length": self.max_length,
                "seconds": round(self.seconds, 3), "timings": self.timings,
                "checks": [f.to_dict() for f in self.checks]}


def load_table(path, text_column=None, label_column=None, task="auto") -> tuple[Table, str]:
    frame = read_table(path)
    tcol = find_column(frame, text_column, TEXT_NAMES, "text", path)
    if label_column is not None:
        lcol = find_column(frame, label_column, LABEL_NAMES, "label", path)
    else:  # an unlabelled file still gets the text checks
        lower = {c.lower().strip(): c for c in frame.columns}
        lcol = next((lower[n] for n in LABEL_NAMES if n in lower), None)
    loaded = load_examples(path, tcol, lcol, task, need_labels=lcol is not None)
    ex = loaded.examples
    return Table(str(path), frame, tcol, lcol, list(ex.rows), list(ex.texts), list(ex.labels)), loaded.task


def model_limits(model: str, max_length: int | None) -> tuple[int, int]:
    from transformers import AutoConfig

    from tunesmith.models.load import load_tokenizer, model_max_length, resolve_max_length
    from tunesmith.models.registry import check_hub, resolve

    path = resolve(model)
    check_hub(path)
    config, tok = AutoConfig.from_pretrained(path), load_tokenizer(path)
    return resolve_max_length(max_length, config, tok, model), model_max_length(config, tok)


def audit(train, test=None, *, validation=None, model: str = "minilm", max_length: int | None = None,
          text_column: str | None = None, label_column: str | None = None, task: str = "auto",
          checks: list[str] | None = None, near_threshold: float = NEAR_THRESHOLD,
          embeddings: dict | None = None) -> AuditReport:
    """Audit a training file (and a test/validation file) before any training. Nothing is written.

    `embeddings` ({"train"|"test"|"validation": array aligned with the file's usable rows}) lets
    training hand over vectors it computed per split, so the baselines and the audit share one pass."""
    from tunesmith.audit.checks import CHECKS

    t0 = time.perf_counter()
    names = list(CHECKS) if checks is None else checks
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise TunesmithError(f"unknown audit check '{unknown[0]}'; the checks are: {', '.join(CHECKS)}")
    tr, task = load_table(train, text_column, label_column, task)
    other = {}
    for kind, path in (("test", test), ("validation", validation)):
        if path is not None:
            if Path(path).resolve() == Path(train).resolve():
                raise TunesmithError(f"{path}: is the training file itself; pass a separate --{kind} file")
            other[kind] = load_table(path, text_column or tr.text_column, label_column or tr.label_column, task)[0]
    ml, limit = model_limits(model, max_length)
    data = AuditData(tr, other.get("test"), other.get("validation"), task, model, ml, limit, near_threshold)
    tables = {"train": tr} | other
    for kind, vecs in (embeddings or {}).items():
        if len(vecs) != len(tables[kind].texts):
            raise ValueError(f"{kind} embeddings have {len(vecs)} rows, the file has {len(tables[kind].texts)}")
        data._cache[("emb", tables[kind].path)] = vecs
    findings = []
    for name in names:
        s = time.perf_counter()
        f = CHECKS[name](data)
        f.seconds = time.perf_counter() - s
        findings.append(f)
    files = {"train": str(train)} | {k: str(v) for k, v in (("test", test), ("validation", validation)) if v}
    return AuditReport(len(tr.frame), files, model, ml, findings, time.perf_counter() - t0,
                       {"embeddings": round(data.embed_seconds, 3)})
