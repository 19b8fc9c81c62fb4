"""The embedding task's steps for the shared loop (train/loop.py): a batch is rows of (anchor, positive[,
negative]) or scored pairs; their distinct texts go through the encoder in up to PARTS length-sorted
chunks (`embed`; one forward under --nproc, as DDP expects), are mean-pooled and L2-normalised, and scored by

- MultipleNegativesRankingLoss (Henderson et al. 2017; sentence-transformers' default): each anchor must
  pick its positive among all the batch's positives and negatives, cross-entropy over cosine x 20;
- CoSENT (Su 2022) for scored pairs: every pair scored higher must have the higher cosine, log(1 + sum
  exp(20 (cos_lower - cos_higher))). Better than a regression on cosines (sentence-transformers' docs).

In-batch negatives are only negatives when they differ from the answer: the batches never hold a text twice
as an anchor or a positive (`no_duplicate_batches`), and a candidate equal to a row's own texts or sharing its
label (labelled texts) is masked out of that row's softmax.

A row may carry any number of negatives (a triplet's, or the K that --hard-negatives mined: negatives.py);
every one is a candidate of every row. A row that found fewer than K holds PAD in the rest, masked out.

--mini-batch N embeds the batch N texts at a time the GradCache way (`cached_loss`): the loss then costs the
activations of N texts instead of the whole batch's, so the in-batch negatives can grow past what fits.
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
from tunesmith.train import distributed
from tunesmith.train.loop import decides

SCALE = 20.0  # both losses: cosines in [-1, 1] times 20, sentence-transformers' default
PAD = -1      # a unit's missing negative (a row that found fewer than --hard-negatives K)
PARTS = 4     # training forwards a batch's texts in up to this many length-sorted chunks (`embed`)


@dataclass
class Units:
    """Training rows as indices into `texts` (each distinct text tokenized once): `units[i]` is (anchor,
    positive) or (anchor, positive, negative, ...), PAD for a missing negative; `score` per row (scored pairs),
    `group` per text (labels)."""
    texts: list[str]
    ids: list[list[int]]
    units: list[tuple[int, ...]]
    score: list[float] | None = None
    group: list[int] | None = None

    def __len__(self):
        return len(self.units)


def mnrl(anchors, candidates, masked=None, scale: float = SCALE, first: int = 0):
    """Cross-entropy of each anchor over the candidates (row i's answer is candidate first + i); `masked`
    (rows x candidates, bool) drops false negatives. Returns (loss, correct top-1 count)."""
    logits = scale * anchors @ candidates.T
    if masked is not None:
        logits = logits.masked_fill(masked, float("-inf"))
    target = first + torch.arange(len(anchors), device=logits.device)
    return F.cross_entropy(logits, target), (logits.detach().argmax(1) == target).sum()


def cosent(u, v, score, scale: float = SCALE, gather: bool = False):
    """log(1 + sum over pairs i, j with score_i > score_j of exp(scale (cos_j - cos_i))). `gather` (--nproc):
    over every process's pairs, so each process computes the whole batch's loss; its gradient reaches each
    process's own pairs through the gather, and DDP's average of the processes' gradients (each loss weighted
    by the process's share of the rows: the loop's weight) is the one-process gradient."""
    s = scale * (u * v).sum(-1)
    valid = torch.ones_like(score, dtype=torch.bool)
    if gather:
        s, score, valid = _gather_scores(s, score)
    diff = s[None, :] - s[:, None]                  # [i, j] = s_j - s_i
    keep = (score[:, None] > score[None, :]) & valid[:, None] & valid[None, :]  # i should outrank j
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


def embed(net, b: dict, parts: int = 1) -> torch.Tensor:
    """Mean-pooled unit vectors (float32) of a tokenized batch; `parts` > 1: its texts in that many
    length-sorted chunks, each padded only to its own longest (same vectors, up to rounding: padding is
    masked out of attention and of the mean).

    Why: a batch's distinct texts are collated to its longest text, and short-text pairs are mostly
    padding. BANKING77 question pairs at batch 32 (64 texts, ~16 tokens each, the longest ~50): 31% of the
    tokens one collate pays for are real, 69% with 4 chunks (sentence-transformers pads anchors and
    positives apart: 2 chunks of a sort, 49%). Measured gain: docs/performance.md, embeddings."""
    n = len(b["input_ids"])
    if parts <= 1 or n < 2 * parts:
        return pool(net(**b).last_hidden_state, b["attention_mask"])
    pieces = chunks(b, math.ceil(n / parts))
    return in_batch_order(pieces, [embed(net, sub) for _, sub in pieces])


def in_batch_order(pieces: list[tuple[torch.Tensor, dict]], vecs: list[torch.Tensor]) -> torch.Tensor:
    """The vectors of `chunks(b, ...)`'s pieces, one tensor a piece, back in the batch's row order."""
    return torch.cat(vecs)[torch.argsort(torch.cat([c for c, _ in pieces]))]


def chunks(b: dict, size: int) -> list[tuple[torch.Tensor, dict]]:
    """The batch's texts `size` at a time, longest first, each chunk cut to its own longest text (less
    padding to embed): [(row indices into b, sub-batch)]."""
    mask = b["attention_mask"]
    order = torch.argsort(mask.sum(1), descending=True, stable=True)
    out = []
    for c in order.split(size):
        width = int(mask[c].sum(1).max())
        out.append((c, {k: v[c][:, :width] for k, v in b.items()}))
    return out


class _Rng:
    """torch's RNG state (CPU, and the CUDA device's) at a chunk's first forward, restored for its second:
    dropout draws the same masks, so the cached gradient belongs to the embedding it is applied to. The CPU
    engine's fast dropout (accel/fast_dropout.py) draws each call's seed from torch's CPU RNG, so this
    replays it too (as sentence-transformers' RandContext does)."""

    def __init__(self, device):
        self.device = device if device.type == "cuda" else None
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    def restore(self):
        torch.set_rng_state(self.cpu)
        if self.device is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def cached_loss(net, b: dict, size: int, score):
    """The loss `score(embeddings)` → (loss, sums) with the embeddings computed `size` texts at a time, the
    way of sentence-transformers' CachedMultipleNegativesRankingLoss (GradCache, Gao et al. 2021):

    1. every chunk forward without a graph (its RNG state kept), the embeddings concatenated;
    2. the loss on those embeddings as leaves, and d loss / d embeddings (cached);
    3. the loss returned as a leaf whose gradient hook, when the loop backpropagates `loss * w`, forwards
       each chunk again WITH a graph (same RNG state, same autocast) and backpropagates the cached
       gradients times w into the weights.

    The gradient is the plain loss's (same masks, same weights), so gradient accumulation and loss weights
    hold. Memory: one chunk's activations instead of the batch's. Cost: one extra forward per chunk (about
    a third more compute a step)."""
    device = b["input_ids"].device
    parts = chunks(b, size)
    states, embs = [], []
    with torch.no_grad():
        for _, sub in parts:
            states.append(_Rng(device))
            embs.append(embed(net, sub))
    e = in_batch_order(parts, embs).requires_grad_(True)
    with torch.enable_grad():
        loss, sums = score(e)
        (grad,) = torch.autograd.grad(loss, e, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(e)
    kind = device.type
    amp = (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))  # the hook runs outside autocast

    def replay(g):
        with torch.enable_grad(), torch.random.fork_rng(devices=[device] if kind == "cuda" else []), \
                torch.autocast(kind, dtype=amp[1], enabled=amp[0]):
            for (c, sub), rng in zip(parts, states):
                rng.restore()
                embed(net, sub).backward(grad[c] * g)
        return None

    out = loss.detach().requires_grad_(True)
    out.register_hook(replay)
    return out, sums


class _Shares:
    """Every process's share of a batch-sized tensor, in rank order, each padded to the largest share
    (all_gather needs equal shapes). `graph` keeps the autograd graph (torch.distributed.nn's all_gather: a
    process's loss sends gradients to the others' shares); `plain` does not."""

    def __init__(self, n: int, device):
        import torch.distributed as dist

        self.rank, world = distributed.world()
        sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([n], device=device))
        self.sizes = [int(x.item()) for x in sizes]
        self.most = max(self.sizes)
        self.pad = self.most - n

    def _padded(self, t, fill):
        return (torch.cat([t, t.new_full((self.pad, *t.shape[1:]), fill)]) if self.pad else t).contiguous()

    def graph(self, t, fill=0.0):
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(self._padded(t, fill)))

    def plain(self, t, fill):
        import torch.distributed as dist

        p = self._padded(t, fill)
        out = [torch.empty_like(p) for _ in self.sizes]
        dist.all_gather(out, p)
        return torch.cat(out)

    def real(self, device):
        """Which gathered entries are a process's own, not padding."""
        return torch.cat([torch.arange(self.most, device=device) < n for n in self.sizes])


