"""The training loop, top to bottom in one place.

AdamW with warmup and decay, gradient accumulation and clipping, bf16 autocast, validation after each
epoch, early stopping, best checkpoint restored at the end. Ctrl-C stops at the next optimizer step
boundary and writes a checkpoint; resuming replays the exact same batches and RNG, so a resumed run
ends at the same metrics as an uninterrupted one.

With `head` / `freeze:K` the frozen part's outputs come from train/feature_cache.py (computed once, in
the first epoch's time). Under `--nproc N` (train/distributed.py) the model is wrapped in DDP by
Accelerate and each process takes its share of every global batch.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.predict import predict_logits
from tunesmith.train import cpu_malloc, distributed, fast_dropout, feature_cache, heads, master_weights
from tunesmith.train.batching import collate, epoch_batches
from tunesmith.train.checkpoint import (atomic_save, load_resume, load_trainable, load_weights, save_resume,
                                       trainable_state)
from tunesmith.train.optim import lazy_embeddings, optimizer_and_schedule, optimizer_step
from tunesmith.train.precision import autocast
from tunesmith.train.strategies import frozen_layers
from tunesmith.train.strategies.layers import num_layers


class Interrupted(TunesmithError):
    """Training stopped on request (Ctrl-C); a checkpoint was written."""

    exit_code = 130


@dataclass
class Split:
    """Tokenized examples with their targets (class ids or indicator rows)."""
    ids: list[list[int]]
    targets: torch.Tensor

    def __len__(self):
        return len(self.ids)


@dataclass
class FitResult:
    history: list = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    train_seconds: float = 0.0
    train_samples: int = 0
    stopped_early: bool = False
    train_tokens: int = 0  # SFT: response and prompt tokens trained on


def track_best(st: dict, score: float, higher_is_better: bool, patience: int, epoch: int) -> bool:
    """Early-stopping bookkeeping after an epoch; True when `score` is a new best (save the weights)."""
    best = st["best_metric"]
    if best is None or (score > best if higher_is_better else score < best):
        st.update(best_metric=score, best_epoch=epoch + 1, bad_epochs=0)
        return True
    st["bad_epochs"] += 1
    if patience and st["bad_epochs"] >= patience:
        st["stopped_early"] = True
    return False


def decides(n_val: int, n_classes: int) -> bool:
    """Whether validation is large enough to choose an epoch: at least 10 rows a class and 300 in all.

    Below that, accuracy's standard error (~1.7 points at 300 rows and 90%) is as large as the gap
    between epochs: on 60 validation rows of 20 intents, macro-F1 jumped by 4-7 points between
    consecutive epochs (one row is 1.7 points). Then the last epoch is kept (what the Hugging Face
    Trainer does by default) and validation still scores each epoch and fits the temperature."""
    return n_val >= max(300, 10 * n_classes)


def _frozen_k(model, recipe) -> int:
    """K when the embeddings and bottom K layers are frozen (head, freeze:K), else 0."""
    return 0 if hasattr(model, "peft_config") else frozen_layers(model, recipe.strategy)


def evaluate_split(model, task, split: Split, pad_id, batch_size, bf16, device,
                   replay=None) -> tuple[dict, float, np.ndarray]:
    logits = predict_logits(model, split.ids, pad_id, batch_size, bf16, device, replay=replay)
    loss = float(task.loss(torch.from_numpy(logits), split.targets))
    preds = task.decide(task.probabilities(logits))
    y = split.targets.numpy()
    return task.metrics(y.astype(int), preds), loss, logits


class _StopFlag:
    """First Ctrl-C asks for a clean stop at the next step boundary; a second one aborts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        try:
            self.prev = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: no signal handling
            self.prev = None
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)


def fit(model, task, train: Split, val: Split | None, recipe, *, pad_id: int, device: torch.device,
        bf16: bool, ckpt_dir: Path, resume: bool = False, on_event=None, stop=None) -> FitResult:
    acc = distributed.accelerator()
    if device.type == "cpu":
        cpu_malloc.tune()
    # Lazy embedding rows on CPU (train/optim.py), switched on before DDP wraps the model: DDP reads
    # each embedding's `sparse` flag when it builds its gradient buckets.
    with lazy_embeddings(model, acc.device if acc is not None else device):
        return _fit(model, task, train, val, recipe, pad_id=pad_id, device=device, bf16=bf16, ckpt_dir=ckpt_dir,
                    resume=resume, on_event=on_event, stop=stop, acc=acc)


