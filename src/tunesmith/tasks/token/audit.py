"""The audit of tagged sentences inside `tunesmith train` (an audit.runner.AuditReport, like classification's):
what silently spoils a tagger. Rows are the files' 1-based lines (where each sentence starts).

- invalid_transitions: an I-X starting an entity (after O or another type) in a BIO file: read as B-X;
- tag_sets_differ: entity types tagged in test but never in train (cannot be predicted), or the reverse;
- conflicting_types: one entity text tagged with different types in train;
- entity_leakage: test entities whose text is a training entity (share: what memorisation can score);
- sentence_leakage: test sentences that are also training sentences, word for word;
- windowed: sentences over --max-length, read in overlapping windows (nothing is cut).
"""
from __future__ import annotations

import time

import numpy as np

from tunesmith.audit.base import Finding
from tunesmith.audit.runner import AuditReport
from tunesmith.errors import TunesmithError
from tunesmith.tasks.token.data import entities


def _surface(s, a, b) -> str:
    return " ".join(s.tokens[a:b]).casefold()


def checks(loaded_train, train_sents, test_sents, loaded_test, windowed_rows, max_length) -> list[Finding]:
    out = []
    bad = loaded_train.started_by_i if loaded_train.scheme == "BIO" else []
    out.append(Finding("invalid_transitions", "warning" if bad else "ok", list(bad),
                       details={"scheme": loaded_train.scheme},
                       fix="an I- tag starts an entity (after O or another type); it is read as B-: check the "
                           "annotation of these lines" if bad else ""))
    types_train = {t[2:] for s in train_sents for t in s.tags if t != "O"}
    if test_sents is not None:
        types_test = {t[2:] for s in test_sents for t in s.tags if t != "O"}
        only_test, only_train = sorted(types_test - types_train), sorted(types_train - types_test)
        rows = sorted({s.row for s in test_sents for t in s.tags if t != "O" and t[2:] in only_test})
        out.append(Finding("tag_sets_differ", "error" if only_test else "warning" if only_train else "ok", rows,
                           details={"only_in_test": only_test, "only_in_train": only_train},
                           fix=(f"types only in test ({', '.join(only_test)}) cannot be predicted; " if only_test
                                else "") + (f"types never in test ({', '.join(only_train)}) are not measured"
                                            if only_train else "")))
    kinds: dict[str, dict[str, list[int]]] = {}
    for s in train_sents:
        for t, a, b in entities(s.tags):
            kinds.setdefault(_surface(s, a, b), {}).setdefault(t, []).append(s.row)
    conflicts = {k: v for k, v in kinds.items() if len(v) > 1}
    rows = sorted({r for v in conflicts.values() for rs in v.values() for r in rs})
    out.append(Finding("conflicting_types", "warning" if conflicts else "ok", rows,
                       groups=[{"text": k, "types": {t: len(r) for t, r in v.items()}}
                               for k, v in list(conflicts.items())[:50]],
                       details={"texts": len(conflicts)},
                       fix="the same text is tagged with different types; if it is not ambiguous in context, "
                           "make the tags agree" if conflicts else ""))
    if test_sents is not None:
        seen_rows, seen, total = set(), 0, 0
        for s in test_sents:
            for _, a, b in entities(s.tags):
                total += 1
                if _surface(s, a, b) in kinds:
                    seen += 1
                    seen_rows.add(s.row)
        share = seen / total if total else 0.0
        out.append(Finding("entity_leakage", "warning" if share > 0.5 else "ok", sorted(seen_rows),
                           details={"seen_in_train": seen, "test_entities": total, "share": round(share, 4)},
                           fix=f"{100 * share:.0f}% of test entities are training entities: test F1 partly measures "
                               f"memorisation; read the unseen-entity F1 in the report" if seen else ""))
        train_keys = {tuple(s.tokens) for s in train_sents}
        dup = sorted({s.row for s in test_sents if tuple(s.tokens) in train_keys})
        out.append(Finding("sentence_leakage", "error" if dup else "ok", dup,
                           fix="these test sentences are also in train: remove them from one side" if dup else ""))
    out.append(Finding("windowed", "ok", list(windowed_rows), details={"max_length": max_length},
                       fix=f"over {max_length} tokens: read in overlapping windows, every word predicted once"
                       if windowed_rows else ""))
    return out


def audit(task, recipe, data, on_event) -> AuditReport:
    from tunesmith.audit.render import summary_lines
    from tunesmith.audit.runner import model_limits
    from tunesmith.models.registry import resolve
    from tunesmith.tasks.token.encoding import encode
    from tunesmith.tasks.token.inference import load_tokenizer

    t0 = time.perf_counter()
    loaded = data.loaded["train"]
    test_loaded = data.loaded.get("test")
    # What trains (train and validation): without --test, the held-out share of the file is test, not train
    train_sents = list(data.train) + list(data.validation or [])
    test_sents = test_loaded.sentences if test_loaded is not None else data.test
    max_length, _ = model_limits(recipe.model, recipe.max_length)
    tok = load_tokenizer(resolve(recipe.model))
    rows = []
    for sents in (train_sents, test_sents or []):
        w = encode(tok, sents, max_length)
        many = np.flatnonzero(np.bincount(w.sentence, minlength=len(w)) > 1) if w.ids else []
        rows += [sents[i].row for i in many]
    found = checks(loaded, train_sents, test_sents, test_loaded, sorted(set(rows)), max_length)
    files = {"train": recipe.train, **({"test": recipe.test} if recipe.test else {})}
    report = AuditReport(len(train_sents) + len(test_sents or []), files, recipe.model, max_length, found,
                         seconds=time.perf_counter() - t0)
    for line in summary_lines(report):
        on_event("info", message=line)
    if recipe.strict and report.errors:
        names = ", ".join(f"{f.name} ({f.count} lines)" for f in report.errors)
        raise TunesmithError(f"{recipe.train}: --strict and the audit found errors: {names}; fix them or train "
                             f"without --strict")
    return report
