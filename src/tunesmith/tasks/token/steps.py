"""Token classification's steps for the shared loop (train/loop.py): windows of token ids with a tag id on
each word's first sub-token, cross-entropy over those positions only (-100 elsewhere), entity F1 on the
validation sentences after each epoch."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.data.batching import collate
from tunesmith.tasks.base import Steps
from tunesmith.tasks.token.encoding import IGNORE
from tunesmith.train.loop import decides


class TokenSteps(Steps):
    lazy_rows = True  # CPU engine: only the rows of the input embedding a batch uses are updated
    sums = 3          # device sums: loss x labelled words, correctly tagged words, labelled words

    def __init__(self, task, train, val, recipe, pad_id: int, bf16: bool, device):
        self.task, self.train, self.val, self.recipe = task, train, val, recipe
        self.pad_id, self.bf16, self.device = pad_id, bf16, device
        self.lengths = [len(x) for x in train.ids]
        self.targets = [sum(t != IGNORE for t in lab) for lab in train.labels]  # labelled words per window

    def chooses(self, on_event) -> bool:
        """Validation chooses the epoch when it holds enough entities (the classifier's rule, with gold
        entities as the units and entity types as the classes: train/loop.decides)."""
        if self.val is None or not len(self.val):
            return False
        n = int(sum(sum(1 for t in g if self.task.labels[t].startswith("B-")) for g in self.val.gold))
        k = len(self.task.types)
        if not decides(n, k):
            on_event("info", message=f"validation has {n} entities: too few to choose an epoch (needs "
                                     f"{max(300, 10 * k)}); the last epoch is kept")
            return False
        return True

    def batch(self, share: list[int], device) -> dict:
        b = {k: v.to(device, non_blocking=True) for k, v in collate([self.train.ids[i] for i in share],
                                                                   self.pad_id).items()}
        lab = collate([self.train.labels[i] for i in share], IGNORE)["input_ids"]
        b["labels"] = lab.to(device, non_blocking=True)
        return b

    def weight(self, mine: list[int], idx: list[int]) -> float:
        """This process's share of the batch's labelled words (the loss is a mean over words)."""
        return sum(self.targets[i] for i in mine) / max(sum(self.targets[i] for i in idx), 1)

    def loss(self, net, b: dict):
        labels = b.pop("labels")
        logits = net(**b).logits
        flat = labels.reshape(-1)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), flat, ignore_index=IGNORE,
                               label_smoothing=self.recipe.label_smoothing)
        keep = flat != IGNORE
        n = keep.sum()
        correct = ((logits.detach().argmax(-1).reshape(-1) == flat) & keep).sum()
        return loss, torch.stack([loss.detach().double() * n, correct.double(), n.double()])

    def host_counts(self, mine: list[int]) -> tuple[int, int]:
        return len(mine), 0

    def epoch_record(self, sums: list[float], seen: int, tokens: int, seconds: float) -> dict:
        words = max(sums[2], 1.0)
        return {"train_loss": sums[0] / words, "train_token_accuracy": sums[1] / words,
                "epoch_seconds": round(seconds, 3), "train_samples_per_second": round(seen / max(seconds, 1e-9), 2)}

    def validate(self, model):
        m = self.task.evaluate(model, self.val, self.pad_id, self.recipe.batch_size * 2, self.bf16, self.device,
                               with_ci=False)
        # entity F1 first: the CLI's epoch line shows the first two validation figures
        record = {"val_loss": m["loss"], **{f"val_{k}": m[k] for k in ("f1", "recall", "precision", "token_accuracy")}}
        metric = self.recipe.metric
        return record, m[metric], metric != "loss"


def word_loss(word_logits: list[np.ndarray], gold: list[np.ndarray]) -> float:
    """Mean cross-entropy over words (each word's prediction from the window that answers for it)."""
    if not word_logits:
        return 0.0
    z = torch.from_numpy(np.concatenate(word_logits))
    y = torch.from_numpy(np.concatenate(gold))
    return float(F.cross_entropy(z, y)) if len(y) else 0.0
