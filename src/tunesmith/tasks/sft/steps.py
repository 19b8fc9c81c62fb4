"""Instruction tuning's steps for the shared loop (train/loop.py): packed rows of examples, a loss on
response tokens only, and the held-out response loss that chooses the epoch.

What makes it faster than a generic trainer: batches are grouped by length (little padding, the
loop's batching), and the LM head runs only at positions that carry a label (prompt and padding
positions never produce a vocabulary-sized logit row).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tunesmith.tasks.base import Steps
from tunesmith.tasks.sft.data import IGNORE, SFTData
from tunesmith.data.batching import inference_batches
from tunesmith.accel.precision import autocast


def collate_sft(data: SFTData, units: list[list[int]], pad_id: int) -> dict:
    """Rows of concatenated examples, right-padded. Position ids restart at every example (and at the
    padding), and no attention mask is passed: transformers then reads the restarts as sequence
    boundaries and builds a block-diagonal causal mask, so packed examples never see each other."""
    n = max(sum(len(data.ids[i]) for i in u) for u in units)
    ids = torch.full((len(units), n), pad_id, dtype=torch.long)
    labels = torch.full((len(units), n), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(units), n), dtype=torch.long)
    seg = torch.full((len(units), n), -1, dtype=torch.long)   # example index per position, -1 = padding
    for r, u in enumerate(units):
        at = 0
        for i in u:
            k = len(data.ids[i])
            ids[r, at:at + k] = torch.tensor(data.ids[i])
            labels[r, at:at + k] = torch.tensor(data.labels[i])
            pos[r, at:at + k] = torch.arange(k)
            seg[r, at:at + k] = i
            at += k
        pos[r, at:] = torch.arange(n - at)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "segments": seg}


def _parts(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base, base.base_model, base.get_output_embeddings()


def token_losses(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-target-token losses, their example index, their position mask) for one batch."""
    base, backbone, head = _parts(model)
    targets = batch["labels"][:, 1:]
    sel = targets != IGNORE
    kw = dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    if getattr(base.config, "final_logit_softcapping", None) or getattr(base.config, "logit_scale", None):
        logits = model(**kw).logits[:, :-1][sel]  # heads with extra scaling: use the model's own
    else:
        h = backbone(**kw).last_hidden_state[:, :-1]
        logits = head(h[sel])
    loss = F.cross_entropy(logits.float(), targets[sel], reduction="none")
    return loss, batch["segments"][:, 1:][sel], sel


class TokenLosses(torch.nn.Module):
    """The module the loop trains (and DDP wraps): its forward is token_losses, so DDP's gradient sync is
    prepared by a forward that never builds the full vocabulary-sized logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return token_losses(self.model, batch)


@torch.no_grad()
def response_loss(model, data: SFTData, pad_id: int, batch_size: int, bf16: bool, device) -> dict:
    """Mean loss per response token over `data` (unpacked), its perplexity, and per-example sums."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    per_example = torch.zeros(len(data), dtype=torch.float64)
    for idx in inference_batches([len(x) for x in data.ids], batch_size):
        b = {k: v.to(device) for k, v in collate_sft(data, [[i] for i in idx], pad_id).items()}
        with autocast(bf16, device):
            loss, seg, _ = token_losses(model, b)
        total += float(loss.double().sum())
        count += loss.numel()
        per_example.index_add_(0, seg.cpu(), loss.double().cpu())
    model.train(was_training)
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50)), "tokens": count, "per_example": per_example}


class SFTSteps(Steps):
    """Units are packed rows (one example each without --packing); a unit's weight in the global batch is
    its number of target tokens, so --nproc averages exactly as one process does over the whole batch."""
    masters = False      # master weights and lazy rows: not measured on causal LMs
    lazy_rows = False
    sums = 2             # device sums: response-token loss, response tokens

    def __init__(self, train: SFTData, val: SFTData | None, recipe, pad_id: int, bf16: bool, device):
        self.train, self.val, self.recipe, self.pad_id, self.bf16, self.device = train, val, recipe, pad_id, bf16, device
        self.lengths = train.unit_lengths()
        # Target tokens per unit, counted on the host from the labels (as token_losses' shifted mask sees them).
        self.targets = []
        for u in train.units:
            labels = [l for i in u for l in train.labels[i]]
            self.targets.append(sum(1 for l in labels[1:] if l != IGNORE))

    def module(self, model):
        return TokenLosses(model)

    def chooses(self, on_event) -> bool:
        return self.val is not None and len(self.val) > 0

    def batch(self, share: list[int], device) -> dict:
        units = [self.train.units[u] for u in share]
        # non_blocking: a blocking copy to CUDA waits for the queued steps (fresh host tensors: safe)
        return {k: v.to(device, non_blocking=True) for k, v in collate_sft(self.train, units, self.pad_id).items()}

    def weight(self, mine: list[int], idx: list[int]) -> float:
        total = sum(self.targets[u] for u in idx)
        return sum(self.targets[u] for u in mine) / max(total, 1)

    def loss(self, net, batch: dict):
        loss_tok, _, _ = net(**batch)
        loss = loss_tok.mean() if loss_tok.numel() else loss_tok.sum()
        # torch.full fills on the device: no host-to-device copy to wait for (numel is known on the host)
        n = torch.full((), float(loss_tok.numel()), dtype=torch.float64, device=loss_tok.device)
        return loss, torch.stack([loss_tok.detach().sum().double(), n])

    def host_counts(self, mine: list[int]) -> tuple[int, int]:
        """(examples, tokens) of this process's share: known on the host, no device read."""
        return sum(len(self.train.units[u]) for u in mine), sum(self.lengths[u] for u in mine)

    def epoch_record(self, sums: list[float], seen: int, tokens: int, seconds: float) -> dict:
        return {"train_loss": sums[0] / max(sums[1], 1), "epoch_seconds": round(seconds, 3),
                "train_samples_per_second": round(seen / max(seconds, 1e-9), 2),
                "train_tokens_per_second": round(tokens / max(seconds, 1e-9), 1)}

    def validate(self, model):
        r = response_loss(model, self.val, self.pad_id, self.recipe.batch_size * 2, self.bf16, self.device)
        return {"val_loss": r["loss"], "val_perplexity": r["perplexity"]}, r["loss"], False  # lower is better
