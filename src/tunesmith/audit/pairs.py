"""The audit of text pairs inside `tunesmith train` and `tunesmith audit` (an AuditReport, like the row audit's):
what silently spoils an embedding (pairs, triplets, scored pairs) or a seq2seq model (source → target). The tasks
call `audit` from their `audit` hook with their splits as PairRows; rows are the files' 1-based data rows
(header excluded), as the readers' own errors count them.

- empty_sides: a side with no visible character (zero-width or control characters only: str.strip keeps them, so
  the readers let them through) is an error; punctuation only, a warning;
- duplicate_pairs: the same pair (and negative) again: it weighs double;
- identical_sides: anchor == positive (nothing to learn) or a negative equal to its anchor/positive; for seq2seq
  the share of target == source, which copying the source scores perfectly;
- one_to_many: one anchor with different positives (informational) or one source with different targets (a
  warning: the model learns their average);
- pair_leakage: test pairs that are training pairs (error); source_leakage / anchor_leakage: test sources or
  anchors seen in training (a warning with the share: test partly measures memory);
- truncated (truncated_test): texts over --max-length tokens, cut in training and evaluation;
- length_ratio (length_ratio_test), seq2seq only: target/source length far outside the training pairs' own
  range (misaligned pairs);
- scores (scored pairs): the score range, and constant scores (nothing to rank: an error).
Train is train plus validation (what trains); test is the --test file or the held-out share. A finding's rows
are one file's: test rows in the *_test and leakage findings (details["file"] names it), train rows elsewhere.
"""
from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass

import numpy as np

from tunesmith.audit.base import Finding
from tunesmith.audit.runner import AuditReport
from tunesmith.audit.training import finish  # train's summary lines and --strict, as for rows
from tunesmith.errors import TunesmithError

WORDS_TO_TOKENS = 1.3  # subword tokens per whitespace word in English WordPiece/BPE; only without the tokenizer
RATIO_FACTOR = 3.0     # a target/source length ratio 3x beyond the data's 1st-99th percentile range is an outlier


@dataclass
class PairRows:
    """One split of pairs: first texts (anchors, sources), second texts (positives, targets), optional hard
    negatives and scores, and the 1-based data rows they came from."""
    a: list[str]
    b: list[str]
    rows: list[int]
    neg: list[str] | None = None
    score: list[float] | None = None

    def __len__(self):
        return len(self.a)

    @classmethod
    def join(cls, parts: list["PairRows"]) -> "PairRows":
        """Train and validation as one (what trains), back in the file's order: "the first" of repeats is the first."""
        def cat(k):
            return None if any(getattr(p, k) is None for p in parts) else [x for p in parts for x in getattr(p, k)]

        cols = [cat(k) for k in ("a", "b", "rows", "neg", "score")]
        order = np.argsort(cols[2], kind="stable")
        return cls(*(None if c is None else [c[i] for i in order] for c in cols))

    def keys(self) -> list[tuple]:
        return [tuple(t) for t in zip(self.a, self.b, *([self.neg] if self.neg else []))]


def _blank(text: str) -> str | None:
    """"invisible" (no character but spaces, format and control ones), "punctuation" (nothing else), or None."""
    cats = {unicodedata.category(ch)[0] for ch in text}
    if cats <= {"Z", "C"}:
        return "invisible"
    if cats <= {"Z", "C", "P"}:
        return "punctuation"
    return None


def empty_sides(train: PairRows, names: dict) -> Finding:
    found = {"invisible": {}, "punctuation": {}}
    for role, texts in (("a", train.a), ("b", train.b), ("neg", train.neg or [])):
        for r, t in zip(train.rows, texts):
            kind = _blank(t)
            if kind:
                found[kind].setdefault(names[role], []).append(r)
    rows = sorted({r for cols in found.values() for rs in cols.values() for r in rs})
    sev = "error" if found["invisible"] else "warning" if rows else "ok"
    return Finding("empty_sides", sev, rows, details=found,
                   fix="texts with no visible character (zero-width or control characters only) or punctuation only: "
                       "fill or drop these rows" if rows else "")


def duplicate_pairs(train: PairRows) -> Finding:
    first, dup = {}, []
    for r, k in zip(train.rows, train.keys()):
        if k in first:
            dup.append(r)
        else:
            first[k] = r
    return Finding("duplicate_pairs", "warning" if dup else "ok", sorted(dup), details={"pairs": len(train)},
                   fix="all but the first of each repeated pair: a repeat weighs the pair double in every epoch; "
                       "drop the repeats unless that is meant" if dup else "")


