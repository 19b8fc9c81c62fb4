"""Merge methods by name. A method is one module with merge(base, tuned, spec) -> tensor and
with_weight(spec, w) -> spec (what --weight / --sweep moves)."""
from tunesmith.merge import linear, slerp, task_arithmetic, ties

METHODS = {"linear": linear, "slerp": slerp, "task_arithmetic": task_arithmetic, "ties": ties}
