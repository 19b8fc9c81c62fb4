"""tunesmith: turn a pretrained transformer and your own data into a measured specialist model."""
__version__ = "0.1.0"

# The stage folders `train/` and `evaluate/` share names with the API functions below. Importing a
# submodule sets it as an attribute of its parent, so load both packages first and then bind the
# functions: `tunesmith.train(...)` stays the function and `tunesmith.train.loop` still imports.
from tunesmith import evaluate as _evaluate_pkg, train as _train_pkg  # noqa: E402,F401


def train(*args, **kwargs):
    from tunesmith.api import train as _train

    return _train(*args, **kwargs)


def predict(*args, **kwargs):
    from tunesmith.api import predict as _predict

    return _predict(*args, **kwargs)


def evaluate(*args, **kwargs):
    from tunesmith.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["train", "predict", "evaluate", "__version__"]
