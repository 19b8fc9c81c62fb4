"""Load a tokenizer and a sequence-classification model from any supported architecture."""
from __future__ import annotations

import logging
import warnings

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from tunesmith.errors import TunesmithError
from tunesmith.models.registry import check_hub, resolve

DEFAULT_MAX_LENGTH = 128


def model_max_length(config, tokenizer) -> int:
    """What the architecture supports: position embeddings bound it; tokenizers often say 1e30."""
    limits = [getattr(config, a) for a in ("max_position_embeddings", "n_positions", "max_seq_len")
              if isinstance(getattr(config, a, None), int)]
    if config.model_type in ("roberta", "xlm-roberta", "camembert") and limits:
        limits = [limits[0] - 2]  # RoBERTa offsets positions by padding_idx + 1
    tok = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok, int) and tok < 1_000_000:
        limits.append(tok)
    return min(limits) if limits else 512


def load_tokenizer(path: str):
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        # Decoders (GPT-2, Llama) have no pad token; padding is masked out, so EOS is safe to reuse.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def resolve_max_length(requested: int | None, config, tokenizer, model_name: str,
                       default: int = DEFAULT_MAX_LENGTH) -> int:
    limit = model_max_length(config, tokenizer)
    if requested is None:
        return min(limit, default)
    if requested > limit:
        raise TunesmithError(f"--max-length {requested} is above what model '{model_name}' supports ({limit}); "
                             f"use --max-length {limit} or less")
    return requested


def load_classifier(model_name: str, labels: list[str], multi_label: bool = False, dtype=torch.float32,
                    pooling: str = "auto"):
    """Returns (model, tokenizer, path). Label names go into the config so pipelines show them.

    pooling "auto": the sentence vector the checkpoint declares (models/pooling.py); "native": the
    architecture's own head input (BERT: the [CLS] pooler)."""
    path = resolve(model_name)
    check_hub(path)
    config = AutoConfig.from_pretrained(path)
    tok = load_tokenizer(path)
    config.num_labels = len(labels)
    config.id2label = {i: l for i, l in enumerate(labels)}
    config.label2id = {l: i for i, l in enumerate(labels)}
    config.problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    if config.pad_token_id is None:
        config.pad_token_id = tok.pad_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prev = logging.getLogger("transformers").level
        logging.getLogger("transformers").setLevel(logging.ERROR)  # "newly initialized head" is expected
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=dtype)
        except ValueError as e:
            raise TunesmithError(f"model '{model_name}' ({config.model_type}) cannot be used for "
                                 f"sequence classification: {str(e).splitlines()[0]}") from None
        finally:
            logging.getLogger("transformers").setLevel(prev)
    from tunesmith.models.pooling import install

    if pooling == "auto":
        install(model, path)  # the sentence vector the checkpoint was trained for (models/pooling.py)
    return model, tok, path
