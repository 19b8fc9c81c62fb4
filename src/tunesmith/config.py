"""The recipe: every setting of a run, validated at the edge, written out fully resolved."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tunesmith.errors import TunesmithError


def cache_root() -> Path:
    """Where converted models, embeddings and frozen-layer features are kept: $TUNESMITH_CACHE."""
    return Path(os.environ.get("TUNESMITH_CACHE") or Path.home() / ".cache" / "tunesmith")

STRATEGY_RE = re.compile(r"^(full|head|lora|freeze:\d+)$")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # data
    train: str
    test: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    task: Literal["auto", "single_label", "multilabel", "sft"] = "auto"
    val_fraction: float = Field(0.1, ge=0.0, lt=0.9)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9)   # only without --test
    slice_column: str | None = None
    retention_data: str | None = None
    # model
    model: str = "minilm"
    max_length: int | None = Field(None, ge=8)          # None: min(model limit, 128)
    # training
    strategy: str = "full"
    epochs: int = Field(5, ge=1)
    lr: float | None = Field(None, gt=0)                # None: sized to the data (train/optim.default_lr)
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, ge=0)                 # 0 = off
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    patience: int = Field(2, ge=0)                      # 0 = no early stopping
    metric: str = "macro_f1"                            # validation metric for early stopping
    seed: int = 42
    bf16: Literal["auto", "on", "off"] = "auto"
    head_init: Literal["probe", "random"] = "probe"     # LP-FT: the classifier starts as a linear probe
    pooling: Literal["auto", "native"] = "auto"          # auto: what the checkpoint declares (mean for ST models)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_target_modules: list[str] | None = None
    # instruction tuning (task sft)
    prompt_column: str | None = None
    response_column: str | None = None
    train_on_prompt: bool = False                       # default: loss on response tokens only
    overflow: Literal["drop", "truncate"] = "drop"      # rows over max_length: drop, or cut the prompt's start
    packing: bool = False
    gradient_checkpointing: bool = False
    max_new_tokens: int = Field(128, ge=1)
    eval_generations: int = Field(16, ge=0)             # held-out prompts generated before/after
    few_shot_k: int = Field(3, ge=0)                    # retrieval few-shot baseline; 0 = off
    # output
    out: str | None = None
    audit: bool = True
    strict: bool = False
    baselines: bool = True
    keep_checkpoints: bool = False                      # keep checkpoint/last.pt, best.pt after success

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v):
        if not STRATEGY_RE.match(v):
            raise ValueError("must be full, head, lora or freeze:K (K = number of bottom layers to freeze)")
        return v


def validation_message(e: ValidationError, where: str) -> str:
    errs = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "recipe"
        errs.append(f"{loc}: {err['msg']}")
    return f"{where}: " + "; ".join(errs)


def make_recipe(**kwargs) -> Recipe:
    try:
        return Recipe(**{k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as e:
        raise TunesmithError(validation_message(e, "invalid settings")) from None


def read_yaml_mapping(path, what: str, expected: str) -> dict:
    """A YAML file that must hold a mapping; each failure is one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise TunesmithError(f"{path}: {what} not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise TunesmithError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise TunesmithError(f"{path}: expected {expected}")
    return doc


def read_recipe_file(path) -> dict:
    """The YAML mapping of a recipe file (its `recipe:` section, and others such as `tune:`)."""
    return read_yaml_mapping(path, "recipe file", "a mapping of settings")


def load_recipe(path, **overrides) -> Recipe:
    doc = read_recipe_file(path)
    doc = dict(doc.get("recipe", doc))
    doc.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Recipe(**doc)
    except ValidationError as e:
        raise TunesmithError(validation_message(e, str(path))) from None
