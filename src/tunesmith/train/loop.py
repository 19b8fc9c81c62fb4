"""The training loop, written once for every task, top to bottom in one place.

AdamW with warmup and decay, gradient accumulation and clipping, bf16 autocast, validation after each
epoch, early stopping, best checkpoint restored at the end. Ctrl-C stops at the next optimizer step
boundary and writes a checkpoint; resuming replays the exact same batches and RNG, so a resumed run
ends at the same metrics as an uninterrupted one. Under `--nproc N` (train/distributed.py) the
task's training module is wrapped in DDP by Accelerate and each process takes its share of every
global batch.

The task supplies the steps (tasks/base.Steps): how a batch is built, its loss, what an epoch's record
says and how validation scores. The hardware tricks come through one door (accel.for_device).
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunesmith import accel
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.predict import predict_logits
from tunesmith.train import distributed, memory, shard
from tunesmith.train.checkpoint import (atomic_save, load_resume, load_trainable, load_weights, save_resume,
                                       trainable_state)
from tunesmith.train.optim import optimizer_and_schedule, optimizer_step
from tunesmith.accel.precision import autocast

# The "step" event comes every batch (progress, StopAfter in the tests) but carries the batch's loss only
# every LOG_EVERY batches and at an epoch's last (loss=None between): reading a loss waits for the device.
# The epoch's sums stay on the device and are read at its end or at an interrupt.
LOG_EVERY = 10
# last.pt (weights, AdamW state, RNG) is written at an epoch's end once this long has passed since the last
# write (or the fit's start), after the last epoch only with keep_checkpoints, and always at an interrupt.
# Why not every epoch: it is 12 bytes a trainable parameter (all-MiniLM-L6-v2: 260 MB, about 1 s to write),
# and on a few hundred rows an epoch takes 2 s, so writing it every epoch cost 5 of a 600-row run's 14 s of
# training. A process killed outright (not Ctrl-C) loses at most this much training plus one epoch (the
# check is at epoch ends), as with a Trainer's save_steps; best.pt and last.pt are written together, so a
# resume never pairs one epoch's state with another's best.
CHECKPOINT_EVERY_S = 60.0


def logged(bi: int, n_batches: int) -> bool:
    """Whether batch `bi` (0-based) of an epoch reports its loss in the "step" event."""
    return (bi + 1) % LOG_EVERY == 0 or bi + 1 == n_batches


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
    memory: dict = field(default_factory=dict)  # the predicted peak (train/memory.py) and the measured one


@dataclass
class LoopState:
    """What a checkpoint's last.pt carries besides weights, optimizer, schedule and RNG."""
    epoch: int = 0
    batch: int = 0                 # batches of `epoch` already trained
    history: list = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0
    stopped_early: bool = False
    partial: dict | None = None    # an interrupted epoch's sums: {"seen", "tokens", "sums"}

    @classmethod
    def restore(cls, saved: dict, path: Path) -> "LoopState":
        try:
            saved = dict(saved)
            p = saved.get("partial")
            if isinstance(p, (list, tuple)):  # checkpoints of the two loops before this one
                saved["partial"] = ({"seen": p[0], "tokens": 0, "sums": [p[1], p[2]]} if len(p) == 3 else
                                    {"seen": p[0], "tokens": p[1], "sums": [p[2], p[3]]})
            return cls(**{k: v for k, v in saved.items() if k in cls.__dataclass_fields__})
        except (TypeError, ValueError, IndexError) as e:
            raise TunesmithError(f"{path}: its loop state does not fit this run ({type(e).__name__}); delete the "
                                 f"checkpoint/ folder to train from the start, or rerun with --overwrite") from None

    def result(self) -> FitResult:
        return FitResult(self.history, self.best_epoch, self.best_metric, self.train_seconds, self.train_samples,
                         self.stopped_early, self.train_tokens)


