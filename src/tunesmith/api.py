"""The Python API. The CLI is a thin layer over these functions."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tunesmith.config import Recipe, load_recipe, make_recipe
from tunesmith.data.dataset import (check_enough_rows, check_known_labels, dropped_lines, label_set, load_examples,
                                    stratified_split)
from tunesmith.data.io import check_output_file, write_table
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.predict import encode, predict_logits
from tunesmith.models.load import load_classifier, load_tokenizer, resolve_max_length
from tunesmith.run import (RECIPE, Run, artifact, check_out, check_resumable, check_resume, default_out,
                           fingerprints, finish, is_finished, open_run, prepare_out, save_model, set_state, versions,
                           write_json, write_recipe)
from tunesmith.tasks import get_task
from tunesmith.train import strategies
from tunesmith.train.checkpoint import plain
from tunesmith.train.loop import Split, evaluate_split, fit
from tunesmith.train.precision import use_bf16


def _say(on_event, msg):
    on_event("info", message=msg)


def device_for() -> torch.device:
    if torch.cuda.is_available():  # one GPU per process under --nproc / accelerate launch
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def prepare_data(recipe: Recipe, on_event=lambda *a, **k: None, with_test: bool = True):
    """Load train/test, decide the task, split train/validation/test. Test is never used for choices.

    with_test=False (tunesmith tune) leaves the test file unread and returns test=None; train and
    validation are the same rows as with it."""
    loaded = load_examples(recipe.train, recipe.text_column, recipe.label_column, recipe.task)
    task = loaded.task
    for line in dropped_lines(loaded.dropped, recipe.train):
        _say(on_event, line)
    if recipe.task == "auto":
        _say(on_event, f"task: {task} (decided from column '{loaded.label_column}')")
    ex = loaded.examples
    labels = label_set(ex.labels, task)
    if len(labels) < 2:
        raise TunesmithError(f"{recipe.train}: column '{loaded.label_column}' has a single class "
                             f"({labels[0] if labels else 'none'}); a classifier needs at least two")
    check_enough_rows(ex, None if recipe.test else recipe.test_fraction, recipe.val_fraction, recipe.train)
    if recipe.test and not with_test:
        train, test = ex, None
    elif recipe.test:
        t = load_examples(recipe.test, recipe.text_column or loaded.text_column,
                          recipe.label_column or loaded.label_column, task)
        test = t.examples
        for line in dropped_lines(t.dropped, recipe.test):  # test rows without a label are not scored: say so
            _say(on_event, line)
        check_known_labels(test, labels, task, recipe.test,
                           f"never seen in {recipe.train}; add training examples for it or remove the row")
        train = ex
    else:
        train, test = stratified_split(ex, recipe.test_fraction, recipe.seed, task)
    val = None
    if recipe.val_fraction > 0:
        train, val = stratified_split(train, recipe.val_fraction, recipe.seed + 1, task)
    return task, labels, train, val, test, loaded


def train(train_path: str | None = None, *, config: str | None = None, resume: bool = False,
          overwrite: bool = False, on_event=None, stop=None, prepared=None, memo: dict | None = None,
          **settings) -> Run:
    """Fine-tune and evaluate. Returns the Run (path, metrics, recipe). Settings are Recipe fields.

    `prepared` (prepare_data(..., with_test=False)) and `memo` (a dict for token ids) let tunesmith
    tune share data across trials; with a prepared test of None, nothing is measured on test."""
    from tunesmith.train import distributed

    main = distributed.is_main()  # under --nproc only rank 0 reports and writes the run folder
    on_event = (on_event or (lambda *a, **k: None)) if main else (lambda *a, **k: None)
    t_start = time.perf_counter()
    if config:
        recipe = load_recipe(config, train=train_path, **settings)
    elif resume and train_path is None and settings.get("out"):
        check_resumable(Path(settings["out"]))  # an ordinary folder's recipe.yaml is not a run's: not read
        recipe = load_recipe(Path(settings["out"]) / RECIPE, **settings)
    else:
        if train_path is None:
            raise TunesmithError("no training data: pass a data file or --config recipe.yaml")
        recipe = make_recipe(train=train_path, **settings)
    if recipe.task == "auto" and prepared is None and recipe.label_column is None and recipe.text_column is None:
        from tunesmith.tasks.sft_data import instruction_format

        fmt = instruction_format(recipe.train, recipe.prompt_column, recipe.response_column)
        if fmt:  # instruction/response columns, not text/label: a decoder learns to answer
            _say(on_event, f"task: sft ({fmt} format detected from the columns; --task to choose another)")
            recipe = recipe.model_copy(update={"task": "sft"})
    if recipe.task == "sft":
        from tunesmith.tasks.sft import train_sft  # decoder instruction tuning has its own data path (and lr)

        if distributed.world()[1] > 1:  # its loop has no DDP: every process would train and write the run
            raise TunesmithError("--nproc: instruction tuning (--task sft) runs in one process for now; "
                                 "drop --nproc")

        return train_sft(recipe, resume=resume, overwrite=overwrite, on_event=on_event, stop=stop,
                         inputs=command_inputs(recipe, config))

    out = Path(recipe.out) if recipe.out else default_out(recipe.train)
    if main:
        check_out(out, overwrite, resume, command_inputs(recipe, config))  # before the data's, audit's, model's work
    if resume:  # every rank: the run's own settings come back with it (read only)
        recipe = check_resume(out, recipe)  # data and settings: before anything of the run is rewritten
    if resume and is_finished(out):  # every --nproc rank stops here alike
        _say(on_event, f"{out}: the run is already finished, nothing to resume (--overwrite trains it again)")
        return open_run(out) if main else Run(out, {}, {})
    task_name, labels, tr, va, te, loaded = prepared or prepare_data(recipe, on_event)
    audit_summary = None
    if resume and (out / "audit.json").exists():  # audited before the interrupt: same data, same answer
        audit_summary = [{k: c[k] for k in ("name", "severity", "count")}
                         for c in json.loads((out / "audit.json").read_text())["checks"]]
    elif recipe.audit and prepared is None and main:  # tune audits once, not per trial
        from tunesmith.audit.training import audit_for_training

        audit_report = audit_for_training(recipe, task_name, loaded, tr, va, te, on_event)
        audit_summary = audit_report.summary()
    recipe = recipe.model_copy(update={"out": str(out), "task": task_name,
                                       "text_column": loaded.text_column, "label_column": loaded.label_column})
    task = get_task(task_name, labels)
    if recipe.lr is None:  # sized to the rows per class (train/optim.default_lr), recorded resolved
        from tunesmith.train.optim import default_lr

        recipe = recipe.model_copy(update={"lr": default_lr(recipe.strategy, task.targets(tr.labels))})
    if recipe.slice_column and te is not None:  # a typo in the column name fails now, not after training
        from tunesmith.evaluate.slices import slice_values

        slice_values(te.frame, recipe.slice_column, recipe.test or recipe.train)
    # Seed before loading: the new classification head (and LoRA matrices) are drawn from the global RNG.
    from transformers import set_seed

    set_seed(recipe.seed)
    model, tok, model_path = load_classifier(recipe.model, labels, task_name, pooling=recipe.pooling)
    max_length = resolve_max_length(recipe.max_length, model.config, tok, recipe.model)
    recipe = recipe.model_copy(update={"max_length": max_length})
    device = device_for()
    bf16 = use_bf16(recipe.bf16, device)
    if main:
        prepare_out(out, overwrite, resume, command_inputs(recipe, config))
        if audit_summary is not None and not (out / "audit.json").exists():
            write_json(artifact(out, "audit.json"), audit_report.to_dict())
    provenance = {"versions": versions(), "data": fingerprints(recipe), "model_path": model_path,
                  "device": device.type, "bf16": bf16,
                  "rows": {"train": len(tr), "validation": len(va) if va else 0, "test": len(te) if te else 0}}
    if main:
        write_recipe(out, recipe, provenance)
    _say(on_event, f"{len(tr)} train / {len(va) if va else 0} validation / {len(te) if te else 0} test rows, "
                   f"{len(labels)} labels, model {recipe.model}, strategy {recipe.strategy}, "
                   f"{'bf16' if bf16 else 'fp32'} on {device.type}")

    baseline_metrics, baseline_preds = {}, {}
    if recipe.baselines and te is not None and main:  # on the untouched model, before any weight moves
        from tunesmith.evaluate import baselines

        # Kept so a resumed run does not measure them again; JSON, so reading it back runs no code.
        saved = artifact(out, "checkpoint") / "baselines.json"
        if resume and saved.exists():
            baseline_metrics, baseline_preds = _read_baselines(saved)
        else:
            baseline_metrics, baseline_preds = baselines.for_run(recipe, task, tr, te, model.config, max_length,
                                                                 on_event)
            baseline_metrics, baseline_preds = plain(baseline_metrics), {k: np.asarray(v) for k, v in
                                                                         baseline_preds.items()}
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_json(saved, {"metrics": baseline_metrics, "predictions": plain(baseline_preds)})
    def split(ex, name):
        key = (model_path, max_length, name)  # same model and length: same token ids
        ids = memo[key] if memo is not None and key in memo else encode(tok, ex.texts, max_length)
        if memo is not None:
            memo[key] = ids
        return Split(ids, task.targets(ex.labels))

    train_split, val_split = split(tr, "train"), (split(va, "validation") if va else None)
    test_split = split(te, "test") if te else None
    if recipe.head_init == "probe" and not (resume and (out / "checkpoint" / "last.pt").exists()):
        from tunesmith.train.probe_init import init_head

        key = (model_path, max_length, "probe_head")  # tune: every trial starts from the same probe
        fitted = init_head(model, task, train_split.ids, train_split.targets, tok.pad_token_id, bf16, device,
                           memo.get(key) if memo is not None else None)
        if fitted is not None:
            if memo is not None:
                memo[key] = fitted
            _say(on_event, "classifier started from a linear probe on the frozen model (LP-FT)")
    model = strategies.apply(model, recipe.strategy, recipe)
    if main:
        artifact(out, "checkpoint")
    result = fit(model, task, train_split, val_split, recipe, pad_id=tok.pad_token_id, device=device,
                 bf16=bf16, ckpt_dir=out / "checkpoint", resume=resume, on_event=on_event, stop=stop)
    if not main:
        return Run(out, {}, recipe.model_dump(mode="json"))

    merged = model
    if hasattr(model, "merge_and_unload"):  # LoRA: the adapter first (merging unwraps its modules)
        save_model(model, None, artifact(out, "adapter"))
        merged = model.merge_and_unload()
    from tunesmith.models.pooling import fold

    merged = fold(merged)  # mean pooling written into a stock class's weights (models/pooling.py)
    save_model(merged, tok, artifact(out, "model"))  # a temporary folder renamed into place: whole or absent

    metrics = {"task": task_name, "labels": labels}
    if audit_summary is not None:
        metrics["audit"] = audit_summary
    if test_split is not None:
        test_m, test_loss, test_logits = evaluate_split(merged, task, test_split, tok.pad_token_id,
                                                        recipe.batch_size * 2, bf16, device)
        metrics["test"] = {**test_m, "loss": test_loss}
    if val_split is not None:
        vm, vloss, val_logits = evaluate_split(merged, task, val_split, tok.pad_token_id, recipe.batch_size * 2,
                                               bf16, device)
        metrics["validation"] = {**vm, "loss": vloss}
    metrics.update({"history": result.history, "best_epoch": result.best_epoch,
                    "stopped_early": result.stopped_early, "train_seconds": round(result.train_seconds, 3),
                    "train_samples_per_second": round(result.train_samples / max(result.train_seconds, 1e-9), 2),
                    "wall_seconds": round(time.perf_counter() - t_start, 3)})
    if test_split is None:  # a tune trial: validation only, the test split stays unread
        write_json(artifact(out, "metrics.json"), metrics)
        set_state(out, "finished")  # its checkpoint stays: tune finishes the winner from it (run.reopen)
        on_event("done", out=str(out), test=None)
        return Run(out, metrics, recipe.model_dump(mode="json"))
    _measure(metrics, recipe, task, merged, tok, te, test_split, test_logits,
             val_split, val_logits if val_split is not None else None, baseline_metrics, baseline_preds, max_length)
    write_json(artifact(out, "metrics.json"), metrics)
    _save_npy(out / "checkpoint" / "test_logits.npy", test_logits)
    _save_temperature(out / "model", metrics["calibration"])
    from tunesmith.report import write_report

    write_report(out)
    finish(out, recipe, on_event)
    on_event("done", out=str(out), test=metrics["test"])
    return Run(out, metrics, recipe.model_dump(mode="json"))


def command_inputs(recipe, config=None) -> list:
    """The files a training command reads: never inside a run folder that --overwrite would delete."""
    files = [recipe.train, recipe.test, recipe.retention_data, config]
    if recipe.model and Path(recipe.model).exists():  # a local model folder
        files.append(recipe.model)
    return [f for f in files if f]


def _read_baselines(path: Path) -> tuple[dict, dict]:
    try:
        doc = json.loads(path.read_text())
        return doc["metrics"], {k: np.asarray(v) for k, v in doc["predictions"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise TunesmithError(f"{path}: unreadable ({type(e).__name__}); delete it and resume again to measure the "
                             f"baselines anew") from None


def _save_npy(path: Path, array) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _measure(metrics, recipe, task, model, tok, te, test_split, test_logits, val_split, val_logits,
             baseline_metrics, baseline_preds, max_length) -> None:
    """Intervals, comparison with the best baseline, calibration, slices, retention, verdict."""
    from tunesmith.evaluate import retention
    from tunesmith.evaluate.analysis import analyse
    from tunesmith.evaluate.slices import slice_values
    from tunesmith.evaluate.verdict import verdict

    slices = slice_values(te.frame, recipe.slice_column, recipe.test or recipe.train) if recipe.slice_column else None
    extra = analyse(task, test_split.targets.numpy(), test_logits,
                    y_val=val_split.targets.numpy() if val_split is not None else None, val_logits=val_logits,
                    baseline_metrics=baseline_metrics, baseline_preds=baseline_preds, history=metrics["history"],
                    slice_values=slices, slice_column=recipe.slice_column, seed=recipe.seed)
    metrics["test"]["ci95"] = extra.pop("ci95")
    metrics["baselines"] = baseline_metrics
    metrics.update(extra)
    metrics["retention"] = retention.for_run(recipe, model, tok, te.texts, max_length)
    metrics["verdict"] = verdict(metrics)


def _save_temperature(model_dir: Path, calibration: dict) -> None:
    """The fitted temperature travels with the model folder (tunesmith.json next to config.json)."""
    f = model_dir / "tunesmith.json"
    doc = json.loads(f.read_text()) if f.exists() else {}
    doc["temperature"] = calibration.get("temperature", 1.0)
    write_json(f, doc)


def _load_for_inference(run: Run):
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer(str(run.model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(run.model_dir)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    task = get_task(run.metrics.get("task") or run.recipe.get("task", "single_label"), labels)
    return model, tok, task


def _logits(run: Run, model, tok, texts):
    device = device_for()
    bf16 = use_bf16(run.recipe.get("bf16", "auto"), device)
    model.to(device)
    ids = encode(tok, texts, run.recipe.get("max_length") or 128)
    # 128 per batch: length-sorted short texts make small matrices; measured 8% faster than 64 on CPU.
    return predict_logits(model, ids, tok.pad_token_id, 128, bf16, device)


def predict(run_path, data, *, out: str | None = None, text_column: str | None = None,
            overwrite: bool = False) -> pd.DataFrame:
    """Predict labels for a data file (or a list of texts). Adds `prediction` and `score` columns.

    `out`: refused before the model loads if it exists (without overwrite) or cannot be a file; its missing
    folders are created (the user named them: that is the request, and nothing else is written)."""
    if out:
        check_output_file(out, overwrite)
    run = open_run(run_path)
    model, tok, task = _load_for_inference(run)
    if isinstance(data, (list, tuple)):
        frame, texts = pd.DataFrame({"text": list(data)}), list(data)
    else:
        loaded = load_examples(data, text_column or run.recipe.get("text_column"), None, task.name, need_labels=False)
        frame, texts = loaded.examples.frame.copy(), loaded.examples.texts
    temperature = float(run.metrics.get("calibration", {}).get("temperature", 1.0))
    probs = task.probabilities(_logits(run, model, tok, texts), temperature)
    decided = task.decide(probs)
    if task.name == "multilabel":
        frame["prediction"] = ["|".join(task.labels[j] for j in np.flatnonzero(r)) for r in decided]
        frame["score"] = [float(p[r.astype(bool)].min()) if r.any() else float(1 - p.max())
                          for p, r in zip(probs, decided)]
    else:
        frame["prediction"] = [task.labels[j] for j in decided]
        frame["score"] = probs.max(axis=1)
    if out:
        check_output_file(out, overwrite)  # again: a file may have appeared while the model ran
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_table(frame, out)
    return frame


def evaluate(run_path, data, *, text_column: str | None = None, label_column: str | None = None) -> dict:
    """Metrics of a finished run on a labelled file."""
    run = open_run(run_path)
    model, tok, task = _load_for_inference(run)
    loaded = load_examples(data, text_column or run.recipe.get("text_column"),
                           label_column or run.recipe.get("label_column"), task.name)
    ex = loaded.examples
    check_known_labels(ex, task.labels, task.name, data,
                       f"which the model was not trained on; known labels: {', '.join(task.labels[:20])}")
    logits = _logits(run, model, tok, ex.texts)
    preds = task.decide(task.probabilities(logits))
    m = task.metrics(task.targets(ex.labels).numpy().astype(int), preds)
    m["loss"] = float(task.loss(torch.from_numpy(logits), task.targets(ex.labels)))
    return m
