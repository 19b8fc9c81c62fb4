"""Find the embeddings and the stack of transformer layers in any HF architecture, generically."""
from __future__ import annotations

import torch.nn as nn


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


def num_layers(model) -> int:
    return len(layer_stack(model)[1])


def split_parameters(model, k: int):
    """Names of parameters frozen by freezing the embeddings and the bottom k layers.

    Embeddings are every parameter registered before the layer stack (BERT: embeddings, GPT-2: wte
    and wpe, Llama: embed_tokens); what comes after (final norm, pooler, classifier) is the head.
    """
    prefix, stack = layer_stack(model)
    frozen, seen_stack = set(), False
    for name, _ in model.named_parameters():
        if name.startswith(prefix + "."):
            seen_stack = True
            idx = int(name[len(prefix) + 1:].split(".")[0])
            if idx < k:
                frozen.add(name)
        elif not seen_stack:
            frozen.add(name)
    return frozen


def freeze_bottom(model, k: int):
    frozen = split_parameters(model, k)
    for name, p in model.named_parameters():
        p.requires_grad = name not in frozen
    return model
