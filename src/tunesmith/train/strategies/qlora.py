"""QLoRA: LoRA (lora.py) on a base loaded in 4-bit (models/quantize.py). The base stays frozen in 4-bit; PEFT's
prepare_model_for_kbit_training casts the remaining small weights (norms, embeddings) to fp32 for stable
training and turns on gradient checkpointing when the recipe asks for it."""
from __future__ import annotations

import torch

from tunesmith.train.strategies import lora


def apply(model, k, recipe, task_type: str = "SEQ_CLS"):
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    return lora.apply(model, k, recipe, task_type)


def merged(task, recipe, adapter_dir, device):
    """The trained adapter merged into a bf16 copy of the base, reloaded unquantized: merging into the 4-bit
    weights would round the update away (and bitsandbytes' merge dequantizes with that loss)."""
    from peft import PeftModel

    base = task.load_model(recipe.model_copy(update={"strategy": "lora"}))[0].to(torch.bfloat16)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().to(device)
