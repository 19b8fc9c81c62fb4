"""The contrastive stage before LP-FT (SetFit's first half, Tunstall et al. 2022), for few rows per class.

Why: with a handful of rows a class, the classifier's loss is little evidence for moving the body, so the
fine-tune barely leaves the probe it starts from (README, "How the default recipe is chosen"). Pairs
built from the labels are far more evidence from the same rows: n rows give n^2 / 2 pairs, and every
in-batch text of another label is a negative. So the encoder body is first trained to put texts of a
label close and texts of other labels apart; then the probe (LP-FT) is fitted on the new features and the
usual fine-tune runs.

The loss is the embedding task's own (tasks/embedding/steps.py): MultipleNegativesRanking over mean-pooled,
normalised vectors, each text paired with another of its label (`Embedding._label_pairs`, a new seeded
cycle each epoch), batches that never hold a text twice (`no_duplicate_batches`) and candidates sharing the
anchor's label masked out of its softmax. SetFit's CosineSimilarityLoss on sampled positive/negative pairs
(`pairs="setfit"`, kept for the measurement) lost to it: docs/performance.md.

It runs through the shared loop (train/loop.fit: the CPU engine's bf16 masters and fast dropout, the run's
device) on the body alone, writing no checkpoint (ckpt_dir None): the run's checkpoint/ holds only the
classifier's fit, so --resume (which skips before_fit once checkpoint/last.pt exists, and last.pt holds
the contrastively trained body) never sees this stage, and an interrupt during it runs it again.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import say

# Median rows per class at or below which `auto` runs the stage. Why this bound: SetFit's gains over plain
# fine-tuning are largest at 8 and 16 examples a class and shrink with more (Tunstall et al. 2022, tables
# 2-3), and so do ours after LP-FT (macro-F1, all-MiniLM-L6-v2, docs/performance.md): +0.8 points at 8 rows a
# class and +1.0 at 16 (77 intents), +0.2 at 30 (20 intents, 3 seeds: 0.9668 against 0.9647, within noise),
# where the stage cost 2.4x the rest of the run's wall time (38-50 s against 15-16 s). The pairs carry the
# most new evidence when the classifier has least, so past about 20 rows a class the classifier alone shapes
# the body as well, for less.
FEW_ROWS = 20
EPOCHS = 4          # passes over the label pairs (each row an anchor once a pass)
LR = 2e-5           # sentence-transformers' and SetFit's body learning rate
BATCH = 64          # in-batch negatives: more candidates per anchor than the classifier's batch of 32


def median_rows(targets) -> float:
    y = targets.numpy() if hasattr(targets, "numpy") else np.asarray(targets)
    return float(np.median(np.bincount(y.astype(int))))


def decide(mode: str, recipe, targets, multi_label: bool) -> str:
    """"on" or "off" for the resolved recipe: `auto` runs the stage for single-label data with at most
    FEW_ROWS rows in the median class, fully fine-tuned (`--strategy full`) with the head read from the
    pooled sentence vector; `on` outside that is one line of error."""
    why_not = None
    if multi_label:
        why_not = "multi-label rows have no single label to pair texts by"
    elif recipe.strategy != "full":
        why_not = f"--strategy {recipe.strategy} keeps the body (or most of it) as it is"
    elif recipe.head_init != "probe":
        why_not = "it prepares the features the probe start (--head-init probe) reads"
    elif np.bincount(np.asarray(targets).astype(int)).max(initial=0) < 2:
        why_not = "no label has two training rows to pair"
    if mode == "on":
        if why_not:
            raise TunesmithError(f"--contrastive on: {why_not}; use --contrastive off or auto")
        return "on"
    if mode == "off" or why_not:
        return "off"
    return "on" if median_rows(targets) <= FEW_ROWS else "off"


class _Pairs:
    """Label pairs over the training rows (row indices as the texts), a fresh pairing each epoch."""

    def __init__(self, targets, seed: int):
        from tunesmith.tasks.embedding.task import Embedding

        y = targets.numpy().astype(int).tolist()
        n = len(y)
        self.ex = SimpleNamespace(a=list(range(n)), label=y)
        self.at = {i: i for i in range(n)}
        self.seed = seed
        self.pairs = Embedding._label_pairs

    def epoch(self, epoch: int):
        return self.pairs(self.ex, self.at, self.seed * 1_000 + epoch)


def _setfit_units(y: np.ndarray, iterations: int, seed: int):
    """SetFit's sampling: per iteration, each row with a random row of its label (score 1) and one of
    another label (score 0)."""
    rng = np.random.default_rng(seed)
    by = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    units, score = [], []
    for _ in range(iterations):
        for i in range(len(y)):
            same = by[y[i]]
            other = np.flatnonzero(y != y[i])
            units.append((i, int(rng.choice(same))))
            score.append(1.0)
            units.append((i, int(rng.choice(other))))
            score.append(0.0)
    return units, score


def _steps(ids, per_epoch, group, score, recipe, pad_id):
    """The embedding task's steps over `per_epoch` units (epoch e trains on per_epoch[e], the last list for
    any later epoch); `score` given: SetFit's cosine loss on scored pairs instead of MNRL."""
    from tunesmith.tasks.embedding.steps import EmbeddingSteps, Units

    class PairSteps(EmbeddingSteps):
        def batches(self, batch_size, seed, epoch):
            units = per_epoch[min(epoch, len(per_epoch) - 1)]  # a new pairing each epoch, same count of rows
            self.train.units = units
            self.lengths = [sum(len(ids[t]) for t in u) for u in units]
            return super().batches(batch_size, seed, epoch)

        @staticmethod
        def of_embeddings(e, pos, text, score=None, group=None):
            if score is None:
                return EmbeddingSteps.of_embeddings(e, pos, text, None, group)
            # SetFit's CosineSimilarityLoss: (cos(u, v) - label)^2
            n = torch.tensor(float(len(pos)), dtype=torch.float64, device=e.device)
            loss = ((e[pos[:, 0]] * e[pos[:, 1]]).sum(-1) - score).pow(2).mean()
            return loss, torch.stack([loss.detach().double() * n, n, torch.zeros_like(n)])

    return PairSteps(None, Units([], ids, per_epoch[0], score, group), None, recipe, pad_id, None)


