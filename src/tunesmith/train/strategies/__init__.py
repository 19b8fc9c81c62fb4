"""Strategy registry: which parameters train. `freeze:K` takes K; the others take no argument.

Each strategy is one module with `apply(model, k, recipe) -> model`.
"""
from __future__ import annotations

from tunesmith.errors import TunesmithError
from tunesmith.train.strategies import freeze, full, head, lora, qlora
from tunesmith.train.strategies.layers import num_layers

STRATEGIES = {"full": full, "head": head, "freeze": freeze, "lora": lora, "qlora": qlora}


def parse(spec: str) -> tuple[str, int | None]:
    name, _, arg = spec.partition(":")
    return name, (int(arg) if arg else None)


def apply(model, spec: str, recipe, peft_task_type: str = "SEQ_CLS"):
    """`peft_task_type`: the task's (tasks/base.Task.peft_task_type), for LoRA's wrapper and saved head."""
    name, k = parse(spec)
    if name == "freeze":
        n = num_layers(model)
        if k > n:
            raise TunesmithError(f"--strategy freeze:{k}: the model has only {n} layers; use freeze:0 to freeze:{n}")
    if name in ("lora", "qlora"):
        return STRATEGIES[name].apply(model, k, recipe, peft_task_type)
    return STRATEGIES[name].apply(model, k, recipe)


def frozen_layers(model, spec: str) -> int:
    """How many bottom transformer layers are frozen (their outputs can be cached), else 0."""
    name, k = parse(spec)
    if name == "head":
        return num_layers(model)
    return k if name == "freeze" else 0
