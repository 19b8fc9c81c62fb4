"""glibc malloc settings for training on CPU.

Why: a training step allocates and frees the same few-MB activation and gradient buffers hundreds of
times. glibc serves blocks above its mmap threshold with fresh mmaps, unmaps them on free and trims the
heap top, so every step page-faults the same memory in again. Fixing the mmap threshold at its maximum
(32 MB) and not trimming keeps those blocks in the heap for reuse, which is what preloading tcmalloc or
jemalloc does for PyTorch on CPU, without the preload. Peak memory is unchanged: the heap keeps what a
step needed at most, which is what the peak was anyway (bench_train.py prints peak RSS against the Trainer).
"""
from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.cache
def tune() -> bool:
    """Once per process; False where the C library has no mallopt (macOS) or refuses it: nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError, TypeError):  # TypeError: Windows takes no None
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**30))
