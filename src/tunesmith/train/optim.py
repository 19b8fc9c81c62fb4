"""AdamW, its schedule and the optimizer step (clip, step, schedule, zero), shared by both loops.

Lazy embedding rows (CPU, single process, untied input embeddings that train): the word-embedding
table is half of MiniLM's parameters but a batch of 32 short texts touches ~300 of its 30,522 rows.
A dense gradient costs a 47 MB zero-fill, a norm and a full AdamW pass over it every step (~20 ms of
~150 ms). With `sparse=True` the embedding's gradient holds only the rows in the batch, and those rows
get AdamW's update (decoupled weight decay, bias correction by the global step); rows not in the batch
are left alone until they appear ("lazy Adam", as TensorFlow's LazyAdam and torch's SparseAdam do).
bench_train.py shows accuracy stays within a point of the Trainer's dense AdamW. CPU only: dense is
cheap on a GPU, and NCCL cannot all-reduce sparse gradients (gloo can: DDP on CPU keeps it, so two
processes still train to what one does).
"""
from __future__ import annotations

import contextlib
import math

import torch
from transformers import get_scheduler

from tunesmith.train import cpu_kernels


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


class AdamW(torch.optim.AdamW):
    """torch's fused AdamW for dense gradients, plus the lazy row update for sparse ones."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    self._sparse_rows(p, group)
                    p.grad = None  # the fused step below skips parameters without a gradient
        # Nothing dense left (master weights stepped the rest): torch's step would only walk ~100
        # parameters in Python to find no gradient, ~1 ms of a MiniLM step.
        if closure is None and not any(p.grad is not None for g in self.param_groups for p in g["params"]):
            return None
        return super().step(closure)

    def _sparse_rows(self, p, group):
        g = p.grad.coalesce()
        rows, g = g.indices()[0], g.values()
        st = self.state[p]
        if not st:  # the same keys as torch's AdamW: state_dict and resume need nothing special
            st["step"] = torch.tensor(0.0)
            st["exp_avg"] = torch.zeros_like(p)
            st["exp_avg_sq"] = torch.zeros_like(p)
        st["step"] += 1
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        step = float(st["step"])
        lib = cpu_kernels.lib()
        tensors = (p, g, st["exp_avg"], st["exp_avg_sq"])
        if lib is not None and all(t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu"
                                   for t in tensors):
            # One compiled pass over the rows instead of ~12 torch ops on ~300 rows (~1.5 ms a step).
            rows = rows.contiguous()
            hp = cpu_kernels.adamw_hyper([group], step)
            lib.adamw_rows_f32(rows.data_ptr(), len(rows), g.data_ptr(), p.data_ptr(), st["exp_avg"].data_ptr(),
                               st["exp_avg_sq"].data_ptr(), p.shape[1], hp.ctypes.data)
            return
        w, m, v = p[rows], st["exp_avg"][rows], st["exp_avg_sq"][rows]
        w.mul_(1 - lr * wd)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(1 - b2 ** step)).add_(eps)
        w.addcdiv_(m, denom, value=-lr / (1 - b1 ** step))
        p.index_copy_(0, rows, w)
        st["exp_avg"].index_copy_(0, rows, m)
        st["exp_avg_sq"].index_copy_(0, rows, v)


@contextlib.contextmanager
def lazy_embeddings(model, device):
    """Inside: the input embedding has sparse gradients, when that is safe and pays (see the top)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    ok = (device.type == "cpu" and not hasattr(model, "peft_config")
          and isinstance(emb, torch.nn.Embedding) and emb.weight.requires_grad and emb.max_norm is None
          and getattr(out, "weight", None) is not emb.weight)  # tied to the LM head: its gradient is dense
    if not ok:
        yield
        return
    emb.sparse = True
    try:
        yield
    finally:
        emb.sparse = False


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


def clip_grad_norm(params, max_norm: float, masters=None, opt=None) -> float:
    """clip_grad_norm_ that also counts sparse gradients (their coalesced values). The same arithmetic
    as torch's in a few ops: its per-call bookkeeping was a tenth of a cached `head` step.

    `masters` (train/master_weights.py): it takes the norm of the gradients of the parameters it steps
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
        return 0.0
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
    return float(total)


def optimizer_step(params, opt, sched, grad_clip: float, masters=None) -> None:
    """`masters`: master_weights' fused update for the parameters it holds; `opt` steps the rest."""
    if grad_clip:
        clip_grad_norm(params, grad_clip, masters, opt)
    if masters is not None:
        masters.step()
    opt.step()
    opt.grad_scale = None
    sched.step()
    opt.zero_grad(set_to_none=True)
