"""The embedding task's steps for the shared loop (train/loop.py): a batch is rows of (anchor, positive[,
negative]) or scored pairs; all their distinct texts go through the encoder in one forward (one forward per
backward is what DDP expects), are mean-pooled and L2-normalised, and scored by

- MultipleNegativesRankingLoss (Henderson et al. 2017; sentence-transformers' default): each anchor must
  pick its positive among all the batch's positives and negatives, cross-entropy over cosine x 20;
- CoSENT (Su 2022) for scored pairs: every pair scored higher must have the higher cosine, log(1 + sum
  exp(20 (cos_lower - cos_higher))). Better than a regression on cosines (sentence-transformers' docs).

In-batch negatives are only negatives when they differ from the answer: the batches never hold a text twice
as an anchor or a positive (`no_duplicate_batches`), and a candidate equal to a row's own texts or sharing its
label (labelled texts) is masked out of that row's softmax.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.data.batching import collate
from tunesmith.tasks.base import Steps
from tunesmith.tasks.embedding.inference import pool
from tunesmith.train.loop import decides

SCALE = 20.0  # both losses: cosines in [-1, 1] times 20, sentence-transformers' default


@dataclass
class Units:
    """Training rows as indices into `texts` (each distinct text tokenized once): `units[i]` is (anchor,
    positive) or (anchor, positive, negative); `score` per row (scored pairs), `group` per text (labels)."""
    texts: list[str]
    ids: list[list[int]]
    units: list[tuple[int, ...]]
    score: list[float] | None = None
    group: list[int] | None = None

    def __len__(self):
        return len(self.units)


def mnrl(anchors, candidates, masked=None, scale: float = SCALE):
    """Cross-entropy of each anchor over the candidates (row i's answer is candidate i); `masked` (rows x
    candidates, bool) drops false negatives. Returns (loss, correct top-1 count)."""
    logits = scale * anchors @ candidates.T
    if masked is not None:
        logits = logits.masked_fill(masked, float("-inf"))
    target = torch.arange(len(anchors), device=logits.device)
    return F.cross_entropy(logits, target), (logits.detach().argmax(1) == target).sum()


def cosent(u, v, score, scale: float = SCALE):
    """log(1 + sum over pairs i, j with score_i > score_j of exp(scale (cos_j - cos_i)))."""
    s = scale * (u * v).sum(-1)
    diff = s[None, :] - s[:, None]                  # [i, j] = s_j - s_i
    keep = score[:, None] > score[None, :]          # i should outrank j
    diff = diff.masked_fill(~keep, float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.reshape(-1)]), 0)


def no_duplicate_batches(keys: list[tuple[int, ...]], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Every row once, in a (seed, epoch) order, no key (text) twice in a batch. Rows are dealt round-robin
    over as many batches as plain batching makes (the loop's schedule counts them); a row that clashes or
    finds its batch full goes to the next one that takes it, and only when none does is a batch added."""
    order = np.random.default_rng(seed * 1_000_003 + epoch).permutation(len(keys)).tolist()
    batches: list[list[int]] = [[] for _ in range(math.ceil(len(keys) / batch_size))]
    seen: list[set] = [set() for _ in batches]
    for pos, i in enumerate(order):
        n = len(batches)
        for k in range(n):
            j = (pos + k) % n
            if len(batches[j]) < batch_size and seen[j].isdisjoint(keys[i]):
                break
        else:
            batches.append([])
            seen.append(set())
            j = n
        batches[j].append(i)
        seen[j].update(keys[i])
    return batches


