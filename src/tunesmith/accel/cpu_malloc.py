"""glibc malloc settings for training on CPU.

Why: a training step allocates and frees the same few-MB activation and gradient buffers hundreds of
times. glibc serves blocks above its mmap threshold with fresh mmaps, unmaps them on free and trims the
heap top, so every step page-faults the same memory in again. Fixing the mmap threshold at its maximum
(32 MB) and not trimming keeps those blocks in the heap for reuse, which is what preloading tcmalloc or
jemalloc does for PyTorch on CPU, without the preload. Blocks over 32 MB are still mmapped whatever the
threshold, so during training mmap is off altogether (`no_mmap`, M_MMAP_MAX 0): a dense gradient of a
30,522 x 384 fp32 table is 47 MB, and BERT2BERT's tied table makes four of them a step (the LM head's, its
cast, two lookups'), each a fresh mapping faulted in page by page (33 ms a copy): warm-started minilm trained
at ~1,600 tokens/s with mmap, ~2,000 without (docs/performance.md). glibc still maps memory where the heap
cannot grow. Peak memory is about unchanged: the heap keeps what a step needed at most, which is what the
peak was anyway (bench_train.py prints peak RSS against the Trainer: +3-4% with mmap off). After training,
mmap is back and the heap is trimmed, so a process that goes on (tune's trials, a notebook) does not keep
a training's large blocks: with the 1 GB trim threshold, a freed 300 MB block otherwise stayed resident.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4


MMAP_MAX_DEFAULT = 65536  # glibc's own


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(None)  # the C library already loaded into this process
        libc.mallopt, libc.malloc_trim  # noqa: B018  (both, or neither is used)
        return libc
    except (OSError, AttributeError, TypeError):  # TypeError: Windows takes no None; macOS has no mallopt
        return None


@functools.cache
def tune() -> bool:
    """Once per process; False where the C library has no mallopt (macOS) or refuses it: nothing changes."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, 2**30))


@contextlib.contextmanager
def no_mmap():
    """Inside (training): tune()'s settings and no mmapped blocks at all; after, mmap as glibc has it and
    the heap's free memory handed back (malloc_trim)."""
    global _inside
    libc = _libc()
    on = tune() and bool(libc.mallopt(M_MMAP_MAX, 0))
    _inside += 1
    try:
        yield on
    finally:
        _inside -= 1
        if on and not _inside:  # a training inside another (a stage of a run) leaves the outer one's setting
            libc.mallopt(M_MMAP_MAX, MMAP_MAX_DEFAULT)
            libc.malloc_trim(0)


_inside = 0
