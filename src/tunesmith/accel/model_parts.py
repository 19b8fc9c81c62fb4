"""Where a model's transformer layers are and which modules come before them, in any HF architecture.

Here rather than in train/: accel is the lowest layer and master_weights needs the embedding modules
(their outputs are where bf16 activations start). train/strategies/layers.py re-exports layer_stack.
"""
from __future__ import annotations

import torch
from torch import nn


def layer_stack(model) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the longest ModuleList in the backbone."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and "lora" not in name:
            if best is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best is None:
        raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")
    return best


def embedding_modules(model) -> list[torch.nn.Module]:
    """The outermost modules registered before the layer stack that hold an embedding table (BERT:
    `bert.embeddings`; GPT-2: `wte`, `wpe`; Llama: `embed_tokens`)."""
    prefix, _ = layer_stack(model)
    found = []
    for name, mod in model.named_modules():
        if name == prefix:
            break
        if not name or prefix.startswith(name + ".") or any(name.startswith(f + ".") for f, _ in found):
            continue
        if any(isinstance(m, torch.nn.Embedding) for m in mod.modules()):
            found.append((name, mod))
    return [m for _, m in found]