def identical_sides(train: PairRows, test: PairRows | None, kind: str, names: dict) -> Finding:
    same = [r for r, a, b in zip(train.rows, train.a, train.b) if a == b]
    details = {"share": round(len(same) / max(len(train), 1), 4)}
    if test is not None:
        details["test_share"] = round(sum(a == b for a, b in zip(test.a, test.b)) / max(len(test), 1), 4)
    a, b = names["a"], names["b"]
    if kind == "seq2seq":
        fix = (f"{100 * details['share']:.1f}% of training pairs have {b} == {a}"
               + (f" ({100 * details['test_share']:.1f}% of test pairs)" if test is not None else "")
               + ": copying the source scores those perfectly (the copy_source baseline shows how much); drop them "
                 "if they are untranslated or unchanged by mistake")
        return Finding("identical_sides", "warning" if same else "ok", same, details=details, fix=fix if same else "")
    bad_neg = []
    if train.neg:
        bad_neg = [r for r, x, y, n in zip(train.rows, train.a, train.b, train.neg) if n in (x, y)]
        details["negative_equals_anchor_or_positive"] = len(bad_neg)
    rows = sorted(set(same) | set(bad_neg))
    fix = "; ".join(p for p in (f"{len(same)} rows with {a} == {b} teach nothing (a text is always closest to itself)"
                                if same else "",
                                f"{len(bad_neg)} rows whose {names.get('neg')} is their {a} or {b}: it is pushed away "
                                f"from itself" if bad_neg else "") if p)
    return Finding("identical_sides", "warning" if rows else "ok", rows, details=details,
                   fix=fix + "; drop or fix these rows" if rows else "")


def one_to_many(train: PairRows, kind: str, names: dict) -> Finding:
    by: dict[str, dict[str, list[int]]] = {}
    for r, a, b in zip(train.rows, train.a, train.b):
        by.setdefault(a, {}).setdefault(b, []).append(r)
    many = {a: v for a, v in by.items() if len(v) > 1}
    rows = sorted(r for v in many.values() for rs in v.values() for r in rs)
    a, b = names["a"], names["b"]
    sev = "warning" if many and kind == "seq2seq" else "ok"
    fix = ""
    if many and kind == "seq2seq":
        fix = (f"{len(many)} {a} texts have several different {b} texts: the model learns a blend of them; keep one "
               f"unless they are equally right (paraphrases)")
    elif many:
        fix = f"{len(many)} {a} texts have several {b} texts (fine: each is a positive; batches keep them apart)"
    return Finding("one_to_many", sev, rows, groups=[{a: k, b: sorted(v)} for k, v in list(many.items())[:50]],
                   details={"texts": len(many)}, fix=fix)


def leakage(train: PairRows, test: PairRows, kind: str, names: dict, test_file: str) -> list[Finding]:
    pairs = set(zip(train.a, train.b))
    leaked = [r for r, a, b in zip(test.rows, test.a, test.b) if (a, b) in pairs]
    seen = set(train.a)
    firsts = [r for r, a in zip(test.rows, test.a) if a in seen]
    share = len(firsts) / max(len(test), 1)
    side = "source" if kind == "seq2seq" else "anchor"
    return [Finding("pair_leakage", "error" if leaked else "ok", leaked, details={"file": test_file},
                    fix=f"these test pairs ({test_file} rows) are also training pairs: remove them from one side"
                    if leaked else ""),
            Finding(f"{side}_leakage", "warning" if firsts else "ok", firsts,
                    details={"file": test_file, "seen_in_train": len(firsts), "test_pairs": len(test),
                             "share": round(share, 4)},
                    fix=f"{100 * share:.0f}% of test {names['a']} texts ({test_file} rows) are also training "
                        f"{names['a']} texts: test partly measures what was memorised" if firsts else "")]


def _counter(recipe):
    """(max length, count(texts, target) → token counts, how they were counted)."""
    try:
        from tunesmith.audit.runner import model_limits
        from tunesmith.models.load import load_tokenizer
        from tunesmith.models.registry import resolve

        max_length, _ = model_limits(recipe.model, recipe.max_length)
        tok = load_tokenizer(resolve(recipe.model))
    except (TunesmithError, OSError, ValueError) as e:  # no tokenizer at hand: an estimate, said as one
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        return (recipe.max_length or 128,
                lambda texts, target=False: [round(len(t.split()) * WORDS_TO_TOKENS) + 2 for t in texts],
                f"estimated as whitespace words x {WORDS_TO_TOKENS} + 2 (no tokenizer for {recipe.model}: {why})")

    def count(texts, target=False):
        if not texts:
            return []
        enc = tok(text_target=list(texts), verbose=False) if target else tok(list(texts), verbose=False)
        return [len(x) for x in enc["input_ids"]]
    return max_length, count, f"{recipe.model}'s tokenizer"


