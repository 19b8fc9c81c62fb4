"""--strategy qlora (Dettmers et al. 2023): the base loaded in 4-bit NF4 through bitsandbytes with bf16 compute,
LoRA trained on top (train/strategies/qlora.py). CUDA only: bitsandbytes' 4-bit kernels; `pip install
tunesmith[gpu]` brings it, imported only here and only for a qlora run."""
from __future__ import annotations

import os

import torch

from tunesmith.errors import TunesmithError

QLORA = "qlora"


def check(strategy: str, task_name: str, loads_4bit: bool) -> None:
    """Refuse a qlora run that cannot go, in one line and before any model loads."""
    if strategy != QLORA:
        return
    if not torch.cuda.is_available():
        raise TunesmithError("--strategy qlora needs a CUDA GPU (bitsandbytes' 4-bit kernels); without one use "
                             "--strategy lora")
    if not loads_4bit:
        raise TunesmithError(f"--strategy qlora: --task {task_name} does not load a 4-bit model; use --strategy lora")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TunesmithError("--strategy qlora needs bitsandbytes: pip install 'tunesmith[gpu]'") from None


def load_kwargs(strategy: str) -> dict:
    """from_pretrained's arguments for the base: 4-bit NF4 (double-quantized) on this process's GPU under qlora,
    else fp32."""
    if strategy != QLORA:
        return {"dtype": torch.float32}
    from transformers import BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    # the quantized weights live where they were loaded: one GPU per --nproc process
    return {"quantization_config": q, "dtype": torch.bfloat16,
            "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}
