"""A run folder's documents as a tracker's params, metrics and tags: flat keys, strings cut to the tracker's
limits, numbers only where numbers are expected. Pure functions: no tracker library.

Long params are cut, never refused: a value over the tracker's limit must not cost the upload (a crash on a
long param is a known complaint about transformers' MLflow callback, huggingface/transformers#9210).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator

PARAM_LIMIT = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH (3.x); the caller passes the library's own
TAG_LIMIT = 8000
KEY_LIMIT = 250
CUT = "…[cut]"
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. :]")


def key(name: str) -> str:
    """A tracker key: letters, digits, `_-. :` (MLflow refuses others, and '/' would be read as a path)."""
    k = _BAD_KEY.sub("_", str(name)).strip(" .") or "_"
    return k[:KEY_LIMIT]


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - len(CUT)] + CUT


def _text(v) -> str:
    if isinstance(v, str):
        return v
    if v is None or isinstance(v, (bool, int, float)):
        return str(v)
    return json.dumps(v, ensure_ascii=False, default=str)


def flat(doc: dict, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, leaf) for every leaf of nested mappings; lists are leaves."""
    for k, v in doc.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from flat(v, name + ".")
        else:
            yield name, v


def params_of(recipe_doc: dict, limit: int = PARAM_LIMIT) -> dict[str, str]:
    """recipe.yaml as params: the resolved recipe under its own names, the provenance under `provenance.`."""
    recipe = recipe_doc.get("recipe", recipe_doc) or {}
    out = {key(k): cut(_text(v), limit) for k, v in flat(recipe) if k != "provenance"}
    for k, v in flat(recipe_doc.get("provenance") or {}, "provenance."):
        out[key(k)] = cut(_text(v), limit)
    return out


def settings_params(settings: dict, limit: int = PARAM_LIMIT) -> dict[str, str]:
    return {key(k): cut(_text(v), limit) for k, v in flat(settings)}


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def numbers(doc: dict, prefix: str) -> dict[str, float]:
    """The numeric leaves of a metrics section; a [low, high] interval (ci95) as `.low` and `.high`."""
    out = {}
    for k, v in flat(doc, prefix):
        if isinstance(v, (list, tuple)) and len(v) == 2 and any(p.startswith("ci") for p in k.split(".")):
            for side, x in zip(("low", "high"), v):
                if _number(x) is not None:
                    out[key(f"{k}.{side}")] = _number(x)
        elif _number(v) is not None:
            out[key(k)] = _number(v)
    return out


# Sections of metrics.json logged as final metrics, with their prefix. Others (confusion matrix, reliability
# bins, audit rows, samples) are in metrics.json itself, which is logged as an artifact.
FINAL_SECTIONS = {"test": "test.", "validation": "validation.", "baselines": "baseline.", "retention": "retention.",
                  "comparison": "comparison.", "calibration": "calibration.", "per_class": "per_class.",
                  "overfitting": "overfitting.", "stage_seconds": "seconds."}
FINAL_SCALARS = ("best_epoch", "train_seconds", "train_samples_per_second", "train_tokens_per_second",
                 "wall_seconds")


def final_metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for section, prefix in FINAL_SECTIONS.items():
        if isinstance(metrics.get(section), dict):
            out.update(numbers(metrics[section], prefix))
    for name in FINAL_SCALARS:
        if _number(metrics.get(name)) is not None:
            out[name] = _number(metrics[name])
    return out


def history_metrics(history: list) -> list[tuple[str, float, int, float]]:
    """(key, value, step = epoch, seconds since the start) for each number of each epoch of metrics.json."""
    rows, elapsed = [], 0.0
    for i, h in enumerate(history or []):
        if not isinstance(h, dict):
            continue
        step = int(h.get("epoch", i + 1))
        elapsed += _number(h.get("epoch_seconds")) or 0.0
        for k, v in h.items():
            if k != "epoch" and _number(v) is not None:
                rows.append((key(k), _number(v), step, elapsed))
    return rows


def outcome(metrics: dict) -> str | None:
    """better | worse | no significant difference: the verdict's first word, for filtering runs by tag."""
    c = metrics.get("comparison")
    if not isinstance(c, dict) or not isinstance(c.get("ci95"), (list, tuple)):
        return None
    lo, hi = c["ci95"]
    return "better" if lo > 0 else "worse" if hi < 0 else "no significant difference"


def tags_of(metrics: dict, recipe_doc: dict) -> dict[str, str]:
    recipe = recipe_doc.get("recipe", recipe_doc) or {}
    tags = {"tunesmith.task": metrics.get("task") or recipe.get("task"), "tunesmith.base_model": recipe.get("model"),
            "tunesmith.strategy": recipe.get("strategy"), "tunesmith.verdict": metrics.get("verdict"),
            "tunesmith.outcome": outcome(metrics)}
    if metrics.get("verdict"):
        tags["mlflow.note.content"] = metrics["verdict"]  # the run's description in the MLflow UI
    return {k: cut(str(v), TAG_LIMIT) for k, v in tags.items() if v not in (None, "")}
