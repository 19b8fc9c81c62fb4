"""--hard-negatives K: before training, the untouched encoder finds for each anchor the K training texts
closest to it that are not its answer, and every row becomes (anchor, positive[, its own negative],
negative_1..K). In-batch negatives are mostly easy (a random other text); mined ones are the near misses the
model confuses, which is what sentence-transformers' mine_hard_negatives gives MultipleNegativesRankingLoss.

The candidates are the training split's distinct positives (the corpus a query is answered from). Never a
negative: the anchor itself, any of its positives, its row's own negative, and any text scoring above
positive_score - |positive_score| x MARGIN with the anchor (the lowest of its positives' scores, as
sentence-transformers' relative_margin): that close to the answer it is more likely an unlabelled positive
(a false negative) than a negative. A row that finds fewer than K keeps those it found (steps.PAD for the rest).

Mined once, on the run's device; kept in checkpoint/hard_negatives.json so that --resume trains on the same rows
(resume skips the pipeline's before_fit, where mining runs).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tunesmith.errors import TunesmithError
from tunesmith.tasks.embedding.steps import PAD, Units
from tunesmith.train import distributed

MARGIN = 0.05  # relative: sentence-transformers' example value for relative_margin
FILE = "hard_negatives.json"
BLOCK = 1024   # anchors scored against the corpus at a time (bounds the score matrix)

REFUSED = {
    "scored": "scored pairs train with CoSENT, which orders the given pairs by their scores and takes no negatives; "
              "mine from anchor/positive pairs instead",
    "labelled": "labelled texts already take every text of another label in the batch as a negative; mining needs "
                "anchor/positive pairs",
}


def check(k: int, form: str) -> None:
    """One line when --hard-negatives cannot apply to the data's form (before the model loads)."""
    if k < 0:
        raise TunesmithError(f"--hard-negatives {k}: give 0 (off) or a number of negatives per anchor")
    if k and form in REFUSED:
        raise TunesmithError(f"--hard-negatives {k}: {REFUSED[form]}")


def mine(vectors: torch.Tensor, units: list[tuple[int, ...]], k: int, margin: float = MARGIN):
    """(units with K mined negatives appended, PAD where short; counts). `vectors`: unit vectors of every
    text index the units use (rows of other texts are never read)."""
    positives: dict[int, set[int]] = {}
    barred: dict[int, set[int]] = {}
    for u in units:
        positives.setdefault(u[0], set()).add(u[1])
        barred.setdefault(u[0], {u[0]}).update(t for t in u[1:] if t != PAD)
    corpus = torch.tensor(sorted({u[1] for u in units}), device=vectors.device)
    col = {int(t): j for j, t in enumerate(corpus.tolist())}
    anchors = list(positives)
    found: dict[int, list[int]] = {}
    skipped = 0
    for start in range(0, len(anchors), BLOCK):
        block = anchors[start:start + BLOCK]
        s = vectors[torch.tensor(block, device=vectors.device)] @ vectors[corpus].T  # (anchors, corpus)
        for i, a in enumerate(block):
            own = torch.tensor(sorted(positives[a]), device=vectors.device)
            pos_score = (vectors[own] @ vectors[a]).min()
            row = s[i].clone()
            row[[col[t] for t in barred[a] if t in col]] = float("-inf")
            close = row > pos_score - pos_score.abs() * margin
            skipped += int(close.sum())
            row[close] = float("-inf")
            top = torch.topk(row, min(k, len(row)))
            found[a] = [int(corpus[j]) for j, v in zip(top.indices.tolist(), top.values.tolist()) if v > float("-inf")]
    out, short, mined = [], 0, 0
    for u in units:
        neg = [t for t in found[u[0]] if t not in u]
        mined += len(neg)
        short += len(neg) < k
        out.append(tuple(u) + tuple(neg) + (PAD,) * (k - len(neg)))
    return out, {"k": k, "relative_margin": margin, "rows": len(units), "anchors": len(anchors),
                 "corpus": len(col), "mined": mined, "skipped_as_likely_positives": skipped, "rows_short": short}


def mine_units(model, units: Units, k: int, pad_id: int, batch_size: int, bf16: bool, device):
    """Mine with `model` (the untouched encoder, already on `device`), embedding only the texts that count."""
    from tunesmith.tasks.embedding.inference import embed_ids

    need = sorted({t for u in units.units for t in u[:2]})
    vecs = embed_ids(model, [units.ids[t] for t in need], pad_id, batch_size, bf16, device)
    vectors = torch.zeros(len(units.texts), vecs.shape[1], device=device)
    vectors[torch.tensor(need, device=device)] = torch.from_numpy(np.ascontiguousarray(vecs)).to(device)
    return mine(vectors, units.units, k)


def message(stats: dict) -> str:
    line = (f"hard negatives: {stats['mined']} mined for {stats['rows']} rows ({stats['k']} each) from "
            f"{stats['corpus']} training texts; {stats['skipped_as_likely_positives']} candidates skipped as likely "
            f"positives (within {stats['relative_margin']:.0%} of the anchor's positive score)")
    if stats["rows_short"]:
        line += f"; {stats['rows_short']} rows found fewer than {stats['k']}"
    return line


def before_fit(model, tok, enc: dict, recipe, device, bf16, on_event) -> dict | None:
    """Mine, swap the training rows in `enc`, keep them for resume; the counts (None when off)."""
    k = recipe.hard_negatives
    if not k:
        return None
    units: Units = enc["train"]
    rows, stats = mine_units(model, units, k, tok.pad_token_id, recipe.batch_size * 2, bf16, device)
    enc["train"] = Units(units.texts, units.ids, rows, units.score, units.group)
    if recipe.out and distributed.is_main():  # every rank mines alike; one writes, after rank 0 made the folder
        from tunesmith.run import write_text_atomic

        ckpt = Path(recipe.out) / "checkpoint"
        ckpt.mkdir(parents=True, exist_ok=True)
        write_text_atomic(ckpt / FILE, json.dumps({"stats": stats, "units": [list(u) for u in rows]}))
    on_event("info", message=message(stats))
    return stats


def restore(enc: dict, recipe, ckpt_dir) -> dict | None:
    """--resume past before_fit: the rows it mined (checkpoint/hard_negatives.json), or one line when the run
    was started with another --hard-negatives."""
    f = Path(ckpt_dir) / FILE
    k = recipe.hard_negatives
    if not f.exists():
        if k:
            raise TunesmithError(f"{ckpt_dir}: the run was started without --hard-negatives; resume it without, or "
                                 f"start a new run with another --out")
        return None
    try:
        doc = json.loads(f.read_text())
        stats, rows = doc["stats"], [tuple(int(t) for t in u) for u in doc["units"]]
        units: Units = enc["train"]
        if len(rows) != len(units.units) or any(r[:len(u)] != tuple(u) for r, u in zip(rows, units.units)):
            raise ValueError("rows differ")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TunesmithError(f"{f}: unreadable or not this run's ({type(e).__name__}); delete the checkpoint/ folder "
                             f"to train from the start") from None
    if stats.get("k") != k:
        raise TunesmithError(f"{ckpt_dir}: the run was started with --hard-negatives {stats.get('k')}, not {k}; resume "
                             f"with its own setting")
    enc["train"] = Units(units.texts, units.ids, rows, units.score, units.group)
    return stats
