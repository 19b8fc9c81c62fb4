"""Load the base and the tuned models as state dicts with the same keys, or fail in one line.

A tuned model is a run folder (its model/, or its LoRA adapter/ merged into the base), a bare
PEFT adapter folder inside a run, or a Hugging Face classifier folder. The base is loaded with the
first tuned model's config, so its keys line up; what the base checkpoint lacks (a classification
head) is reported as missing and later taken from the tuned models.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from tunesmith.errors import TunesmithError
from tunesmith.models.registry import check_hub, resolve


@contextmanager
def quiet():
    """Loading a base without its head makes transformers print a load report; it is expected here."""
    prev = logging.getLogger("transformers").level
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger("transformers").setLevel(prev)


@dataclass
class Tuned:
    source: str          # what the user named
    model_dir: Path      # HF folder with config + tokenizer
    run_dir: Path | None
    adapter: Path | None  # LoRA adapter to merge into the base instead of reading model_dir's weights


def locate(name: str) -> Tuned:
    p = Path(name)
    if (p / "adapter_config.json").exists():
        run = p.parent if (p.parent / "recipe.yaml").exists() else None
        if run is None or not (run / "model" / "config.json").exists():
            raise TunesmithError(f"{p}: a bare LoRA adapter needs its run folder around it (for the label names); "
                                 f"pass the run folder instead")
        return Tuned(name, run / "model", run, p)
    if (p / "recipe.yaml").exists():
        if not (p / "model" / "config.json").exists():
            raise TunesmithError(f"{p}: the run has no finished model; finish or resume it before merging")
        adapter = p / "adapter" if (p / "adapter" / "adapter_config.json").exists() else None
        return Tuned(name, p / "model", p, adapter)
    if (p / "config.json").exists():
        return Tuned(name, p, None, None)
    raise TunesmithError(f"{p}: not a run folder, a model folder or a LoRA adapter; pass a `tunesmith train` --out folder")


def load_base(base: str, config, auto=AutoModelForSequenceClassification) -> tuple[torch.nn.Module, set[str], str]:
    """(model, keys the base checkpoint lacks or has in another shape, resolved path). `auto`: the transformers
    Auto class the task's weights load as (a classifier's by default; an encoder's for embedding runs)."""
    path = resolve(base)
    check_hub(path)
    base_cfg = AutoConfig.from_pretrained(path)
    if base_cfg.model_type != config.model_type:
        raise TunesmithError(f"--base {base} is a {base_cfg.model_type} model but the tuned model is "
                             f"{config.model_type}; merge models fine-tuned from the same base")
    # A mean-pooling classifier carries one extra averaging layer (models/pooling.py); the base lacks it,
    # so it is loaded as missing and taken from the tuned models, like the head.
    folded = int(getattr(config, "tunesmith_pooling", None) == "mean")
    for attr in ("hidden_size", "num_hidden_layers", "n_embd", "n_layer", "vocab_size", "intermediate_size"):
        a, b = getattr(base_cfg, attr, None), getattr(config, attr, None)
        if attr == "num_hidden_layers" and b is not None:
            b -= folded
        if a is not None and b is not None and a != b:
            raise TunesmithError(f"--base {base} has {attr}={a} but the tuned model has {attr}={b}; "
                                 f"mismatched architectures cannot be merged")
    with quiet():
        model, info = auto.from_pretrained(
            path, config=config, ignore_mismatched_sizes=True, output_loading_info=True, dtype=torch.float32)
    lacks = set(info["missing_keys"]) | {k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]}
    if folded:  # the untouched model's mean pooler starts as the identity (models/pooling.MeanPooler)
        with torch.no_grad():
            model.bert.pooler.dense.weight.copy_(torch.eye(config.hidden_size))
            model.bert.pooler.dense.bias.zero_()
    return model, lacks, path


def tuned_state(t: Tuned, base_path: str, config, auto=AutoModelForSequenceClassification) -> dict[str, torch.Tensor]:
    # A mean-pooling LoRA run's adapter was trained under a pooler the base checkpoint does not hold:
    # its merged model/ (folded) is the whole truth.
    if t.adapter is None or getattr(config, "tunesmith_pooling", None) == "mean":
        with quiet():
            m = auto.from_pretrained(t.model_dir, dtype=torch.float32)
        return m.state_dict()
    from peft import PeftModel

    # LoRA: apply the adapter to the base being merged (which is usually its own training base)
    with quiet():
        base = auto.from_pretrained(base_path, config=config, ignore_mismatched_sizes=True, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, t.adapter).merge_and_unload()
    return merged.state_dict()


def check_same(base_sd: dict, tuned_sd: dict, lacks: set[str], name: str) -> None:
    for k, v in base_sd.items():
        if k not in tuned_sd:
            raise TunesmithError(f"{name}: has no tensor '{k}' that the base has; mismatched architectures "
                                 f"cannot be merged")
        if k not in lacks and tuned_sd[k].shape != v.shape:
            raise TunesmithError(f"{name}: tensor '{k}' is {tuple(tuned_sd[k].shape)} but "
                                 f"{tuple(v.shape)} in the base; mismatched architectures cannot be merged")
