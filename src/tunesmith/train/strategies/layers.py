"""Find the embeddings and the stack of transformer layers in any HF architecture, generically."""
from __future__ import annotations

from tunesmith.accel.model_parts import layer_stack  # defined in accel, the lowest layer, which needs it too


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
