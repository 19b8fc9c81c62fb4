"""The audit inside `tunesmith train`: same checks, one screen of output, --strict refuses errors."""
from __future__ import annotations

import numpy as np

from tunesmith.audit.render import summary_lines
from tunesmith.audit.runner import AuditReport, audit, model_limits
from tunesmith.errors import TunesmithError


def _split_embeddings(recipe, loaded, tr, va, te, max_length: int) -> dict:
    """Embed per split (the keys the baselines look up in the cache), then put rows back in file order."""
    from tunesmith.models.embed import embed

    pos = {r: i for i, r in enumerate(loaded.examples.rows)}
    full = None
    for ex in (tr, va, None if recipe.test else te):
        if ex is None or not len(ex):
            continue
        vecs = embed(recipe.model, ex.texts, max_length)
        if full is None:
            full = np.zeros((len(pos), vecs.shape[1]), dtype=vecs.dtype)
        full[[pos[r] for r in ex.rows]] = vecs
    out = {"train": full}
    if recipe.test and te is not None:
        out["test"] = embed(recipe.model, te.texts, max_length)
    return out


def audit_for_training(recipe, task: str, loaded, tr, va, te, on_event) -> AuditReport:
    max_length, _ = model_limits(recipe.model, recipe.max_length)
    report = audit(recipe.train, recipe.test, model=recipe.model, max_length=max_length,
                   text_column=loaded.text_column, label_column=loaded.label_column, task=task,
                   embeddings=_split_embeddings(recipe, loaded, tr, va, te, max_length))
    return finish(report, recipe, on_event, f"see `tunesmith audit {recipe.train}"
                  f"{' --test ' + recipe.test if recipe.test else ''}` (--fix cleaned.csv writes a cleaned copy) or")


def finish(report, recipe, on_event, hint: str = "fix them or") -> "AuditReport":
    """One screen of lines for train, and --strict's refusal while a check says error."""
    for line in summary_lines(report):
        on_event("info", message=line)
    if recipe.strict and report.errors:
        names = ", ".join(f"{f.name} ({f.count} rows{', e.g. ' if f.rows else ''}{', '.join(map(str, f.rows[:3]))})"
                          for f in report.errors)
        raise TunesmithError(f"{recipe.train}: --strict and the audit found errors: {names}; {hint} train "
                             f"without --strict")
    return report