def train_body(model, ids, targets, pad_id: int, recipe, device, bf16: bool, on_event, *,
               epochs: int = EPOCHS, lr: float = LR, batch_size: int = BATCH, pairs: str = "mnrl",
               iterations: int = 20) -> dict:
    """Trains model.base_model (the encoder body) on label pairs of the training rows, in place; returns
    what it did (recorded in metrics.json). Cost: `epochs` passes of 2 x rows texts, 1.6x the texts of a
    5-epoch fine-tune (77 x 8 rows: 262 s against the fine-tune's 163 s on 2 cores at load average 7). `pairs="setfit"`: SetFit's
    sampled pairs under its cosine loss, `iterations` pairs of each kind per row, one pass."""
    from tunesmith.train.loop import fit

    body = model.base_model
    y = targets.numpy().astype(int)
    stage = recipe.model_copy(update={"epochs": 1, "lr": lr, "batch_size": batch_size, "grad_accum": 1,
                                      "patience": 0, "mini_batch": 0, "warmup_ratio": 0.1,
                                      "scheduler": "linear"})
    quiet = lambda kind, **kw: None  # noqa: E731  (the classifier's progress lines are the run's)
    if pairs == "setfit":
        units, score = _setfit_units(y, iterations, recipe.seed)
        steps, epochs = _steps(ids, [units], None, score, stage, pad_id), 1
    else:
        p = _Pairs(targets, recipe.seed)
        per_epoch = [p.epoch(e) for e in range(epochs)]
        steps = _steps(ids, [u for u, _ in per_epoch], per_epoch[0][1], None, stage, pad_id)
    # The vectors are mean-pooled: BERT's [CLS] pooler gets no gradient here, which DDP (--nproc, where the
    # embedding steps gather every process's negatives) counts as an error. Frozen for the stage only.
    head = getattr(body, "pooler", None)
    pooler = [p for p in head.parameters() if p.requires_grad] if head is not None else []
    for p in pooler:
        p.requires_grad_(False)
    try:
        r = fit(body, steps, stage.model_copy(update={"epochs": epochs}), device=device, bf16=bf16,
                ckpt_dir=None, on_event=quiet)
    finally:
        for p in pooler:
            p.requires_grad_(True)
    history = r.history
    done = {"pairs": pairs, "epochs": len(history), "lr": lr, "batch_size": batch_size,
            "train_loss": [round(h["train_loss"], 4) for h in history],
            "train_seconds": round(sum(h.get("epoch_seconds", 0.0) for h in history), 3)}
    if "train_accuracy" in history[-1]:
        done["in_batch_accuracy"] = round(history[-1]["train_accuracy"], 4)
    say(on_event, f"contrastive stage: the body trained on label pairs ({pairs}, {len(history)} epoch(s), "
                  f"loss {history[0]['train_loss']:.3f} -> {history[-1]['train_loss']:.3f}, "
                  f"{done['train_seconds']:.0f} s) before the probe start")
    return done
