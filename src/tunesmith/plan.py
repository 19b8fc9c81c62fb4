"""`tunesmith plan` (and `train --dry-run`): what a run will need, before it is started.

The same stages as `train` up to the first step (pipeline.load_and_encode, the task's strategy and steps),
then the memory arithmetic `train` itself checks (train/memory.py), and a few real training steps through
the one loop (train/loop.py) for the time per epoch. Nothing is written: the steps train a throwaway copy
in a temporary folder."""
from __future__ import annotations

import math
import statistics
import time

import torch

from tunesmith import pipeline
from tunesmith.accel import for_device
from tunesmith.train import memory, shard

TIMED_STEPS = 4  # after one warm-up step (oneDNN's per-shape set-up is not a step's cost)


class _Timed:
    """A task's Steps with the loop's batches cut to the first few of epoch 0 and no validation."""

    def __init__(self, steps, n: int):
        self._steps, self._n, self.val = steps, n, None

    def __getattr__(self, name):
        return getattr(self._steps, name)

    def batches(self, batch_size: int, seed: int, epoch: int):
        return self._steps.batches(batch_size, seed, epoch)[: self._n]

    def chooses(self, on_event) -> bool:
        return False


def plan(train_path: str | None = None, *, config: str | None = None, on_event=None, timed: bool = True,
         nproc: int = 1, **settings) -> dict:
    """The memory budget (train/memory.Budget.to_dict) of one of `nproc` processes, the advice if it does not
    fit, and the seconds per step and per epoch from TIMED_STEPS real steps of one process (when it fits and
    `timed`; under --nproc each process's step is about as long, on its share of the batch)."""
    from tunesmith.train.loop import fit, process_budget

    on_event = on_event or (lambda *a, **k: None)
    recipe = pipeline.resolve_recipe(train_path, config, False, settings)
    task_cls, recipe = pipeline.choose_task(recipe, on_event)
    pipeline.check_qlora(recipe.strategy, task_cls.name, task_cls.loads_4bit)
    task, recipe, data = pipeline.task_for_data(task_cls, recipe, on_event)
    recipe, model, tok, _, device, bf16, enc = pipeline.load_and_encode(task, recipe, data, on_event)
    model = task.apply_strategy(model, recipe).to(device)
    steps = task.steps(model, tok, enc, recipe, device, bf16)
    if hasattr(steps, "start"):
        steps.start(model, distributed=False)
    engine = for_device(device, bf16, engine="plain" if shard.enabled(recipe) else None)  # as train's
    layers = getattr(model.config, "num_hidden_layers", 1) or 1
    budget = process_budget(model, steps, recipe, device, bf16, engine, nproc)  # what train checks
    out = {"task": task.name, "model": recipe.model, "strategy": recipe.strategy, "device": device.type,
           "bf16": bf16, "engine": engine.name, "rows": len(steps.lengths), **budget.to_dict(),
           "nproc": nproc, "shard": recipe.shard,
           "advice": [] if budget.fits else memory.advice(budget, layers, torch.cuda.device_count()
                                                          if device.type == "cuda" else 0)}
    n_batches = math.ceil(len(steps.lengths) / recipe.batch_size)
    out["batches_per_epoch"] = math.ceil(n_batches / recipe.grad_accum) * recipe.grad_accum
    if timed and budget.fits:
        stamps = []
        one = {"epochs": 1, "shard": "off", "batch_size": math.ceil(recipe.batch_size / nproc)}
        fit(model, _Timed(steps, TIMED_STEPS + 1), recipe.model_copy(update=one), device=device,
            bf16=bf16, ckpt_dir=None, on_event=lambda kind, **kw: stamps.append(time.perf_counter())
            if kind in ("epoch_start", "step") else None)
        per_step = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:])) if len(stamps) > 2 else None
        out["seconds_per_step"] = per_step
        out["seconds_per_epoch"] = per_step * n_batches if per_step is not None else None
        out["measured_peak"] = memory.peak_rss_bytes() if device.type == "cpu" else None
    return out


def table(r: dict):
    """The plan as a rich table (what `tunesmith plan` prints)."""
    from rich.table import Table

    from tunesmith.train.memory import gib

    t = Table(show_header=False, title_justify="left",
              title=f"plan: {r['task']}, {r['model']}, --strategy {r['strategy']}, {r['rows']} training units, "
                    f"{r['device']} {'bf16' if r['bf16'] else 'fp32'} (engine {r['engine']})"
                    + (f"; per process of --nproc {r['nproc']}" if r.get("nproc", 1) > 1 else "")
                    + (f", --shard {r['shard']}" if r.get("shard", "off") != "off" else ""))
    t.add_column("")
    t.add_column("", justify="right")
    t.add_row("parameters", f"{r['params'] / 1e6:.1f}M, {r['trainable'] / 1e6:.2f}M trainable "
                            f"({100 * r['trainable'] / max(r['params'], 1):.1f}%)")
    t.add_row("held before training (interpreter, libraries, data, weights)", gib(r["held"]))
    t.add_row("  of which weights", gib(r["weights"]))
    t.add_row("gradients (fp32, trainable)", gib(r["gradients"]))
    t.add_row("optimizer state (AdamW, 2 x fp32)", gib(r["optimizer"]))
    if r["compute_copies"]:
        t.add_row("bf16 compute copies (CPU engine)", gib(r["compute_copies"]))
    t.add_row(f"activations at --batch-size {r['batch']} x {r['length']} tokens (longest)",
              f"{gib(r['activations'])} ({gib(r['act_per_row'])} a row)")
    t.add_row("backward transient", gib(r["transient"]))
    t.add_row("[bold]predicted peak[/bold]", f"[bold]{gib(r['peak'])}[/bold]")
    t.add_row(f"memory ({r['available_from']})", gib(r["available"]) if r["available"] else "unknown")
    t.add_row("fits", "yes" if r["fits"] else "[red]no[/red]")
    if r.get("seconds_per_step") is not None:
        t.add_row(f"time a step (median of {TIMED_STEPS}, after a warm-up)", f"{r['seconds_per_step']:.3f} s")
        t.add_row(f"time an epoch ({r['batches_per_epoch']} batches)", f"{r['seconds_per_epoch']:.0f} s")
    if r.get("measured_peak"):
        t.add_row("peak held while timing those steps", gib(r["measured_peak"]))
    return t
