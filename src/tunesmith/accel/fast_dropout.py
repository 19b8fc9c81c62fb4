"""Dropout with a bulk random source, for training on CPU.

Why by hand: torch's CPU `bernoulli_` draws one Mersenne-Twister number per element on one thread. In
MiniLM's training forward (batch 32, ~20 tokens) that is 1.3 ms per dropout call, 20 calls per step:
dropout alone was 27 of the 64 ms forward. Here one compiled pass (accel/cpu_kernels.py), on all
threads, draws SplitMix64 at each element's index (counter-based: the same mask whatever the thread
count), keeps the element when the top 32 bits >= p * 2^32 and writes it scaled or zeroed; the backward
is the same pass over the gradient with the same seed, so no mask is stored. A (32, 17, 384) dropout
takes ~0.1 ms, against ~1.3 ms for torch's. Building the mask first and multiplying by it cost two more
passes and a tensor per call: a profiled MiniLM step (batch 32) went from 104 to 98-102 ms. Without the
compiled kernels (no C compiler) `enabled` leaves torch's dropout in place. Each call's seed is drawn
from torch's RNG, so `torch.manual_seed` and resume (which restores torch's RNG state) stay exact.

Attention dropout lives inside SDPA, so `enabled(model)` also routes attention through a function that
computes the same attention in plain ops with this dropout while dropout is on, and through SDPA
otherwise (evaluation, p = 0). On CUDA native dropout is fast: callers use this on CPU only.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch.autograd.function import once_differentiable
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

from tunesmith.accel import cpu_kernels

NAME = "tunesmith_sdpa"


def _apply(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """x with elements dropped at rate p and the rest scaled by 1/(1-p), in one pass; the same seed drops
    the same elements of any tensor of that size."""
    x = x.contiguous()
    out = torch.empty_like(x)
    kernel = getattr(cpu_kernels.lib(), "dropout_bf16" if x.dtype == torch.bfloat16 else "dropout_f32")
    kernel(x.data_ptr(), out.data_ptr(), x.numel(), seed, round(p * 2**32), _scale(p, x.dtype))
    return out


@functools.cache
def _scale(p: float, dtype: torch.dtype) -> float:
    """1/(1-p) rounded to `dtype`, as torch's own dropout scales."""
    return torch.tensor(1.0 / (1.0 - p), dtype=dtype).item()


class _Dropout(torch.autograd.Function):
    # Only the seed is kept for the backward: the mask is drawn again instead of stored.
    @staticmethod
    def forward(ctx, x, p):
        ctx.p, ctx.seed = p, _new_seed()
        return _apply(x, p, ctx.seed)

    @staticmethod
    def backward(ctx, grad):
        return _apply(grad, ctx.p, ctx.seed), None


def _new_seed() -> int:
    """A call's seed, from torch's RNG: `torch.manual_seed` and resume (which restores it) stay exact."""
    return int(torch.randint(0, 2**62, (1,)))


SMALL = 1 << 10  # below this many elements torch's own dropout is cheaper than a kernel call (~12 us)


def _bulk(x: torch.Tensor, p: float) -> bool:
    """Whether dropout of `x` at rate p takes the compiled kernel rather than torch's."""
    return p < 1.0 and x.numel() >= SMALL and x.dtype in (torch.bfloat16, torch.float32)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if not _bulk(x, p):
        return torch.nn.functional.dropout(x, p, True)
    return _Dropout.apply(x, p)


_dropout = dropout  # `attention` takes a parameter named dropout (HF's interface)


