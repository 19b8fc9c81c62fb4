"""Hand-written CPU kernels (cpu_kernels.c), compiled on first use and cached per machine.

Why by hand: two hot spots of bf16 training on CPU have no single torch op.
- AdamW from bf16 gradients into fp32 masters (accel/master_weights.py). torch's fused AdamW wants fp32
  gradients, so it took five passes a step: gather and cast the gradients, their norm, the update, the
  copy back to bf16. Here the kernels read each weight's bf16 gradient where autograd left it, one pass
  for the norm and one for the update: ~300 MB a MiniLM step instead of ~520, and the optimizer side
  went from ~28 to ~12 ms a step (batch 32).
- Dropout (accel/fast_dropout.py): torch's CPU `bernoulli_` draws one Mersenne-Twister number per
  element on one thread (1.3 ms for a (32, 17, 384) mask); counter-based SplitMix64 on all threads,
  applied in the same pass, takes ~0.1 ms, and the backward draws the mask again instead of storing it.
Why C through ctypes, not numba: numba's import and LLVM cost ~250 MB of resident memory, which put peak
memory above the Trainer's. gcc/clang compile this in ~0.5 s; the library is cached under
$TUNESMITH_CACHE/kernels keyed by source, compiler and CPU. Without a C compiler `lib()` is None and
callers use plain torch (slower, same arithmetic). TUNESMITH_CPU_KERNELS=off does the same on purpose; it
leaves lazy rows and the malloc settings on: TUNESMITH_ENGINE=plain turns everything off (accel/__init__.py).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tunesmith.config import cache_root

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
_P, _I64, _U64, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float
SIGNATURES = {
    "sum_squares_bf16": (ctypes.c_double, [_P, _P, _I64]),
    "sum_squares_f32": (ctypes.c_double, [_P, _P, _I64]),
    "adamw_bf16": (None, [_P, _P, _P, _P, _P, _P, _I64, _P, _F32]),
    "adamw_f32": (None, [_P, _P, _P, _P, _P, _P, _I64, _P, _F32]),
    "adamw_rows_f32": (None, [_P, _I64, _P, _P, _P, _P, _I64, _P]),
    "dropout_bf16": (None, [_P, _P, _I64, _U64, _U64, _F32]),
    "dropout_f32": (None, [_P, _P, _I64, _U64, _U64, _F32]),
}


def _cpu_id() -> str:
    try:  # -march=native: a library built on one CPU may not run on another (a shared home folder)
        return next(l for l in open("/proc/cpuinfo") if l.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor()


@functools.cache
def lib() -> ctypes.CDLL | None:
    """The compiled kernels, or None where there is no working C compiler with OpenMP (or it is off:
    TUNESMITH_CPU_KERNELS=off)."""
    if os.environ.get("TUNESMITH_CPU_KERNELS") == "off" or platform.system() != "Linux":
        return None  # OpenMP through the toolchain's libgomp is what torch's Linux wheels ship
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    src = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([src, cc.encode(), " ".join(FLAGS).encode(), _cpu_id().encode()]))
    path = cache_root() / "kernels" / f"cpu_kernels-{key.hexdigest()[:16]}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        try:
            subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], check=True, capture_output=True, timeout=120)
            os.replace(tmp, path)  # atomic: processes compiling at once all end with a whole library
        except (OSError, subprocess.SubprocessError):
            Path(tmp).unlink(missing_ok=True)
            return None
    try:
        so = ctypes.CDLL(str(path))
    except OSError:
        return None
    for name, (res, args) in SIGNATURES.items():
        fn = getattr(so, name)
        fn.restype, fn.argtypes = res, args
    return so


def adamw_hyper(groups, step: float) -> np.ndarray:
    """The AdamW kernels' 7 floats per parameter group (`Hyper` in cpu_kernels.c): decay, step size,
    1 - beta1, beta2, 1 - beta2, the second moment's bias correction, eps, for optimizer step `step`."""
    lr, wd, b1, b2, eps = np.array([[g["lr"], g["weight_decay"], *g["betas"], g["eps"]] for g in groups]).T
    return np.ascontiguousarray(np.stack([1 - lr * wd, lr / (1 - b1 ** step), 1 - b1, b2, 1 - b2,
                                          1 / np.sqrt(1 - b2 ** step), eps], 1), dtype=np.float32)
