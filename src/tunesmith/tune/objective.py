"""One trial = one ordinary training run through tunesmith.pipeline.train, on data prepared once per study.

The test file is never opened here: data comes from prepare_data(with_test=False), and each trial's
recipe has no test. Selection sees validation metrics only.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from pathlib import Path

import optuna

from tunesmith import pipeline
from tunesmith.config import Recipe
from tunesmith.errors import TunesmithError
from tunesmith.tasks import get_task_class
from tunesmith.train.loop import Interrupted, StopFlag
from tunesmith.tune.space import TuneSpace, length_choices, suggest

HOST = socket.gethostname()


class TrialStop(StopFlag):
    """Ctrl-C like the training loop's own flag, plus the study's deadline: both stop at a step boundary."""

    def __init__(self, deadline: float | None):
        self.asked, self.deadline = False, deadline
        super().__init__()

    @property
    def requested(self):
        return self.asked or (self.deadline is not None and time.time() > self.deadline)

    @requested.setter
    def requested(self, value):
        self.asked = value


def model_facts(model: str, train_texts: list[str]) -> tuple[int, list[int]]:
    """Layer count (for freeze:K) and max-length choices, without loading any weights."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from tunesmith.models.load import load_tokenizer, model_max_length
    from tunesmith.models.registry import resolve
    from tunesmith.train.strategies.layers import num_layers

    path = resolve(model)
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        n = num_layers(AutoModelForSequenceClassification.from_config(config))
    tok = load_tokenizer(path)
    lengths = [len(x) for x in tok(list(train_texts), truncation=False)["input_ids"]]
    return n, length_choices(lengths, model_max_length(config, tok))


class Objective:
    def __init__(self, base: Recipe, space: TuneSpace, models: list[str], out: Path, deadline: float | None,
                 on_trial=None):
        if base.val_fraction <= 0:
            raise TunesmithError("tune: val_fraction must be above 0; trials are compared on validation data")
        self.base, self.space, self.models, self.out, self.deadline = base, space, models, out, deadline
        self.on_trial = on_trial or (lambda *a, **k: None)
        # no --test: the held-out part stays unused too
        self.prepared = replace(pipeline.prepare_data(base, with_test=False), test=None)
        task = get_task_class(self.prepared.task)
        if not task.tunable:
            raise TunesmithError(f"{base.train}: tune does not compare trials of task {self.prepared.task} yet "
                                 f"(train it with `tunesmith train`)")
        texts = task.texts(self.prepared.train)
        self.memo: dict = {}  # token ids per (model, max_length, split), shared by all trials here
        facts = {m: model_facts(m, texts) for m in models}
        self.layers = {m: f[0] for m, f in facts.items()}
        self.lengths = {m: f[1] for m, f in facts.items()}
        self.key = base.metric  # the validation metric each epoch reports as val_<metric>

    def settings(self, trial) -> dict:
        return suggest(trial, self.space, self.models, self.layers, self.lengths)

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.settings(trial)
        folder = self.out / "trials" / f"{trial.number:04d}"
        for k, v in {"settings": s, "run": str(folder.resolve()), "host": HOST, "pid": os.getpid()}.items():
            trial.set_user_attr(k, v)
        self.on_trial(trial.number, s)

        values = []

        def on_event(kind, **kw):
            if kind != "epoch_end":
                return
            value = kw[f"val_{self.key}"]
            values.append(value)
            trial.report(value, kw["epoch"])
            if trial.should_prune():  # propagates out of fit(): the loop stops here
                raise optuna.TrialPruned(f"pruned after epoch {kw['epoch']}")

        stop = TrialStop(self.deadline)
        recipe = self.base.model_dump(exclude={"train", "test", "out"})
        # keep_checkpoints: the winner's run is finished from its trial's last.pt (search.final_run)
        recipe.update(s, baselines=False, audit=False, out=str(folder), keep_checkpoints=True)
        try:
            run = pipeline.train(self.base.train, prepared=self.prepared, memo=self.memo, overwrite=True,
                            on_event=on_event, stop=stop, **recipe)
        except Interrupted:
            if stop.asked:
                raise  # Ctrl-C: the study stops, this trial is marked failed
            if not values:
                trial.set_user_attr("stopped", "time budget")
                raise optuna.TrialPruned("time budget reached") from None
            # The budget ended mid-trial: its finished epochs are a shorter run whose best epoch is in
            # checkpoint/best.pt, so it competes as a run of that many epochs (the first trial on a slow
            # machine would otherwise leave nothing). A validation set too small to choose an epoch
            # (train/loop.decides) keeps the last one, and so does its score.
            from tunesmith.train.loop import decides

            trial.set_user_attr("settings", {**s, "epochs": len(values)})
            trial.set_user_attr("stopped", f"time budget after {len(values)} epochs")
            val = self.prepared.validation
            if not decides(len(val) if val is not None else 0, len(self.prepared.labels)):
                return float(values[-1])
            return float(min(values) if self.key == "loss" else max(values))
        return float(run.metrics["validation"][self.key])
