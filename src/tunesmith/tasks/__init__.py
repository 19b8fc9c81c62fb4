"""The task registry: a task is a package under tasks/ and one line here (name → "module:Class").

Classes are imported when asked for, so `tunesmith --help` does not import every task's libraries."""
from __future__ import annotations

from importlib import import_module

from tunesmith.tasks.base import Task, unknown

REGISTRY = {
    "single_label": "tunesmith.tasks.classification:SingleLabel",
    "multilabel": "tunesmith.tasks.classification:MultiLabel",
    "sft": "tunesmith.tasks.sft:InstructionTuning",
    "token": "tunesmith.tasks.token:TokenClassification",
    "embedding": "tunesmith.tasks.embedding:Embedding",
    "seq2seq": "tunesmith.tasks.seq2seq:Seq2Seq",
}


def get_task_class(name: str) -> type[Task]:
    if name not in REGISTRY:
        raise unknown(name, REGISTRY)
    module, cls = REGISTRY[name].split(":")
    return getattr(import_module(module), cls)


def get_task(name: str, labels: list[str]) -> Task:
    return get_task_class(name)(labels)


def detection_order() -> list[type[Task]]:
    """Tasks asked in turn whether recipe.train's columns fit them (--task auto); classification last."""
    return [get_task_class(n) for n in sorted(REGISTRY, key=lambda n: get_task_class(n).detect_priority)]
