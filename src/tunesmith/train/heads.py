"""Sequence-classification heads called directly on cached features, per architecture.

Why by hand: with `head` every transformer layer is frozen and replayed from the feature cache, yet a
step through the model's own forward still builds attention masks, runs the embeddings and passes
through every layer: ~1 ms a step, most of a cached epoch. What trains reads one token per text (BERT's
pooler the first, GPT-2 and Llama the last non-padding one), so the cache hands over that token's hidden
state and the head's own modules run on it: the same parameters and the same arithmetic as the model's
forward (tests/train/test_train_heads.py), for a fraction of the work. Architectures not listed here go
through the model's forward with replayed layers, which works for any of them.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

# model_type -> builder(model) -> (what the head reads: "first" | "last" token, or "mean": the pooler's sentence
# vector, made once per example by sentence_rows; head(hidden) -> logits)
Head = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


def _bert(model) -> Head | None:
    pooler = model.bert.pooler
    if pooler is None:
        return None
    # A mean pooler (models/pooling.py) reads every token: the cache hands over its sentence vector.
    which = "mean" if hasattr(pooler, "sentence") else "first"
    return which, lambda h: model.classifier(model.dropout(pooler.activation(pooler.dense(h))))


def _roberta(model) -> Head:
    return "first", lambda h: model.classifier(h[:, None, :])  # RobertaClassificationHead reads [:, 0]


def _distilbert(model) -> Head:
    return "first", lambda h: model.classifier(model.dropout(torch.relu(model.pre_classifier(h))))


def _gpt2(model) -> Head:
    return "last", lambda h: model.score(model.transformer.ln_f(h))


def _decoder(model) -> Head | None:
    """transformers' GenericForSequenceClassification (Llama, Mistral, Qwen2...): final norm, then score."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    norm = getattr(base, "norm", None)
    if norm is None:
        return None
    return "last", lambda h: model.score(norm(h))


BUILDERS = {"bert": _bert, "roberta": _roberta, "xlm-roberta": _roberta, "camembert": _roberta,
            "distilbert": _distilbert, "gpt2": _gpt2, "llama": _decoder, "mistral": _decoder, "qwen2": _decoder}


def for_model(model) -> Head | None:
    """The direct head of a sequence classifier, or None (unknown architecture: use the model's forward)."""
    build = BUILDERS.get(getattr(model.config, "model_type", ""))
    if build is None or not type(model).__name__.endswith("ForSequenceClassification"):
        return None
    return build(model)


def token_rows(which: str, ids: list[list[int]], offsets, pad_id: int | None):
    """Per example, the row of the flat feature table its head reads. "last" is the rightmost token that is
    not padding, as transformers' classifiers pick it (a text may end in the pad id: GPT-2's pad is EOS)."""
    offsets = np.asarray(offsets)
    if which == "first":
        return offsets[:-1].copy()
    last = np.empty(len(ids), dtype=np.int64)
    for i, x in enumerate(ids):
        j = len(x) - 1
        while j > 0 and pad_id is not None and x[j] == pad_id:
            j -= 1
        last[i] = j
    return offsets[:-1] + last


def sentence_rows(model, flat: torch.Tensor, offsets) -> torch.Tensor:
    """Per example, the mean pooler's sentence vector (models/pooling.py) from the flat feature table."""
    offsets = torch.as_tensor(np.asarray(offsets), dtype=torch.long)
    lens = offsets[1:] - offsets[:-1]
    seg = torch.repeat_interleave(torch.arange(len(lens)), lens)
    sums = torch.zeros(len(lens), flat.shape[1], dtype=torch.float32).index_add_(0, seg, flat.float())
    mean = sums / lens.clamp(min=1).unsqueeze(1).float()
    from tunesmith.models.pooling import C

    x = mean + flat[offsets[:-1]].float() / C
    return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=model.bert.pooler.eps)
