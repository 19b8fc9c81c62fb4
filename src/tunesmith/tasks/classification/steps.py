"""Classification's steps for the shared loop (train/loop.py): rows of token ids, the task's loss on the
model's logits, running accuracy from the training forward passes, validation metrics per epoch.

With `head` / `freeze:K` the frozen part's outputs come from train/feature_cache.py (computed once, in
the first epoch's time); with `head` on a known architecture the head runs on those cached features
directly (train/heads.py), in fp32: its matmuls are batch x hidden, too small for bf16 to pay back
its casts.
"""
from __future__ import annotations

import contextlib

import torch

from tunesmith.tasks.base import Steps
from tunesmith.train import feature_cache, heads
from tunesmith.data.batching import collate
from tunesmith.train.loop import decides, evaluate_split
from tunesmith.train.strategies import frozen_layers
from tunesmith.train.strategies.layers import num_layers


class ClassifierSteps(Steps):
    lazy_rows = True
    sums = 2  # device sums: loss x rows, correct predictions (rows are counted on the host)

    def __init__(self, task, train, val, recipe, pad_id: int, bf16: bool, device):
        self.task, self.train, self.val, self.recipe = task, train, val, recipe
        self.pad_id, self.bf16, self.device = pad_id, bf16, device
        self.lengths = [len(x) for x in train.ids]
        self.replay_train = self.replay_val = None

    def module(self, model):
        return model

    def start(self, model, distributed: bool) -> None:
        """Decides the frozen-feature cache once the model sits on its device (and DDP is known)."""
        self.model = model
        # K when the embeddings and bottom K layers are frozen (head, freeze:K), else 0
        self.k = 0 if hasattr(model, "peft_config") else frozen_layers(model, self.recipe.strategy)
        self.use_cache = self.k > 0 and feature_cache.mode() != "off"
        # The direct head bypasses DDP's forward, which DDP's gradient sync needs: single process only.
        self.direct = (self.use_cache and self.k == num_layers(model) and not distributed
                       and heads.for_model(model) is not None)
        self.masters = not self.direct  # the direct head computes in fp32 on cached features
        self.probe_memory = not self.direct  # its loss reads the replayed features (made in epoch_start)
        self.autocast = not self.direct

    def chooses(self, on_event) -> bool:
        n_val, n_classes = (len(self.val) if self.val is not None else 0), len(self.task.labels)
        choose = self.val is not None and decides(n_val, n_classes)
        if self.val is not None and n_val and not choose:
            on_event("info", message=f"validation has {n_val} rows: too few to choose an epoch "
                                     f"(needs {max(300, 10 * n_classes)}); the last epoch is kept")
        return choose

    def epoch_start(self, net) -> contextlib.AbstractContextManager:
        """Train mode, and the cached features replayed under the frozen layers (built in the first
        epoch, inside its clock: it pays for them)."""
        model, k = self.model, self.k
        if self.use_cache and self.replay_train is None:
            feats = feature_cache.features(model, k, self.train.ids, self.pad_id, self.bf16, self.device,
                                           self.recipe.max_length)
            self.replay_train = feature_cache.Replay(model, k, feats, ids=self.train.ids if self.direct else None,
                                                     pad_id=self.pad_id)
        net.train()
        if k:
            feature_cache.frozen_eval(model, k)  # no dropout below K: the first epoch matches cached ones
        return feature_cache.replay_or_null(self.replay_train)

    def batch(self, share: list[int], device) -> dict:
        if self.replay_train is not None:
            self.replay_train.select(share)
        # non_blocking: a blocking copy to CUDA waits for the queued steps; these host tensors are fresh
        b = {"share": share, "y": self.train.targets[share].to(device, non_blocking=True)}
        if not self.direct:
            b.update({n: v.to(device, non_blocking=True)
                      for n, v in collate([self.train.ids[i] for i in share], self.pad_id).items()})
        return b

    def weight(self, mine: list[int], idx: list[int]) -> float:
        return len(mine) / len(idx)

    def loss(self, net, b: dict):
        y, share = b.pop("y"), b.pop("share")
        logits = self.replay_train.logits(share) if self.direct else net(**b).logits
        loss = self.task.loss(logits, y, self.recipe.label_smoothing)
        n = len(share)
        correct = (logits.argmax(-1) == y).sum() if y.ndim == 1 else torch.zeros((), device=y.device)
        # Summed on the device in float64, as the float() of each loss was summed on the host.
        return loss, torch.stack([loss.detach().double() * n, correct.double()])

    def host_counts(self, mine: list[int]) -> tuple[int, int]:
        return len(mine), 0

    def epoch_record(self, sums: list[float], seen: int, tokens: int, seconds: float) -> dict:
        record = {"train_loss": sums[0] / max(seen, 1), "epoch_seconds": round(seconds, 3),
                  "train_samples_per_second": round(seen / max(seconds, 1e-9), 2)}
        if self.train.targets.ndim == 1:
            record["train_accuracy"] = sums[1] / max(seen, 1)
        return record

    def validate(self, model):
        if self.use_cache and self.replay_val is None:
            feats = feature_cache.features(model, self.k, self.val.ids, self.pad_id, self.bf16, self.device,
                                           self.recipe.max_length)
            self.replay_val = feature_cache.Replay(model, self.k, feats, ids=self.val.ids, pad_id=self.pad_id)
        # Every process scores the whole validation set: identical early-stopping decisions.
        m, vloss, _ = evaluate_split(model, self.task, self.val, self.pad_id, self.recipe.batch_size * 2, self.bf16,
                                     self.device, replay=self.replay_val)
        record = {"val_loss": vloss, **{f"val_{n}": v for n, v in m.items() if n != "n"}}
        metric = self.recipe.metric
        return record, (vloss if metric == "loss" else m[metric]), metric != "loss"
