"""Task registry: a task turns labels into targets, logits into predictions, and scores them."""
from tunesmith.tasks.classification import SingleLabel
from tunesmith.tasks.multilabel import MultiLabel

TASKS = {"single_label": SingleLabel, "multilabel": MultiLabel}


def get_task(name: str, labels: list[str]):
    return TASKS[name](labels)
