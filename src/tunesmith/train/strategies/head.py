"""Only what sits above the transformer layers trains: pooler / final norm and the classifier."""
from tunesmith.train.strategies.layers import freeze_bottom, num_layers


def apply(model, k, recipe):
    return freeze_bottom(model, num_layers(model))
