"""Text classification: one label per row (single_label) or a set of labels per row (multilabel)."""
from tunesmith.tasks.classification.multilabel import MultiLabel
from tunesmith.tasks.classification.single_label import SingleLabel

__all__ = ["SingleLabel", "MultiLabel"]
