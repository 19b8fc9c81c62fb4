"""AdamW for bf16 gradients and fp32 masters in one pass over memory, on CPU (numba).

Why by hand: with master weights (train/master_weights.py) torch needs five passes per optimizer step:
cast the bf16 gradients to an fp32 buffer, take its norm, run fused AdamW (which wants fp32 gradients),
and copy the masters back to bf16. On a MiniLM step that moved ~520 MB. Here one pass reads the bf16
gradients for the norm and one reads gradient, master, exp_avg, exp_avg_sq and writes master,
exp_avg, exp_avg_sq and the bf16 copy: ~325 MB. Same arithmetic as torch's fused AdamW (decoupled
weight decay, lerp for the first moment, bias correction by the step).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

CHUNK = 1 << 15  # elements per parallel task: fits L1/L2 for the five streams, amortises the task cost


def _f32(x):
    pass


@overload(_f32)
def _f32_impl(x):
    if isinstance(x, types.Integer):  # bf16 bit pattern: the high half of an fp32
        return lambda x: np.uint32(np.uint32(x) << 16).view(np.float32)
    return lambda x: np.float32(x)


@numba.njit(inline="always")
def _bf16_bits(x):
    """fp32 -> bf16 bits, round to nearest even (what torch's cast does); NaN stays NaN."""
    u = np.float32(x).view(np.uint32)
    nan = np.uint16((u >> np.uint32(16)) | np.uint32(0x40))
    rounded = np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    return nan if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else rounded


@numba.njit(fastmath=True, error_model="numpy", cache=True)
def _sum_squares_span(g):
    s = np.float32(0.0)  # fastmath: reassociating lets this reduction vectorise
    for i in range(g.size):
        x = _f32(g[i])
        s += x * x
    return s


@numba.njit(parallel=True, error_model="numpy", cache=True)
def sum_squares(g):
    """Sum of squares: fp32 within a chunk (as torch's norm accumulates), fp64 across chunks."""
    nc = (g.size + CHUNK - 1) // CHUNK
    part = np.empty(nc, np.float64)
    for c in prange(nc):
        part[c] = _sum_squares_span(g[c * CHUNK:(c + 1) * CHUNK])
    return part.sum()


@numba.njit(error_model="numpy", cache=True)
def _adamw_span(g, p, m, v, w16, s, decay, step, w1, f2, w2, inv_bc2, e):
    # Its own function over contiguous slices: LLVM vectorises this loop, not the same loop inlined in
    # the prange body. error_model="numpy": no zero-division check per element, which blocks vectorising.
    for i in range(p.size):
        gi = _f32(g[i]) * s
        mi = m[i] + w1 * (gi - m[i])
        vi = f2 * v[i] + w2 * gi * gi
        pi = p[i] * decay - step * mi / (math.sqrt(vi) * inv_bc2 + e)
        m[i] = mi
        v[i] = vi
        p[i] = pi
        w16[i] = _bf16_bits(pi)


@numba.njit(parallel=True, error_model="numpy", cache=True)
def adamw_(g, p, m, v, w16, chunks, hp, scale):
    """One AdamW step over flat buffers. chunks: (start, end, group) rows. hp, a row per group:
    1 - lr * wd, lr / (1 - b1^t), 1 - b1, b2, 1 - b2, 1 / sqrt(1 - b2^t), eps. g is multiplied by `scale`
    (the clipping coefficient)."""
    for c in prange(chunks.shape[0]):
        a, b, k = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        _adamw_span(g[a:b], p[a:b], m[a:b], v[a:b], w16[a:b], scale,
                    hp[k, 0], hp[k, 1], hp[k, 2], hp[k, 3], hp[k, 4], hp[k, 5], hp[k, 6])


def chunk_table(spans_groups, chunk: int = CHUNK) -> np.ndarray:
    """(start, end, group) spans split into parallel tasks of at most `chunk` elements."""
    rows = [(s, min(s + chunk, b), k) for a, b, k in spans_groups for s in range(a, b, chunk)]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)