def _module_forward(self, x):
    return dropout(x, self.p, self.training)


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None,
              **kwargs):
    """SDPA's attention; with dropout on, the same computation in plain ops so dropout can be ours."""
    if dropout == 0.0 or any(kwargs.get(k) is not None for k in ("position_bias", "cache", "softcap")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    n_rep = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    (b, h, q_len, d), kv_len = query.shape, key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and causal and q_len > 1:  # SDPA's is_causal: upper-left aligned
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()
    # One baddbmm does the product, the scaling and the mask; softmax stays in the compute dtype (it
    # accumulates in fp32 inside). Three fewer ops each way than matmul, *, masked_fill, softmax, cast:
    # at ~20 tokens attention is dispatch-bound.
    q, k = query.reshape(b * h, q_len, d), key.reshape(b * h, kv_len, d)
    scale = scaling if scaling is not None else d ** -0.5
    bias = _additive(attention_mask, (b, h, q_len, kv_len), query.dtype)
    scores = torch.bmm(q, k.transpose(1, 2)) * scale if bias is None else torch.baddbmm(
        bias, q, k.transpose(1, 2), alpha=scale)
    probs = torch.softmax(scores, dim=-1)
    v = value.reshape(b * h, kv_len, d)
    if _bulk(probs, dropout) and v.dtype == probs.dtype:
        out = _DroppedProbsTimesV.apply(probs, v, dropout)
    else:
        out = torch.bmm(_dropout(probs, dropout), v)
    return out.view(b, h, q_len, d).transpose(1, 2).contiguous(), None


class _DroppedProbsTimesV(torch.autograd.Function):
    """bmm(dropout(probs), v), keeping for the backward only what softmax keeps anyway (probs, the same
    storage) and the seed: the dropped probabilities are drawn again instead of stored. Saves one
    (B*H, T, T) tensor a layer: MiniLM at 512 tokens, 109 -> 71 MiB a row of activations (a third). The extra
    dropout pass in the backward: the attention's forward and backward 2.85 -> 3.06 ms at 20 tokens, batch
    32; a whole step unchanged within noise (164.3 / 158.3 ms; docs/performance.md). Same arithmetic as
    autograd's BmmBackward on the stored tensor, so gradients are bit-identical
    (tests/train/test_train_fast_paths.py)."""

    @staticmethod
    def forward(ctx, probs, v, p):
        ctx.p, ctx.seed = p, _new_seed()
        ctx.save_for_backward(probs, v)
        return torch.bmm(_apply(probs, p, ctx.seed), v)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        probs, v = ctx.saved_tensors
        grad_v = None
        if ctx.needs_input_grad[1]:
            grad_v = torch.bmm(_apply(probs, ctx.p, ctx.seed).transpose(1, 2), grad)
        grad_probs = _apply(torch.bmm(grad, v.transpose(1, 2)), ctx.p, ctx.seed) if ctx.needs_input_grad[0] else None
        return grad_probs, grad_v, None


_last_mask: list = [None, None]  # (the mask, its additive form): every layer of a forward gets the same mask


def _additive(mask, shape, dtype):
    """The mask as a (B*H, Tq, Tk) tensor to add to the scores (0 or the dtype's minimum)."""
    if mask is None:
        return None
    if _last_mask[0] is mask and _last_mask[1].dtype == dtype:
        return _last_mask[1]
    add = mask if mask.dtype != torch.bool else torch.zeros(mask.shape, dtype=dtype).masked_fill_(
        ~mask, torch.finfo(dtype).min)
    add = add.to(dtype).expand(shape).reshape(shape[0] * shape[1], *shape[2:])
    _last_mask[:] = [mask, add]
    return add


@functools.cache
def register() -> None:
    """Adds `attention` to transformers' attention registry under NAME. Called when the CPU engine is first
    made (accel.for_device) or enabled, not on import: importing tunesmith leaves transformers' global
    registry as it was, and under TUNESMITH_ENGINE=plain it never holds this function."""
    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # same masks as SDPA
    assert NAME in ALL_MASK_ATTENTION_FUNCTIONS


def _configs(model):
    seen = []
    for m in model.modules():
        c = getattr(m, "config", None)
        if c is not None and all(c is not s for s in seen):
            seen.append(c)
    return seen


@contextlib.contextmanager
def enabled(model, on: bool = True):
    """Inside: the model's nn.Dropout modules and SDPA attention use the bulk-random dropout."""
    if not on or cpu_kernels.lib() is None:
        yield
        return
    register()
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    configs = [c for c in _configs(model) if getattr(c, "_attn_implementation", None) == "sdpa"]
    for m in drops:
        m.forward = _module_forward.__get__(m)
    for c in configs:
        c._attn_implementation = NAME
    try:
        yield
    finally:
        for m in drops:
            m.__dict__.pop("forward", None)
        for c in configs:
            c._attn_implementation = "sdpa"
        _last_mask[:] = [None, None]  # the last batch's mask, kept for its layers, is not kept past training