def track_best(st: LoopState, score: float, higher_is_better: bool, patience: int, epoch: int) -> bool:
    """Early-stopping bookkeeping after an epoch; True when `score` is a new best (save the weights)."""
    best = st.best_metric
    if best is None or (score > best if higher_is_better else score < best):
        st.best_metric, st.best_epoch, st.bad_epochs = score, epoch + 1, 0
        return True
    st.bad_epochs += 1
    if patience and st.bad_epochs >= patience:
        st.stopped_early = True
    return False


def decides(n_val: int, n_classes: int) -> bool:
    """Whether validation is large enough to choose an epoch: at least 10 rows a class and 300 in all.

    Below that, accuracy's standard error (~1.7 points at 300 rows and 90%) is as large as the gap
    between epochs: on 60 validation rows of 20 intents, macro-F1 jumped by 4-7 points between
    consecutive epochs (one row is 1.7 points). Then the last epoch is kept (what the Hugging Face
    Trainer does by default) and validation still scores each epoch and fits the temperature."""
    return n_val >= max(300, 10 * n_classes)


def evaluate_split(model, task, split: Split, pad_id, batch_size, bf16, device,
                   replay=None) -> tuple[dict, float, np.ndarray]:
    logits = predict_logits(model, split.ids, pad_id, batch_size, bf16, device, replay=replay)
    loss = float(task.loss(torch.from_numpy(logits), split.targets))
    preds = task.decide(task.probabilities(logits))
    y = split.targets.numpy()
    return task.metrics(y.astype(int), preds), loss, logits


class StopFlag:
    """First Ctrl-C asks for a clean stop at the next step boundary; a second one aborts at once.
    `tune` subclasses it to stop a trial at its time budget (set `requested`)."""

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


def fit(model, steps, recipe, *, device: torch.device, bf16: bool, ckpt_dir: Path | None, resume: bool = False,
        on_event=None, stop=None) -> FitResult:
    if distributed.world()[1] > 1 and not getattr(steps, "data_parallel", True):
        name = getattr(getattr(steps, "task", None), "name", "this task")
        why = getattr(steps, "one_process_why", "its loss compares each row with the rest of the batch, which "
                                                 "one process's share of the batch would change")
        raise TunesmithError(f"--nproc: --task {name} trains in one process only here ({why})")
    shard.check(recipe, distributed.world()[1])
    sharded = shard.enabled(recipe)
    acc = distributed.accelerator()
    # The CPU speed-ups, or none (TUNESMITH_ENGINE=plain; CUDA; sharded weights): accel/__init__.py. Lazy
    # embedding rows go on before DDP wraps the model: DDP reads each embedding's `sparse` flag when it builds
    # its buckets.
    engine = accel.for_device(acc.device if acc is not None else device, bf16, distributed=acc is not None,
                              engine="plain" if sharded else None)
    lazy = engine.lazy_embeddings(model) if getattr(steps, "lazy_rows", False) else contextlib.nullcontext()
    with lazy:
        return _fit(model, steps, recipe, device=device, bf16=bf16, ckpt_dir=ckpt_dir, resume=resume,
                    on_event=on_event, stop=stop, acc=acc, engine=engine)


def memory_budget(model, steps, batch: int, device, bf16: bool, engine) -> "memory.Budget":
    """train/memory.estimate with what the CPU engine will keep (tunesmith plan shows it, check_memory checks it)."""
    with engine.measuring(model):
        return memory.estimate(model, steps, batch, device, bf16,
                               copies=engine.keeps_copies(model, masters=getattr(steps, "masters", True)))


def process_budget(model, steps, recipe, device, bf16: bool, engine, world: int) -> "memory.Budget":
    """One process's memory budget in a run of `world` processes (train checks it, tunesmith plan shows it)."""
    if shard.enabled(recipe):  # each process: 1/world of the weights (GPU), gradients and AdamW state
        return memory.sharded(memory_budget(model, steps, recipe.batch_size, device, bf16, engine), world)
    return memory_budget(model, steps, math.ceil(recipe.batch_size / world), device, bf16, engine)


def check_memory(model, steps, recipe, device, bf16: bool, engine) -> "memory.Budget":
    """The plan's memory check (train/memory.py) before the first step: a run that cannot fit stops here, in
    one line with settings that would fit, not hours later."""
    budget = process_budget(model, steps, recipe, device, bf16, engine, distributed.world()[1])
    if not budget.fits:
        raise TunesmithError(memory.refusal(budget, model))
    return budget


