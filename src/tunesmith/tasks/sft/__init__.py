"""Supervised instruction tuning of decoders (causal LMs), measured against prompting the base model."""
from tunesmith.tasks.sft.task import InstructionTuning

__all__ = ["InstructionTuning"]
