"""Lazy embedding rows: AdamW that updates only the embedding rows a batch touched (CPU engine).

Lazy embedding rows (CPU, single process, untied input embeddings that train): the word-embedding
table is half of MiniLM's parameters but a batch of 32 short texts touches ~300 of its 30,522 rows.
A dense gradient costs a 47 MB zero-fill, a norm and a full AdamW pass over it every step (~20 ms of
~150 ms). With `sparse=True` the embedding's gradient holds only the rows in the batch, and those rows
get AdamW's update (decoupled weight decay, bias correction by the global step); rows not in the batch
are left alone until they appear ("lazy Adam", as TensorFlow's LazyAdam and torch's SparseAdam do).
bench_train.py shows accuracy stays within a point of the Trainer's dense AdamW. CPU only: dense is
cheap on a GPU, and NCCL cannot all-reduce sparse gradients (gloo can: DDP on CPU keeps it, so two
processes still train to what one does).

`AdamW` is the optimizer of every engine: with no sparse gradient (rows not `enabled`, as under the
plain engine) it is torch's fused AdamW.
"""
from __future__ import annotations

import contextlib
import math

import torch

from tunesmith.accel import cpu_kernels


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
def enabled(model, device):
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
