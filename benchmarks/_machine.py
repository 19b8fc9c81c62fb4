"""What a benchmark ran on, in one line: CPU model, CPU count and its bf16 features. tunesmith's
bf16 speed depends on AMX (bf16 tile matmuls) versus AVX512-BF16 alone (dot products only), so
numbers from two machines only compare when this line says which one they came from."""
from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_features() -> str:
    import torch

    amx, avx = torch.cpu._is_amx_tile_supported(), torch.cpu._is_avx512_bf16_supported()
    if amx:
        return "AMX + AVX512-BF16" if avx else "AMX"
    return "AVX512-BF16 only (no AMX)" if avx else "none (no AMX, no AVX512-BF16: tunesmith trains in fp32)"


def cpu_line() -> str:
    return f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; bf16: {bf16_features()}"
