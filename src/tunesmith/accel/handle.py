"""The training handle without master weights, shared by the plain engine and master_weights.use(on=False):
the loop calls the same three methods either way."""
from __future__ import annotations

import contextlib


class NoMasters:
    def computing(self):
        return contextlib.nullcontext()

    def gather_grads(self):
        pass

    def for_optimizer(self):
        return None
