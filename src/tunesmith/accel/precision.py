"""bf16 autocast where the hardware does bf16 matrix products fast; fp32 master weights always."""
from __future__ import annotations

import contextlib

import torch


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # AVX512-BF16 or AMX: oneDNN runs bf16 GEMMs ~2.5x faster than fp32 there. Without them
        # bf16 is emulated and slower than fp32, so "auto" stays in fp32.
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def use_bf16(setting: str, device: torch.device) -> bool:
    if setting == "off":
        return False
    ok = bf16_supported(device)
    if setting == "on" and not ok:
        from tunesmith.errors import TunesmithError

        raise TunesmithError(f"--bf16 on: this {device.type} has no fast bf16 support; use --bf16 auto or off")
    return ok


def autocast(enabled: bool, device: torch.device):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
