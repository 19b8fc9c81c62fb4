"""`tunesmith train`, for every task, as named stages:

    recipe → task → out folder → prepare data → audit → model → encode → write recipe → baselines
           → before fit → fit → save model → measure → write results

Each stage calls the task's hook (tasks/base.py); nothing here knows a task by name. The run folder's
rules (what may be overwritten, what resume adopts, atomic writes) live in run.py.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from tunesmith.accel import engine_name, for_device, run_device
from tunesmith.accel.precision import use_bf16
from tunesmith.config import Recipe, load_recipe, make_recipe
from tunesmith.errors import TunesmithError
from tunesmith.run import (RECIPE, Run, artifact, check_out, check_resumable, check_resume, default_out, finish,
                           is_finished, open_run, prepare_out, save_model, set_state, write_inference_settings,
                           write_json, write_recipe, write_text_atomic)
from tunesmith.run import provenance as run_provenance
from tunesmith.tasks import detection_order, get_task_class
from tunesmith.tasks.base import BASELINES, Prepared, say
from tunesmith.models.quantize import QLORA
from tunesmith.models.quantize import check as check_qlora
from tunesmith.train import distributed, shard
from tunesmith.train.strategies import qlora


class StageClock:
    """Seconds each stage of a run took (metrics.json `stage_seconds`, the command's last lines, the tracker).

    Why: on small data the fixed costs around training (audit, baselines, probe start, test scoring) are
    a third of a run (docs/performance.md); a user sees where their time went, and bench_train.py reads
    the split from here instead of from a profiler (which itself adds ~50%)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to `stage` (each stage is lapped once)."""
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


# ---- stage: the recipe and the task ------------------------------------------------------------------------------
def resolve_recipe(train_path, config, resume, settings) -> Recipe:
    if config:
        return load_recipe(config, train=train_path, **settings)
    if resume and train_path is None and settings.get("out"):
        check_resumable(Path(settings["out"]))  # an ordinary folder's recipe.yaml is not a run's: not read
        return load_recipe(Path(settings["out"]) / RECIPE, **settings)
    if train_path is None:
        raise TunesmithError("no training data: pass a data file or --config recipe.yaml")
    return make_recipe(train=train_path, **settings)


def choose_task(recipe: Recipe, on_event):
    """The task class (--task, or the first registered task whose `detect` accepts the columns) and the
    recipe with that task's defaults for the settings the user did not give."""
    cls = None
    if recipe.task == "auto":
        for c in detection_order():
            why = c.detect(recipe)
            if why is not None:  # "": the task decides in prepare() (classification: single or multi label)
                cls = c
                if why:
                    say(on_event, why)
                    recipe = recipe.model_copy(update={"task": c.name})
                break
    cls = cls or get_task_class(recipe.task)
    defaults = {k: v for k, v in cls.recipe_defaults.items()
                if k not in recipe.model_fields_set or getattr(recipe, k) is None}
    return cls, recipe.model_copy(update=defaults)


def prepare_data(recipe: Recipe, on_event=lambda *a, **k: None, with_test: bool = True) -> Prepared:
    """Read and split the data the way the recipe's task does (tune: with_test=False leaves test unread)."""
    cls, recipe = choose_task(recipe, on_event)
    return cls.prepare(recipe, on_event, with_test=with_test)


def task_for_data(task_cls, recipe: Recipe, on_event, prepared: Prepared | None = None):
    """(task instance, recipe naming it and the columns read, Prepared): the data read the way the task reads
    it (train, plan and audit; tune passes the data it read once)."""
    data = prepared or task_cls.prepare(recipe, on_event)
    task = get_task_class(data.task or task_cls.name).from_data(data)
    return task, recipe.model_copy(update={"task": task.name, **data.columns}), data


def audit_data(on_event=lambda *a, **k: None, **settings):
    """`tunesmith audit` for a task whose data are not text and label rows (Task.row_audit False): the task's
    own audit report, as train runs it. None: audit/'s row checks apply (they also --fix)."""
    cls, recipe = choose_task(make_recipe(**settings), on_event)
    if cls.row_audit:
        return None
    task, recipe, data = task_for_data(cls, recipe, on_event)
    return task.audit(recipe, data, on_event)


def command_inputs(recipe, config=None) -> list:
    """The files a training command reads: never inside a run folder that --overwrite would delete."""
    files = [recipe.train, recipe.test, recipe.retention_data, config]
    if recipe.model and Path(recipe.model).exists():  # a local model folder
        files.append(recipe.model)
    return [f for f in files if f]


def load_and_encode(task, recipe, data: Prepared, on_event, memo=None):
    """The stages from the settings sized to the data to the token ids (train and plan): (recipe with its
    max_length, model, tokenizer, model path, device, bf16, encoded splits)."""
    from tunesmith.models.load import resolve_max_length

    recipe = task.resolve(recipe, data)
    model, tok, model_path = task.load_model(recipe)
    recipe = recipe.model_copy(update={"max_length": resolve_max_length(
        recipe.max_length, model.config, tok, recipe.model, default=task.default_max_length)})
    device = run_device()  # decided once: this process's GPU under --nproc, else the CPU
    bf16 = use_bf16(recipe.bf16, device)
    enc = task.encode(tok, data, recipe, on_event, memo=memo, model_path=model_path)
    return recipe, model, tok, model_path, device, bf16, enc


# ---- the whole run -------------------------------------------------------------------------------------------
def train(train_path: str | None = None, *, config: str | None = None, resume: bool = False,
          overwrite: bool = False, on_event=None, stop=None, prepared: Prepared | None = None,
          memo: dict | None = None, **settings) -> Run:
    """Fine-tune and evaluate. Returns the Run (path, metrics, recipe). Settings are Recipe fields.

    `prepared` (prepare_data(..., with_test=False)) and `memo` (a dict for token ids and the probe head)
    let tunesmith tune share data across trials; with a prepared test of None, nothing is measured on test."""
    engine_name()  # a bad $TUNESMITH_ENGINE is one line now, not after the model loaded
    main = distributed.is_main()  # under --nproc only rank 0 reports and writes the run folder
    on_event = (on_event or (lambda *a, **k: None)) if main else (lambda *a, **k: None)
    t_start = time.perf_counter()
    clock = StageClock()
    recipe = resolve_recipe(train_path, config, resume, settings)
    if prepared is not None:  # tune: the data was read once, its task decided then
        recipe = recipe.model_copy(update={"task": prepared.task})
    task_cls, recipe = choose_task(recipe, on_event)
    check_qlora(recipe.strategy, task_cls.name, task_cls.loads_4bit)  # before the data's and the model's work
    shard.check(recipe, distributed.world()[1])
    inputs = command_inputs(recipe, config)

    out = Path(recipe.out) if recipe.out else default_out(recipe.train)
    if main:
        check_out(out, overwrite, resume, inputs)  # before the data's, audit's, model's work
    if resume:  # every rank: the run's own settings come back with it (read only)
        recipe = check_resume(out, recipe)  # data and settings: before anything of the run is rewritten
    if resume and is_finished(out):  # every --nproc rank stops here alike
        say(on_event, f"{out}: the run is already finished, nothing to resume (--overwrite trains it again)")
        return open_run(out) if main else Run(out, {}, {})

    # stage: prepare data
    task, recipe, data = task_for_data(task_cls, recipe.model_copy(update={"out": str(out)}), on_event, prepared)
    clock.lap("prepare")

    # stage: audit
    audit_report = audit_summary = None
    if resume and (out / "audit.json").exists():  # audited before the interrupt: same data, same answer
        audit_summary = [{k: c[k] for k in ("name", "severity", "count")}
                         for c in json.loads((out / "audit.json").read_text())["checks"]]
    elif recipe.audit and prepared is None and main:  # tune audits once, not per trial
        audit_report = task.audit(recipe, data, on_event)
        audit_summary = audit_report.summary() if audit_report is not None else None
    clock.lap("audit")

    # stage: model and token ids
    recipe, model, tok, model_path, device, bf16, enc = load_and_encode(task, recipe, data, on_event, memo)

    # stage: write the recipe (resolved) with provenance
    if main:
        prepare_out(out, overwrite, resume, inputs)
        if audit_report is not None and not (out / "audit.json").exists():
            write_json(artifact(out, "audit.json"), audit_report.to_dict())
        n = {k: len(v) if v is not None else 0 for k, v in enc.items()}
        provenance = run_provenance(recipe, model_path=model_path, device=device.type, bf16=bf16,
                                    engine=for_device(device, bf16).name, rows=n, **data.info)
        write_recipe(out, recipe, provenance)
        say(on_event, f"{n['train']} train / {n['validation']} validation / {n['test']} test rows, "
                       f"{task.describe()}model {recipe.model}, strategy {recipe.strategy}, "
                       f"{'bf16' if bf16 else 'fp32'} on {device.type}")
    ckpt = artifact(out, "checkpoint") if main else out / "checkpoint"
    clock.lap("load")  # the model, the token ids and the recorded recipe

    # stage: baselines, on the untouched model (kept so a resumed run does not measure them again; JSON,
    # so reading it back runs no code)
    model.to(device)
    baselines = {}
    if main:
        kept = task.read_baselines(ckpt) if resume else None
        if kept is not None:
            baselines = kept
        else:
            baselines = task.baselines(model, tok, enc, data, recipe, device, bf16, on_event)
            if baselines:
                ckpt.mkdir(parents=True, exist_ok=True)
                write_json(ckpt / BASELINES, baselines)
    clock.lap("baselines")

    # stage: fit
    if not (resume and (ckpt / "last.pt").exists()):
        task.before_fit(model, tok, enc, recipe, device, bf16, on_event, memo=memo, model_path=model_path)
    model = task.apply_strategy(model, recipe)
    clock.lap("before_fit")
    result = task.fit(model, tok, enc, recipe, device=device, bf16=bf16, ckpt_dir=ckpt, resume=resume,
                      on_event=on_event, stop=stop)
    clock.lap("fit")
    if not main:
        return Run(out, {}, recipe.model_dump(mode="json"))

    # stage: save the model: the adapter first (merging unwraps its modules), then the merged model,
    # each in a temporary folder renamed into place (whole or absent)
    merged = model
    if hasattr(model, "merge_and_unload"):
        save_model(model, tok, artifact(out, "adapter"))
        merged = (qlora.merged(task, recipe, out / "adapter", device) if recipe.strategy == QLORA else
                  model.merge_and_unload())
    merged = task.finalize_model(merged)
    save_model(merged, tok, artifact(out, "model"))
    clock.lap("save")

    # stage: measure
    metrics = {"task": task.name, **({"labels": task.labels} if task.labels else {})}
    if audit_summary is not None:
        metrics["audit"] = audit_summary
    metrics.update({"history": result.history, "best_epoch": result.best_epoch,
                    "stopped_early": result.stopped_early, "train_seconds": round(result.train_seconds, 3),
                    "train_samples_per_second": round(result.train_samples / max(result.train_seconds, 1e-9), 2),
                    "memory": result.memory})
    if result.train_tokens:
        metrics["train_tokens_per_second"] = round(result.train_tokens / max(result.train_seconds, 1e-9), 1)
    arrays = task.measure(metrics, merged, tok, enc, data, recipe, baselines, device, bf16, on_event)
    clock.lap("measure")
    metrics["stage_seconds"] = clock.seconds  # the report and the tracker after metrics.json are not in it
    if resume:  # this process's stages only (train_seconds adds up every session's training)
        metrics["resumed"] = True
    metrics["wall_seconds"] = round(time.perf_counter() - t_start, 3)

    # stage: write results
    if enc.get("test") is None:  # a tune trial: validation only, the test split stays unread
        write_json(artifact(out, "metrics.json"), metrics)
        set_state(out, "finished")  # its checkpoint stays: tune finishes the winner from it (run.reopen)
        on_event("done", out=str(out), test=None)
        return Run(out, metrics, recipe.model_dump(mode="json"))
    write_json(artifact(out, "metrics.json"), metrics)
    for name, array in arrays.items():
        _save_npy(ckpt / name, array)
    write_inference_settings(out / "model", task=task.name, max_length=recipe.max_length,
                             **task.inference_settings(metrics, recipe))
    write_report(out)
    finish(out, recipe, on_event)
    if recipe.track != "none":  # once the run is complete on disk: a tracker's failure costs one line, not the run
        from tunesmith.tracking import track_finished

        track_finished(out, recipe.track, on_event)
    on_event("done", out=str(out), test=metrics["test"])
    return Run(out, metrics, recipe.model_dump(mode="json"))


def write_report(run_path) -> tuple[Path, Path]:
    """report.html and MODEL_CARD.md of a finished run, from its metrics.json and recipe.yaml; the task
    draws them (tasks/*/report hooks) with the primitives of report/."""
    import yaml

    path = Path(run_path)
    if not (path / RECIPE).exists():
        raise TunesmithError(f"{path}: not a tunesmith run folder (no {RECIPE})")
    if not (path / "metrics.json").exists():
        raise TunesmithError(f"{path}: no metrics.json yet (the run did not finish); resume it with "
                             f"`tunesmith train --resume --out {path}`")
    metrics = json.loads((path / "metrics.json").read_text())
    if "test" not in metrics:
        raise TunesmithError(f"{path}/metrics.json: no test metrics; the run did not measure a test set")
    recipe_doc = yaml.safe_load((path / RECIPE).read_text()) or {}
    f = path / "audit.json"  # every check with rows and fixes when there, else the summary kept in metrics
    audit = json.loads(f.read_text()) if f.exists() else metrics.get("audit")
    task = get_task_class(metrics["task"])(metrics.get("labels", []))
    page, model_card = task.report(path.resolve().name, metrics, recipe_doc, audit)
    out_html, out_card = artifact(path, "report.html"), artifact(path, "MODEL_CARD.md")
    write_text_atomic(out_html, page)  # written beside and renamed: never half a page under the final name
    write_text_atomic(out_card, model_card)
    return out_html, out_card


def _save_npy(path: Path, array) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)
