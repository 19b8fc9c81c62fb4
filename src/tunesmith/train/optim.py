"""AdamW, its schedule and the optimizer step (clip, step, schedule, zero), shared by both loops.

The optimizer is accel's AdamW: torch's fused AdamW, plus the lazy embedding-row update the CPU engine
switches on (accel/lazy_rows.py).
"""
from __future__ import annotations

import torch
from transformers import get_scheduler

from tunesmith.accel import AdamW


def default_lr(strategy: str, targets) -> float:
    """The learning rate when none is given: by strategy, then scaled down for few rows per class.

    The classifier starts as a fitted probe (train/probe_init.py), so what is left to learn is how far
    the body may move from features the probe already reads well. The evidence for moving it grows with
    the examples per class: with k rows in the median class, the rate is scaled by min(1, k / 32).
    Measured (minilm, one seed, macro-F1 fine-tune minus the probe): 20 intents x 27 rows: +0.8 points at
    5e-5 and 4.2e-5; 77 intents x 7 rows: -2.4 at 5e-5 (benchmarks/bench_quality.py, intents_8), +0.2 at
    1.1e-5 (another sample of 8 a class). README: "How the default recipe is chosen".
    Full and freeze:K start from 5e-5 (the Trainer's default; 1e-4 lost 2.8 points to 5e-5 on the 20 intents
    in an earlier, unregularised probe start);
    head and LoRA keep 1e-4, what they used before (their updates are smaller by construction)."""
    import numpy as np

    y = targets.numpy() if hasattr(targets, "numpy") else np.asarray(targets)
    per_class = y.sum(0) if y.ndim == 2 else np.bincount(y.astype(int))
    k = float(np.median(per_class[per_class > 0])) if (per_class > 0).any() else 1.0
    base = 1e-4 if strategy in ("head", "lora") else 5e-5
    return base * min(1.0, k / 32)


def _param_groups(model, weight_decay):
    # No decay on biases and norms: standard practice (BERT, HF Trainer) and measurably better.
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in n.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model, recipe):
    groups = _param_groups(model, recipe.weight_decay)
    # Fused AdamW: one kernel for all dense parameters instead of a Python loop over tensors (CPU and
    # CUDA since torch 2.4).
    try:
        return AdamW(groups, lr=recipe.lr, fused=True)
    except (RuntimeError, TypeError):
        return AdamW(groups, lr=recipe.lr)


def optimizer_and_schedule(model, recipe, device, total_steps: int):
    opt = make_optimizer(model, recipe)
    sched = get_scheduler("constant_with_warmup" if recipe.scheduler == "constant" else recipe.scheduler,
                          opt, num_warmup_steps=int(recipe.warmup_ratio * total_steps),
                          num_training_steps=total_steps)
    return opt, sched


def clip_grad_norm(params, max_norm: float, masters=None, opt=None) -> torch.Tensor:
    """clip_grad_norm_ that also counts sparse gradients (their coalesced values). The same arithmetic
    as torch's in a few ops: its per-call bookkeeping was a tenth of a cached `head` step. Returns the
    total norm as a 0-d tensor, as torch's does: reading it would wait for the device every step.

    `masters` (accel/master_weights.py): it takes the norm of the gradients of the parameters it steps
    (`masters.ids`) in one kernel pass; the coefficient goes to its step. With a fused AdamW `opt` the
    scale is handed to its step too (`grad_scale`, which divides inside the kernel) instead of a separate
    pass over the gradients.
    """
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()
    held = masters.ids if masters is not None else ()
    dense = [p.grad for p in params if p.grad is not None and not p.grad.is_sparse and id(p) not in held]
    sparse = [p for p in params if p.grad is not None and p.grad.is_sparse]
    norms = (list(torch._foreach_norm(dense, 2.0)) if dense else []) + [p.grad.values().norm(2.0) for p in sparse]
    if masters is not None:
        norms.append(masters.grad_norm())
    if not norms:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    if masters is not None:
        masters.clip = coef
    if isinstance(opt, AdamW) and opt.defaults.get("fused"):
        opt.grad_scale = (1.0 / coef).reshape(())
    elif dense:
        torch._foreach_mul_(dense, coef)
    for p in sparse:
        p.grad = p.grad * coef
    return total


def optimizer_step(params, opt, sched, grad_clip: float, masters=None) -> None:
    """`masters`: accel's master weights' fused update for the parameters it holds; `opt` steps the rest."""
    if grad_clip:
        clip_grad_norm(params, grad_clip, masters, opt)
    if masters is not None:
        masters.step()
    opt.step()
    opt.grad_scale = None
    sched.step()
    opt.zero_grad(set_to_none=True)
