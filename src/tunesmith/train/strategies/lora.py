"""LoRA through PEFT. Target modules per architecture from PEFT's own table, overridable."""
from __future__ import annotations

import torch.nn as nn

# Attention projections by common name, for architectures PEFT's table does not list (DistilBERT...).
FALLBACK_TARGETS = ["query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "c_attn", "Wqkv", "qkv_proj"]


def target_modules(model) -> list[str]:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table

    known = table.get(model.config.model_type)
    if known:
        return list(known)
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    found = [t for t in FALLBACK_TARGETS if t in names]
    if not found:
        raise ValueError(f"no LoRA target modules known for {model.config.model_type}; set lora_target_modules")
    return found


def apply(model, k, recipe, task_type: str = "SEQ_CLS"):
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(task_type=getattr(TaskType, task_type), r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                     lora_dropout=recipe.lora_dropout,
                     target_modules=recipe.lora_target_modules or target_modules(model))
    return get_peft_model(model, cfg)  # SEQ_CLS / TOKEN_CLS put the classifier head in modules_to_save
