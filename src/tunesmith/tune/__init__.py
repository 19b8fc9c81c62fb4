"""AutoML on Optuna: search strategy, hyperparameters and base model under a budget (see search.py)."""