def _fit(model, steps, recipe, *, device, bf16, ckpt_dir, resume, on_event, stop, acc, engine):
    rank, world = distributed.world()
    main = rank == 0
    on_event = (on_event or (lambda kind, **kw: None)) if main else (lambda kind, **kw: None)
    if acc is not None:
        device = acc.device
    if main and ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    # ckpt_dir None (a stage inside a run, as classification's contrastive one): nothing written, nothing to
    # resume, no best epoch kept.
    last_path, best_path = (ckpt_dir / "last.pt", ckpt_dir / "best.pt") if ckpt_dir is not None else (None, None)
    torch.manual_seed(recipe.seed)
    sharded = shard.enabled(recipe)
    model.to(device)
    module = steps.module(model)  # what the training forward calls (SFT: the token losses)
    net = acc.prepare_model(module) if acc is not None and not sharded else module
    if hasattr(steps, "start"):
        steps.start(model, distributed=acc is not None)
    budget = check_memory(model, steps, recipe, device, bf16, engine)
    given = model
    if sharded:  # FSDP2 trains a sharded copy; `given` stays whole on the host and gets its weights at the end
        model, net = shard.wrap(given.to("cpu"), steps, recipe.shard, device)
        if hasattr(steps, "start"):
            steps.start(model, distributed=True)

    n_batches = math.ceil(len(steps.lengths) / recipe.batch_size)
    total_steps = math.ceil(n_batches / recipe.grad_accum) * recipe.epochs
    opt, sched = optimizer_and_schedule(model, recipe, device, total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    choose = steps.chooses(on_event) and ckpt_dir is not None
    st = LoopState()
    if resume and last_path is not None and last_path.exists():
        st = LoopState.restore((shard.load_resume if sharded else load_resume)(last_path, model, opt, sched),
                               last_path)
        on_event("resumed", epoch=st.epoch, batch=st.batch)

    saved_at = time.perf_counter()  # the fit's start: the clock of CHECKPOINT_EVERY_S

    def save_last():
        nonlocal saved_at
        saved_at = time.perf_counter()
        if ckpt_dir is None:
            return
        if sharded:  # every rank writes its shards
            shard.save_resume(ckpt_dir, model, opt, sched, asdict(st), tag=st.epoch * 1_000_000 + st.batch)
        elif main:
            save_resume(last_path, model, opt, sched, asdict(st))

    def any_rank(yes: bool) -> bool:
        # Every process must stop (or save shards) at the same step, or the others wait forever in the next
        # collective: true when any process says so.
        return distributed.all_sum([float(yes)])[0] > 0 if acc is not None else yes

    # CPU engine: bulk-random dropout, and bf16 copies of the Linear weights computing over fp32 masters
    # (accel/), where the steps allow them.
    use_autocast = bf16 and getattr(steps, "autocast", True)
    with (stop or StopFlag()) as flag, engine.training(model, opt, masters=getattr(steps, "masters", True)) as mw:
        while st.epoch < recipe.epochs and not st.stopped_early:
            epoch = st.epoch
            batches = steps.batches(recipe.batch_size, recipe.seed, epoch)
            # A resumed partial epoch starts from the sums saved at the interrupt, so it reports the same
            # train loss as an uninterrupted run (held by rank 0 only: the epoch-end all_sum adds them once).
            t0 = time.perf_counter()
            partial, st.partial = st.partial, None
            seen, tokens = (partial["seen"], partial["tokens"]) if partial and main else (0, 0)
            sums = torch.zeros(steps.sums, dtype=torch.float64, device=device)
            if partial and main:
                sums += torch.tensor(partial["sums"], dtype=torch.float64, device=device)
            replaying = steps.epoch_start(net) if hasattr(steps, "epoch_start") else contextlib.nullcontext()
            if not hasattr(steps, "epoch_start"):
                net.train()
            on_event("epoch_start", epoch=epoch, batches=len(batches), done=st.batch)
            with replaying:
                for bi in range(st.batch, len(batches)):
                    idx = batches[bi]
                    # DDP: this process's share of the global batch; the loss weight makes DDP's
                    # gradient average equal the mean over the whole batch. An empty share (last
                    # batch smaller than the world) still runs, weighted 0, to join the all-reduce.
                    mine = idx[rank::world]
                    share = mine or idx[:1]
                    weight = steps.weight(mine, idx) * world
                    b = steps.batch(share, device)
                    boundary = (bi + 1) % recipe.grad_accum == 0 or bi + 1 == len(batches)
                    # Gradient accumulation under DDP: all-reduce only on the step that updates.
                    sync = contextlib.nullcontext() if acc is None or boundary or sharded else net.no_sync()
                    if sharded:
                        net.set_requires_gradient_sync(boundary)
                    with sync, mw.computing():
                        with autocast(use_autocast, device):
                            loss, batch_sums = steps.loss(net, b)
                        (loss * (weight / recipe.grad_accum)).backward()
                    mw.gather_grads()
                    if mine:
                        sums += batch_sums
                        n, t = steps.host_counts(mine)
                        seen, tokens = seen + n, tokens + t
                    if boundary:
                        if sharded and recipe.grad_clip:
                            shard.clip(params, recipe.grad_clip)
                        optimizer_step(params, opt, sched, 0 if sharded else recipe.grad_clip, mw.for_optimizer())
                    on_event("step", epoch=epoch, batch=bi + 1,
                             loss=float(loss.detach()) if logged(bi, len(batches)) else None)
                    if boundary and any_rank(flag.requested):
                        st.batch = bi + 1
                        st.train_seconds += time.perf_counter() - t0  # samples are counted at epoch end
                        n, t, *s = distributed.all_sum([seen, tokens, *sums.tolist()])
                        st.partial = {"seen": int(n), "tokens": int(t), "sums": s}
                        save_last()
                        kept = f"checkpoint saved in {ckpt_dir}" if ckpt_dir is not None else "this stage starts again"
                        raise Interrupted(f"interrupted: {kept}; continue with the same "
                                          f"command and --resume")
            host_sums = sums.tolist()  # waits for the device: before the clock stops
            epoch_seconds = time.perf_counter() - t0
            seen, tokens, *host_sums = distributed.all_sum([seen, tokens, *host_sums])
            seen, tokens = int(seen), int(tokens)
            st.train_seconds += epoch_seconds
            st.train_samples += seen
            st.train_tokens += tokens
            record = {"epoch": epoch + 1, **steps.epoch_record(host_sums, seen, tokens, epoch_seconds)}
            new_best = False
            if steps.val is not None and len(steps.val):
                with shard.whole_root(net) if sharded else contextlib.nullcontext():
                    fields, score, higher_is_better = steps.validate(model)
                record.update(fields)
                if choose and track_best(st, score, higher_is_better, recipe.patience, epoch):
                    new_best = True
                    best = shard.full_trainable(model) if sharded else trainable_state(model) if main else None
                    if main:
                        atomic_save(best, best_path)
            st.history.append(record)
            st.epoch, st.batch = epoch + 1, 0
            final = st.epoch >= recipe.epochs or st.stopped_early
            due = (new_best or time.perf_counter() - saved_at >= CHECKPOINT_EVERY_S
                   or (final and getattr(recipe, "keep_checkpoints", False)))  # tune's trials keep theirs
            if any_rank(due):
                save_last()
            on_event("epoch_end", **record)

    if sharded:  # the trained weights, whole, into the model the pipeline saves (rank 0)
        shard.gather_into(model, given)
        model = given.to(device) if main else given
    if acc is not None:
        acc.wait_for_everyone()  # rank 0 has written best.pt
    if best_path is not None and best_path.exists() and st.best_epoch is not None:
        load_trainable(model, load_weights(best_path))
    result = st.result()
    result.memory = {"predicted_peak_mib": round(budget.peak / memory.MIB, 1), **memory.used(device)}
    return result
