"""glibc malloc settings for training on CPU.

Why: a training step allocates and frees the same few-MB activation and gradient buffers hundreds of
times. glibc serves blocks above its mmap threshold with fresh mmaps, unmaps them on free and trims the
heap top, so every step page-faults the same memory in again. Fixing the mmap threshold at its maximum
(32 MB) and not trimming keeps those blocks in the heap for reuse, which is what preloading tcmalloc or
jemalloc does for PyTorch on CPU, without the preload. Blocks over 32 MB are still mmapped whatever the
threshold, so mmap is off altogether (M_MMAP_MAX 0): a dense gradient of a 30,522 x 384 fp32 table is 47 MB,
and BERT2BERT's tied table makes four of them a step (the LM head's, its cast, two lookups'), each a fresh
mapping faulted in page by page (33 ms a copy): warm-started minilm trained at ~1,600 tokens/s with mmap,
~2,000 without (docs/performance.md). glibc still maps memory where the heap cannot grow. Peak memory is
about unchanged: the heap keeps what a step needed at most, which is what the peak was anyway (bench_train.py
prints peak RSS against the Trainer: +3-4% with mmap off).
"""
from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4


@functools.cache
def tune() -> bool:
    """Once per process; False where the C library has no mallopt (macOS) or refuses it: nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError, TypeError):  # TypeError: Windows takes no None
        return False
    return all(bool(mallopt(k, v)) for k, v in ((M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 2**30),
                                                 (M_MMAP_MAX, 0)))
