"""Model merging (linear / WiSE-FT, SLERP, task arithmetic, TIES) of runs fine-tuned from one base."""