def _fit(model, task, train, val, recipe, *, pad_id, device, bf16, ckpt_dir, resume, on_event, stop, acc):
    rank, world = distributed.world()
    main = rank == 0
    on_event = (on_event or (lambda kind, **kw: None)) if main else (lambda kind, **kw: None)
    if acc is not None:
        device = acc.device
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    torch.manual_seed(recipe.seed)
    model.to(device)
    net = acc.prepare_model(model) if acc is not None else model  # what the training forward calls

    k = _frozen_k(model, recipe)
    use_cache = k > 0 and feature_cache.mode() != "off"
    # `head` on a known architecture: the head runs on cached features directly (train/heads.py), in fp32
    # (its matmuls are batch x hidden: too small for bf16 to pay back its casts). It bypasses DDP's forward,
    # which DDP's gradient sync needs, so single process only.
    direct = use_cache and k == num_layers(model) and acc is None and heads.for_model(model) is not None
    replay_train = replay_val = None

    lengths = [len(x) for x in train.ids]
    n_batches = math.ceil(len(train) / recipe.batch_size)
    steps_per_epoch = math.ceil(n_batches / recipe.grad_accum)
    total_steps = steps_per_epoch * recipe.epochs
    opt, sched = optimizer_and_schedule(model, recipe, device, total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    higher_is_better = recipe.metric != "loss"
    n_classes = len(task.labels)
    choose = val is not None and decides(len(val), n_classes)
    if val is not None and len(val) and not choose:
        on_event("info", message=f"validation has {len(val)} rows: too few to choose an epoch "
                                 f"(needs {max(300, 10 * n_classes)}); the last epoch is kept")
    st = {"epoch": 0, "batch": 0, "history": [], "best_metric": None, "best_epoch": None,
          "bad_epochs": 0, "train_seconds": 0.0, "train_samples": 0, "stopped_early": False}

    if resume and last_path.exists():
        st = load_resume(last_path, model, opt, sched)
        on_event("resumed", epoch=st["epoch"], batch=st["batch"])

    def save_last():
        if main:
            save_resume(last_path, model, opt, sched, st)

    def stop_requested(flag) -> bool:
        # Every process must stop at the same step, or the others wait forever in the next all-reduce.
        return distributed.all_sum([float(flag.requested)])[0] > 0 if acc is not None else flag.requested

    # On CPU dropout draws from a bulk random source (train/fast_dropout.py); CUDA's own is fast. bf16 on
    # CPU computes with bf16 copies of the Linear weights and keeps fp32 masters (train/master_weights.py).
    masters = not direct and master_weights.applicable(model, device, bf16, acc is not None)
    with (stop or _StopFlag()) as flag, fast_dropout.enabled(model, device.type == "cpu"), \
            master_weights.use(model, opt, masters) as mw:
        while st["epoch"] < recipe.epochs and not st["stopped_early"]:
            epoch = st["epoch"]
            batches = epoch_batches(lengths, recipe.batch_size, recipe.seed, epoch)
            # A resumed partial epoch starts from the sums saved at the interrupt, so it reports the same
            # train loss as an uninterrupted run (held by rank 0 only: the epoch-end all_sum adds them once).
            t0 = time.perf_counter()
            partial = st.pop("partial", None)
            seen, loss_sum, correct = partial if partial and main else (0, 0.0, 0)
            if use_cache and replay_train is None:  # inside the first epoch's clock: it pays for it
                feats = feature_cache.features(model, k, train.ids, pad_id, bf16, device, recipe.max_length)
                replay_train = feature_cache.Replay(model, k, feats, ids=train.ids if direct else None, pad_id=pad_id)
            net.train()
            if k:
                feature_cache.frozen_eval(model, k)  # no dropout below K: the first epoch matches cached ones
            on_event("epoch_start", epoch=epoch, batches=len(batches), done=st["batch"])
            with feature_cache.replay_or_null(replay_train):
                for bi in range(st["batch"], len(batches)):
                    idx = batches[bi]
                    # DDP: this process's share of the global batch; the loss weight makes DDP's
                    # gradient average equal the mean over the whole batch. An empty share (last
                    # batch smaller than the world) still runs, weighted 0, to join the all-reduce.
                    mine = idx[rank::world]
                    share = mine or idx[:1]
                    weight = len(mine) * world / len(idx)
                    if replay_train is not None:
                        replay_train.select(share)
                    if not direct:
                        b = {n: v.to(device) for n, v in collate([train.ids[i] for i in share], pad_id).items()}
                    y = train.targets[share].to(device)
                    boundary = (bi + 1) % recipe.grad_accum == 0 or bi + 1 == len(batches)
                    # Gradient accumulation under DDP: all-reduce only on the step that updates.
                    sync = contextlib.nullcontext() if acc is None or boundary else net.no_sync()
                    with sync, mw.computing():
                        with autocast(bf16 and not direct, device):
                            logits = replay_train.logits(share) if direct else net(**b).logits
                        loss = task.loss(logits, y, recipe.label_smoothing)
                        (loss * (weight / recipe.grad_accum)).backward()
                    mw.gather_grads()
                    loss_value = float(loss.detach())
                    loss_sum += loss_value * len(mine)
                    seen += len(mine)
                    if y.ndim == 1 and mine:  # running train accuracy from the training forward passes (free)
                        correct += int((logits.argmax(-1) == y).sum())
                    if boundary:
                        optimizer_step(params, opt, sched, recipe.grad_clip, mw.for_optimizer())
                    on_event("step", epoch=epoch, batch=bi + 1, loss=loss_value)
                    if boundary and stop_requested(flag):
                        st["batch"] = bi + 1
                        st["train_seconds"] += time.perf_counter() - t0  # samples are counted at epoch end
                        n, l, c = distributed.all_sum([seen, loss_sum, correct])
                        st["partial"] = (int(n), l, int(c))
                        save_last()
                        raise Interrupted(f"interrupted: checkpoint saved in {ckpt_dir}; continue with the same command and --resume")
            epoch_seconds = time.perf_counter() - t0
            loss_sum, seen, correct = distributed.all_sum([loss_sum, seen, correct])
            seen = int(seen)
            st["train_seconds"] += epoch_seconds
            st["train_samples"] += seen
            record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                      "epoch_seconds": round(epoch_seconds, 3),
                      "train_samples_per_second": round(seen / max(epoch_seconds, 1e-9), 2)}
            if train.targets.ndim == 1:
                record["train_accuracy"] = correct / max(seen, 1)
            if val is not None and len(val):
                if use_cache and replay_val is None:
                    feats = feature_cache.features(model, k, val.ids, pad_id, bf16, device, recipe.max_length)
                    replay_val = feature_cache.Replay(model, k, feats, ids=val.ids, pad_id=pad_id)
                # Every process scores the whole validation set: identical early-stopping decisions.
                m, vloss, _ = evaluate_split(model, task, val, pad_id, recipe.batch_size * 2, bf16, device,
                                             replay=replay_val)
                record.update({"val_loss": vloss, **{f"val_{n}": v for n, v in m.items() if n != "n"}})
                score = vloss if recipe.metric == "loss" else m[recipe.metric]
                if choose and track_best(st, score, higher_is_better, recipe.patience, epoch) and main:
                    atomic_save(trainable_state(model), best_path)
            st["history"].append(record)
            st["epoch"], st["batch"] = epoch + 1, 0
            save_last()
            on_event("epoch_end", **record)

    if acc is not None:
        acc.wait_for_everyone()  # rank 0 has written best.pt
    if best_path.exists() and st["best_epoch"] is not None:
        load_trainable(model, load_weights(best_path))
    return FitResult(st["history"], st["best_epoch"], st["best_metric"], st["train_seconds"],
                     st["train_samples"], st["stopped_early"])
