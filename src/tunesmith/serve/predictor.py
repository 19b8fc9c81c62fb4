"""A run loaded for serving: the Predictor's records (api.predict's, with the run's calibrated temperature)
behind the answer the task's serve schema describes (tasks/base.py `serve_*`: route, request, inputs, body)."""
from __future__ import annotations

from tunesmith.predictor import Predictor


def clean(text: str, max_chars: int) -> tuple[str, bool]:
    # JSON may carry lone surrogates; tokenizers need valid UTF-8.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return (text[:max_chars], True) if len(text) > max_chars else (text, False)


class Served:
    """A run loaded for serving: its Predictor, behind the task's serve schema (tasks/base.py `serve_*`).

    The micro-batcher calls `batch` with (text, options) items of several requests; items that share
    options share forward passes. Calling it answers texts like Predictor.records."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.run, self.task = predictor, predictor.run, predictor.task
        self.kind = self.task.kind  # the task's own word, shown by /info

    def __call__(self, texts: list[str], **options) -> list[dict]:
        return self.predictor.records(texts, **options)

    def items(self, req, limits, inputs=None) -> tuple[list[tuple[str, tuple]], list[bool]]:
        """(the batcher's items of a request: (text cut to limits.max_chars, its options), which texts were cut).
        `inputs`: a task route's own (tasks/base.ServeRoute), else the task's serve_inputs."""
        texts, options = (inputs or self.task.serve_inputs)(req, limits, self.predictor.settings)
        key = tuple(sorted(options.items()))
        cleaned = [clean(t, limits.max_chars) for t in texts]
        return [(t, key) for t, _ in cleaned], [cut for _, cut in cleaned]

    def batch(self, items: list[tuple[str, tuple]]) -> list[dict]:
        """Records of (text, options) items in order: one Predictor call per distinct options in the batch
        (requests may ask for different forward settings)."""
        out = [None] * len(items)
        for key in dict.fromkeys(k for _, k in items):
            idx = [i for i, (_, k) in enumerate(items) if k == key]
            for i, r in zip(idx, self.predictor.records([items[i][0] for i in idx], **dict(key))):
                out[i] = r
        return out

    def info(self) -> dict:
        return self.predictor.info()


def load(run_path) -> Served:
    return Served(Predictor.load(run_path))
