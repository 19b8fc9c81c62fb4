"""The search space as data: a pydantic model that a recipe file's `tune:` section narrows or widens.

    recipe: {val_fraction: 0.1}
    tune:
      strategies: [head, lora]
      lr: {head: [1e-3, 1e-2], lora: [1e-4, 1e-3]}
      epochs: [1, 4]

Each strategy has its own learning-rate parameter (`lr_head`, `lr_full`...): the good ranges differ by
two orders of magnitude, and separate names give TPE clean conditional sub-spaces.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunesmith.config import Recipe, read_recipe_file, validation_message
from tunesmith.errors import TunesmithError

Range = tuple[float, float]
STRATEGY_NAMES = ("head", "freeze", "lora", "full")


class TuneSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    models: list[str] | None = None                   # None: --models, else the recipe's model
    strategies: list[str] = list(STRATEGY_NAMES)       # freeze searches K over the model's layers
    lr: dict[str, Range] = {"head": (3e-4, 1e-2), "freeze": (2e-5, 5e-4), "lora": (1e-4, 3e-3), "full": (1e-5, 2e-4)}
    weight_decay: Range = (0.0, 0.1)
    warmup_ratio: Range = (0.0, 0.2)
    label_smoothing: Range = (0.0, 0.15)
    batch_size: list[int] = [16, 32, 64]
    epochs: tuple[int, int] = (1, 6)                   # the upper end is also the pruner's max resource
    max_length: list[int] | None = None                # None: from token-length percentiles of the train texts
    lora_r: list[int] = [4, 8, 16, 32]
    freeze_layers: tuple[int, int] | None = None       # None: 1 .. layers-1
    fixed: dict[str, Any] = {}                         # recipe fields every trial uses as they are
    # engine
    pruner: Literal["hyperband", "halving", "none"] = "hyperband"
    reduction_factor: int = Field(3, ge=2)
    startup_trials: int = Field(5, ge=0)               # random trials before TPE models the space
    heartbeat_seconds: int = Field(30, ge=1)           # RDB storage: a silent worker's trial fails after 2x

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v):
        bad = [s for s in v if s not in STRATEGY_NAMES]
        if bad or not v:
            raise ValueError(f"unknown strategies {bad}; choose from {', '.join(STRATEGY_NAMES)}")
        return v

    @model_validator(mode="after")
    def _ranges(self):
        for s in self.strategies:
            if s not in self.lr:
                raise ValueError(f"lr: no range for strategy {s}")
        for name, (lo, hi) in [*((f"lr.{k}", r) for k, r in self.lr.items()), ("weight_decay", self.weight_decay),
                               ("warmup_ratio", self.warmup_ratio), ("label_smoothing", self.label_smoothing),
                               ("epochs", self.epochs)]:
            if lo > hi or lo < 0:
                raise ValueError(f"{name}: [{lo}, {hi}] is not a range of non-negative numbers, low first")
        if any(lo <= 0 for lo, _ in self.lr.values()):
            raise ValueError("lr: learning rates are searched on a log scale and must be above 0")
        if self.epochs[0] < 1:
            raise ValueError("epochs: at least 1")
        bad = [k for k in self.fixed if k not in Recipe.model_fields]
        if bad:
            raise ValueError(f"fixed: {bad} are not recipe fields")
        return self


def load_space(config: str | None) -> tuple[dict, TuneSpace]:
    """(recipe settings, search space) from a recipe file; both empty/default without one."""
    if not config:
        return {}, TuneSpace()
    doc = read_recipe_file(config)
    try:
        space = TuneSpace(**(doc.get("tune") or {}))
    except ValidationError as e:
        raise TunesmithError(validation_message(e, f"{config} (tune section)")) from None
    return dict(doc.get("recipe") or {}), space


def length_choices(token_lengths: list[int], limit: int) -> list[int]:
    """Max-length candidates: the 90th/99th percentile and longest train text, rounded up to 8."""
    if not token_lengths:
        return [min(limit, 128)]
    qs = np.percentile(token_lengths, [90, 99, 100])
    return sorted({min(limit, int(-(-q // 8) * 8)) for q in qs})


def suggest(trial, space: TuneSpace, models: list[str], layers: dict[str, int], lengths: dict[str, list[int]]) -> dict:
    """Recipe fields for one trial. `layers`/`lengths`: per model, its layer count and max-length choices."""
    model = trial.suggest_categorical("model", models) if len(models) > 1 else models[0]
    strategy = trial.suggest_categorical("strategy", space.strategies)
    s = {"model": model, **space.fixed}
    lo, hi = space.lr[strategy]
    s["lr"] = trial.suggest_float(f"lr_{strategy}", lo, hi, log=True)
    if strategy == "freeze":
        n = layers[model]
        lo_k, hi_k = space.freeze_layers or (1, max(1, n - 1))
        k = trial.suggest_int("freeze_layers", max(0, lo_k), min(n, hi_k))
        strategy = f"freeze:{k}"
    elif strategy == "lora":
        s["lora_r"] = trial.suggest_categorical("lora_r", space.lora_r)
        s["lora_alpha"] = 2 * s["lora_r"]  # the usual alpha = 2r keeps the update scale fixed across ranks
    s["strategy"] = strategy
    s["weight_decay"] = trial.suggest_float("weight_decay", *space.weight_decay)
    s["warmup_ratio"] = trial.suggest_float("warmup_ratio", *space.warmup_ratio)
    s["label_smoothing"] = trial.suggest_float("label_smoothing", *space.label_smoothing)
    s["batch_size"] = trial.suggest_categorical("batch_size", space.batch_size)
    s["epochs"] = trial.suggest_int("epochs", *space.epochs)
    choices = space.max_length or lengths[model]
    # Optuna fixes a categorical's choices per name, and each model has its own length choices.
    name = "max_length" if len(models) == 1 else f"max_length_{models.index(model)}"
    s["max_length"] = trial.suggest_categorical(name, choices) if len(choices) > 1 else choices[0]
    return s


def first_guesses(space: TuneSpace) -> list[dict]:
    """Trials queued at the start of a fresh study: known-good settings give the pruner a bar to beat."""
    guesses = []
    if "head" in space.strategies:
        guesses.append({"strategy": "head", "lr_head": float(np.clip(3e-3, *space.lr["head"]))})
    if "full" in space.strategies:
        guesses.append({"strategy": "full", "lr_full": float(np.clip(1e-4, *space.lr["full"]))})
    return guesses