def truncated(split: str, p: PairRows, kind: str, names: dict, max_length: int, count, how: str,
              file: str) -> Finding:
    """Rows of one split with a text over max_length tokens; per column how many, and the longest."""
    details, over = {"file": file, "max_length": max_length, "counted": how}, set()
    for role, texts in (("a", p.a), ("b", p.b), ("neg", p.neg)):
        if texts is None:
            continue
        n = count(texts, target=kind == "seq2seq" and role == "b")
        hit = [r for r, k in zip(p.rows, n) if k > max_length]
        details[names[role]] = {"over": len(hit), "longest": int(max(n)) if n else 0}
        over |= set(hit)
    return Finding("truncated" if split == "train" else f"truncated_{split}", "warning" if over else "ok",
                   sorted(over), details=details,
                   fix=f"a text over --max-length {max_length} tokens ({how}): cut in training and evaluation; raise "
                       f"--max-length if its end matters" if over else "")


def length_ratio(train: PairRows, test: PairRows | None, files: dict) -> list[Finding]:
    """target/source characters outside [p1 / 3, p99 * 3] of the training pairs' own ratios (train and test)."""
    ratio = lambda p: np.array([len(b) / len(a) for a, b in zip(p.a, p.b)])  # noqa: E731  (readers: never empty)
    r = ratio(train)
    lo, hi = np.percentile(r, 1) / RATIO_FACTOR, np.percentile(r, 99) * RATIO_FACTOR
    details = {"bounds": [round(float(lo), 4), round(float(hi), 4)], "median": round(float(np.median(r)), 4),
               "rule": f"target/source characters below the 1st percentile / {RATIO_FACTOR:g} or above the 99th "
                       f"x {RATIO_FACTOR:g} (of the training pairs)"}
    out = []
    for split, p in (("train", train), ("test", test)):
        if p is None or not len(p):
            continue
        rows = [row for row, v in zip(p.rows, ratio(p)) if not lo <= v <= hi]
        out.append(Finding("length_ratio" if split == "train" else f"length_ratio_{split}",
                           "warning" if rows else "ok", rows, details={"file": files[split], **details},
                           fix=f"the target is far shorter or longer than its source for this data (bounds {lo:.2f} "
                               f"to {hi:.2f}, median {np.median(r):.2f}): often misaligned rows; check them"
                           if rows else ""))
    return out


def scores(train: PairRows, test: PairRows | None) -> Finding:
    details, bad = {}, []
    for split, p in (("train", train), ("test", test)):
        if p is None or not p.score:
            continue
        lo, hi = min(p.score), max(p.score)
        details[split] = {"min": lo, "max": hi, "distinct": len(set(p.score))}
        if lo == hi:
            bad.append(split)
    return Finding("scores", "error" if bad else "ok", [], details=details,
                   fix=f"every {' and '.join(bad)} score is the same: there is no order to learn or to measure "
                       f"(Spearman is undefined)" if bad else "")


def audit(train: PairRows, test: PairRows | None, *, kind: str, names: dict, recipe, on_event) -> AuditReport:
    """The pair checks over train (train + validation) and test; `kind` "embedding" or "seq2seq"; `names`: the
    file's column of each role ({"a", "b", "neg"}), for the messages."""
    t0 = time.perf_counter()
    test_file = recipe.test or f"{recipe.train} (held-out share)"
    files = {"train": recipe.train, "test": test_file}
    found = [empty_sides(train, names), duplicate_pairs(train), identical_sides(train, test, kind, names),
             one_to_many(train, kind, names)]
    if test is not None and len(test):
        found += leakage(train, test, kind, names, test_file)
    max_length, count, how = _counter(recipe)
    for split, p in (("train", train), ("test", test)):
        if p is not None and len(p):
            found.append(truncated(split, p, kind, names, max_length, count, how, files[split]))
    if kind == "seq2seq":
        found += length_ratio(train, test, files)
    if train.score is not None:
        found.append(scores(train, test))
    inputs = {"train": recipe.train, **({"test": recipe.test} if recipe.test else {})}
    report = AuditReport(len(train) + len(test or []), inputs, recipe.model, max_length, found,
                         seconds=time.perf_counter() - t0)
    return finish(report, recipe, on_event)


def row_audit(recipe, text_column: str, label_column: str, on_event) -> AuditReport:
    """Labelled texts (an embedding's text and label rows): the row audit's checks as they are."""
    from tunesmith.audit.runner import audit as run_rows, model_limits

    max_length, _ = model_limits(recipe.model, recipe.max_length)
    report = run_rows(recipe.train, recipe.test, model=recipe.model, max_length=max_length, text_column=text_column,
                      label_column=label_column, task="single_label")
    return finish(report, recipe, on_event)