def _gather_scores(s, score):
    """Every process's scaled cosines (with their graph) and gold scores; the third tensor says which entries
    are real."""
    sh = _Shares(len(s), s.device)
    return sh.graph(s), sh.plain(score, 0.0), sh.real(s.device)


def gathered(vecs, text, group, cand):
    """Every process's candidates, in rank order, each process's padded to the largest share (the padding is
    PAD: no candidate of any row), and where this process's own begin. The vectors keep their graph
    (torch.distributed.nn's all_gather: a process's loss sends gradients to the others' candidates), so the
    DDP average of the processes' gradients is the one-process gradient of the whole batch (test:
    tests/embedding/test_embedding_ddp.py)."""
    sh = _Shares(len(vecs), vecs.device)
    return (sh.graph(vecs), sh.plain(text, PAD), sh.plain(group, PAD) if group is not None else None,
            sh.plain(cand, PAD), sh.rank * sh.most)


class EmbeddingSteps(Steps):
    sums = 3  # loss x rows, rows, anchors whose positive ranked first in the batch
    # CPU engine: only the input embedding's rows a batch uses get a gradient and an update. Dense, each of
    # the batch's PARTS chunks zero-filled a 47 MB gradient of the word-embedding table in its backward:
    # 3.4 s of a 16 s epoch over 1,000 BANKING77 pairs (torch.profiler: aten::fill_ under EmbeddingBackward).
    lazy_rows = True

    def __init__(self, task, train: Units, val, recipe, pad_id: int, evaluate):
        self.task, self.train, self.val, self.recipe, self.pad_id = task, train, val, recipe, pad_id
        self.evaluate = evaluate  # model → validation metrics (task.evaluate on the validation Examples)
        self.scored = train.score is not None
        # --nproc: in-batch negatives and CoSENT's pairs are gathered from every process (`gathered`,
        # `cosent`); GradCache's second forward is one DDP cannot sync: one process only.
        self.data_parallel = not recipe.mini_batch
        self.one_process_why = "--mini-batch: GradCache's second forward is not one DDP can sync"
        self.lengths = [sum(len(train.ids[t]) for t in u if t != PAD) for u in train.units]
        # Length-sorted chunks of the batch's texts (`embed`); one forward under --nproc, as DDP expects.
        self.parts = PARTS if distributed.world()[1] == 1 else 1

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
        uniq = list(dict.fromkeys(t for u in rows for t in u if t != PAD))
        at = {t: k for k, t in enumerate(uniq)}
        at[PAD] = PAD
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
        rest = (pos, text, score, group)
        if self.recipe.mini_batch and torch.is_grad_enabled() and len(b["input_ids"]) > self.recipe.mini_batch:
            return cached_loss(net, b, self.recipe.mini_batch, lambda e: self.of_embeddings(e, *rest))
        return self.of_embeddings(embed(net, b, self.parts), *rest)

    @staticmethod
    def of_embeddings(e, pos, text, score=None, group=None):
        """(loss, sums) of the batch's embeddings `e` (one per distinct text, `pos` indexing them)."""
        n = torch.tensor(float(len(pos)), dtype=torch.float64, device=e.device)
        if score is not None:
            loss = cosent(e[pos[:, 0]], e[pos[:, 1]], score,
                          gather=distributed.world()[1] > 1 and torch.is_grad_enabled())
            return loss, torch.stack([loss.detach().double() * n, n, torch.zeros_like(n)])
        cand = torch.cat([pos[:, k] for k in range(1, pos.shape[1])])      # positives, then negatives
        cand_text = torch.cat([text[:, k] for k in range(1, text.shape[1])])
        cand_group = torch.cat([group] * (pos.shape[1] - 1)) if group is not None else None
        vecs, first = e[cand.clamp(min=0)], 0
        if distributed.world()[1] > 1 and torch.is_grad_enabled():  # --nproc: every process's candidates
            vecs, cand_text, cand_group, cand, first = gathered(vecs, cand_text, cand_group, cand)
        own = torch.zeros(len(pos), len(cand), dtype=torch.bool, device=e.device)
        own[torch.arange(len(pos)), first + torch.arange(len(pos))] = True
        same = (cand_text[None, :] == text[:, 1:2]) | (cand_text[None, :] == text[:, :1])
        if group is not None:  # labelled texts: positives of the same label are no negatives
            same |= group[:, None] == cand_group[None, :]
        same |= (cand == PAD)[None, :]  # a negative a row did not find: no candidate of any row
        loss, correct = mnrl(e[pos[:, 0]], vecs, same & ~own, first=first)
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
