"""The Python API. The CLI is a thin layer over these functions."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tunesmith import pipeline
from tunesmith.data.io import check_output_file, write_table
from tunesmith.predictor import Predictor
from tunesmith.run import Run, open_run  # noqa: F401  (tunesmith.api.open_run: tests and scripts use it)


def train(train_path: str | None = None, *, config: str | None = None, resume: bool = False,
          overwrite: bool = False, on_event=None, stop=None, **settings) -> Run:
    """Fine-tune and evaluate. Returns the Run (path, metrics, recipe). Settings are Recipe fields
    (the stages are in pipeline.py)."""
    return pipeline.train(train_path, config=config, resume=resume, overwrite=overwrite, on_event=on_event,
                          stop=stop, **settings)


def _load_for_inference(run: Run):
    """(model, tokenizer, task) as the Predictor loads them (benchmarks/bench_train.py and tests use it)."""
    p = Predictor.load(run)
    return p.model, p.tok, p.task


def _logits(run: Run, model, tok, texts):
    """The Predictor's logits of `texts` with a model already loaded (what bench_train.py times)."""
    return Predictor.load(run, model=model, tok=tok).outputs(texts)


def predict(run_path, data, *, out: str | None = None, text_column: str | None = None,
            overwrite: bool = False) -> pd.DataFrame:
    """Predict for a data file (or a list of texts): the table with the task's columns added (classifiers:
    `prediction` and `score`, the calibrated probability).

    `out`: refused before the model loads if it exists (without overwrite) or cannot be a file; its missing
    folders are created (the user named them: that is the request, and nothing else is written)."""
    if out:
        check_output_file(out, overwrite)
    frame = Predictor.load(run_path).predict(data, text_column)
    if out:
        check_output_file(out, overwrite)  # again: a file may have appeared while the model ran
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_table(frame, out)
    return frame


def evaluate(run_path, data, *, text_column: str | None = None, label_column: str | None = None) -> dict:
    """Metrics of a finished run on a labelled file."""
    return Predictor.load(run_path).evaluate(data, text_column, label_column)
