"""Sequence-to-sequence steps for the shared loop (train/loop.py): source ids into the encoder, the target
teacher-forced into the decoder (shifted right behind its start token), cross-entropy on target tokens
(-100 on padding); after each epoch chrF of greedy generations on validation, or its loss when it is tiny."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tunesmith.accel.precision import autocast
from tunesmith.data.batching import collate, inference_batches
from tunesmith.tasks.base import Steps
from tunesmith.tasks.seq2seq.data import Pairs

IGNORE = -100
VAL_CHRF_MIN = 50  # validation pairs below which chrF is too coarse to choose epochs by: loss chooses


@dataclass
class Encoded:
    src: list[list[int]]
    tgt: list[list[int]]  # labels: the target's tokens ending with EOS, without the decoder's start token
    pairs: Pairs
    cut: dict             # sources and targets over --max-length, cut

    def __len__(self):
        return len(self.src)


def encode(tok, pairs: Pairs, max_length: int, start: int, eos: int) -> Encoded:
    src_full = tok(list(pairs.sources), add_special_tokens=True)["input_ids"]
    tgt_full = tok(text_target=list(pairs.targets), add_special_tokens=True)["input_ids"]
    tgt = []
    for t in tgt_full:
        t = t[1:] if t and t[0] == start else t  # BERT's [CLS] is the decoder's start: not a label
        t = t[:max_length - 1] + [eos] if (not t or t[-1] != eos or len(t) > max_length) else t
        tgt.append(t)
    src = [s if len(s) <= max_length else s[:max_length - 1] + s[-1:] for s in src_full]  # keep the closing token
    cut = {"sources": sum(len(s) > max_length for s in src_full), "targets": sum(len(t) > max_length for t in tgt_full)}
    return Encoded(src, tgt, pairs, cut)


def batch_of(enc: Encoded, idx: list[int], pad: int, start: int) -> dict:
    b = collate([enc.src[i] for i in idx], pad)
    labels = collate([enc.tgt[i] for i in idx], IGNORE)["input_ids"]
    dec = collate([[start] + enc.tgt[i][:-1] for i in idx], pad)["input_ids"]
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "decoder_input_ids": dec,
            "labels": labels}


def token_loss(net, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy over target tokens, their count). The vocabulary-sized projection reads only
    the positions that carry a label (`_labelled_only`)."""
    labels = b["labels"]
    keep = labels != IGNORE
    kw = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"], decoder_input_ids=b["decoder_input_ids"],
              use_cache=False)
    model = getattr(net, "module", net)  # DDP's wrapper
    logits = None
    if not getattr(model, "_tunesmith_full_logits", False):
        try:
            with _labelled_only(model, keep) as ran:
                out = net(**kw).logits
            if ran() and out.dim() == 2:
                logits = out
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, IndexError):  # a head that reshapes what the projection gave: the plain route
            pass
        if logits is None:
            model._tunesmith_full_logits = True
    if logits is None:
        logits = net(**kw).logits[keep]
    loss = F.cross_entropy(logits.float(), labels[keep], reduction="sum")
    return loss, keep.sum()


@contextlib.contextmanager
def _labelled_only(model, keep: torch.Tensor):
    """Inside: the model's output projection (`get_output_embeddings`, the vocabulary-sized Linear) gets only
    the decoder states at `keep`, so the logits are (labelled tokens, vocabulary). Yields a callable saying
    whether it ran so.

    Why: that projection weighs as much as the rest of a small decoder. Warm-started minilm: 384 x 30,522
    weights (11.7M), about the 6-layer decoder's 12.4M per target token, and its fp32 logits and softmax are
    memory-bound.
    Padding positions only produce logit rows the loss throws away (the Trainer pays for them all). A forward
    pre-hook serves every head whose logits leave the projection unreshaped: BART and Marian add a broadcast
    bias after it, T5 scales the states and BERT runs its transform before it."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    ran = []

    def pick(_module, args):
        if args and args[0].shape[:-1] == keep.shape:
            ran.append(True)
            return (args[0][keep], *args[1:])
        return None

    handle = head.register_forward_pre_hook(pick) if head is not None else None
    try:
        yield lambda: bool(ran)
    finally:
        if handle is not None:
            handle.remove()


@torch.no_grad()
def split_loss(model, enc: Encoded, pad: int, start: int, batch_size: int, bf16: bool, device) -> float:
    """Mean teacher-forced loss per target token of a split."""
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for idx in inference_batches([len(s) + len(t) for s, t in zip(enc.src, enc.tgt)], batch_size):
        b = {k: v.to(device) for k, v in batch_of(enc, idx, pad, start).items()}
        with autocast(bf16, device):
            s, c = token_loss(model, b)
        total, n = total + float(s), n + int(c)
    model.train(was)
    return total / max(n, 1)


class Seq2SeqSteps(Steps):
    lazy_rows = False  # no sparse rows of an embedding table the decoder's LM head also reads
    sums = 2           # device sums: target-token loss, target tokens

    def __init__(self, task, train: Encoded, val: Encoded | None, recipe, pad: int, start: int, bf16: bool, device):
        self.task, self.train, self.val, self.recipe = task, train, val, recipe
        self.pad, self.start_id, self.bf16, self.device = pad, start, bf16, device
        self.lengths = [len(s) + len(t) for s, t in zip(train.src, train.tgt)]
        self.targets = [len(t) for t in train.tgt]
        self.by = recipe.metric

    def chooses(self, on_event) -> bool:
        if self.val is None or not len(self.val):
            return False
        if self.by == "chrf" and len(self.val) < VAL_CHRF_MIN:
            on_event("info", message=f"validation has {len(self.val)} pairs: too few for chrF to choose an epoch "
                                     f"(needs {VAL_CHRF_MIN}); its loss chooses")
            self.by = "loss"
        return True

    def batch(self, share: list[int], device) -> dict:
        return {k: v.to(device, non_blocking=True) for k, v in batch_of(self.train, share, self.pad, self.start_id).items()}

    def weight(self, mine: list[int], idx: list[int]) -> float:
        return sum(self.targets[i] for i in mine) / max(sum(self.targets[i] for i in idx), 1)

    def loss(self, net, b: dict):
        s, n = token_loss(net, b)
        return s / n.clamp(min=1), torch.stack([s.detach().double(), n.double()])

    def host_counts(self, mine: list[int]) -> tuple[int, int]:
        return len(mine), sum(self.lengths[i] for i in mine)

    def epoch_record(self, sums: list[float], seen: int, tokens: int, seconds: float) -> dict:
        return {"train_loss": sums[0] / max(sums[1], 1), "epoch_seconds": round(seconds, 3),
                "train_samples_per_second": round(seen / max(seconds, 1e-9), 2),
                "train_tokens_per_second": round(tokens / max(seconds, 1e-9), 1)}

    def validate(self, model):
        bs = self.recipe.batch_size * 2
        loss = split_loss(model, self.val, self.pad, self.start_id, bs, self.bf16, self.device)
        record = {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50))}
        if self.by == "loss":
            return record, loss, False
        # greedy, not the run's beam search: an epoch's choice needs the ranking, at a quarter of the cost
        m = self.task.score_split(model, self.val, self.recipe, self.bf16, self.device, num_beams=1)
        return {"val_chrf": m["chrf"], **record}, m["chrf"], True
