"""Embeddings and the bottom K transformer layers frozen; the rest trains."""
from tunesmith.train.strategies.layers import freeze_bottom


def apply(model, k, recipe):
    return freeze_bottom(model, k)