class EmbeddingSteps(Steps):
    sums = 3  # loss x rows, rows, anchors whose positive ranked first in the batch
    data_parallel = False  # --nproc: a process's share of the batch would hold only its share of the negatives

    def __init__(self, task, train: Units, val, recipe, pad_id: int, evaluate):
        self.task, self.train, self.val, self.recipe, self.pad_id = task, train, val, recipe, pad_id
        self.evaluate = evaluate  # model → validation metrics (task.evaluate on the validation Examples)
        self.scored = train.score is not None
        self.lengths = [sum(len(train.ids[t]) for t in u) for u in train.units]

    def batches(self, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
        if self.scored:  # CoSENT has no in-batch negatives: the loop's length-grouped batches
            return super().batches(batch_size, seed, epoch)
        return no_duplicate_batches([u[:2] for u in self.train.units], batch_size, seed, epoch)

    def chooses(self, on_event) -> bool:
        """Validation picks the epoch only when it has the rows to tell epochs apart (train/loop.decides)."""
        if self.val is None or not len(self.val):
            return False
        if not decides(len(self.val), 1):
            on_event("info", message=f"validation has {len(self.val)} rows: too few to choose an epoch (needs "
                                     f"300); the last epoch is kept")
            return False
        return True

    def batch(self, share: list[int], device) -> dict:
        rows = [self.train.units[i] for i in share]
        uniq = list(dict.fromkeys(t for u in rows for t in u))
        at = {t: k for k, t in enumerate(uniq)}
        b = {k: v.to(device, non_blocking=True) for k, v in collate([self.train.ids[t] for t in uniq],
                                                                   self.pad_id).items()}
        pos = torch.tensor([[at[t] for t in u] for u in rows], dtype=torch.long)
        text = torch.tensor(rows, dtype=torch.long)
        b["pos"], b["text"] = pos.to(device), text.to(device)
        if self.scored:
            b["score"] = torch.tensor([self.train.score[i] for i in share], dtype=torch.float32, device=device)
        if self.train.group is not None:
            b["group"] = torch.tensor([self.train.group[u[0]] for u in rows], dtype=torch.long, device=device)
        return b

    def loss(self, net, b: dict):
        pos, text = b.pop("pos"), b.pop("text")
        score, group = b.pop("score", None), b.pop("group", None)
        e = pool(net(**b).last_hidden_state, b["attention_mask"])
        n = torch.tensor(float(len(pos)), dtype=torch.float64, device=e.device)
        if score is not None:
            loss = cosent(e[pos[:, 0]], e[pos[:, 1]], score)
            return loss, torch.stack([loss.detach().double() * n, n, torch.zeros_like(n)])
        cand = torch.cat([pos[:, k] for k in range(1, pos.shape[1])])      # positives, then negatives
        cand_text = torch.cat([text[:, k] for k in range(1, text.shape[1])])
        own = torch.eye(len(pos), len(cand), dtype=torch.bool, device=e.device)
        same = (cand_text[None, :] == text[:, 1:2]) | (cand_text[None, :] == text[:, :1])
        if group is not None:  # labelled texts: positives of the same label are no negatives
            same |= group[:, None] == torch.cat([group] * (pos.shape[1] - 1))[None, :]
        loss, correct = mnrl(e[pos[:, 0]], e[cand], same & ~own)
        return loss, torch.stack([loss.detach().double() * n, n, correct.double()])

    def host_counts(self, mine: list[int]) -> tuple[int, int]:
        return len(mine), sum(self.lengths[i] for i in mine)

    def epoch_record(self, sums: list[float], seen: int, tokens: int, seconds: float) -> dict:
        rows = max(sums[1], 1.0)
        rec = {"train_loss": sums[0] / rows}
        if not self.scored:
            rec["train_accuracy"] = sums[2] / rows  # in-batch top-1: the anchor's positive ranked first
        return {**rec, "epoch_seconds": round(seconds, 3),
                "train_samples_per_second": round(seen / max(seconds, 1e-9), 2)}

    def validate(self, model):
        m = self.evaluate(model)
        keys = [k for k in ("mrr@10", "ndcg@10", "recall@1", "spearman", "knn_accuracy") if k in m]
        metric = self.recipe.metric
        return {f"val_{k}": m[k] for k in keys}, m[metric], True
