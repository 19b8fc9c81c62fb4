"""The Python API. The CLI is a thin layer over these functions."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tunesmith.config import Recipe, load_recipe, make_recipe
from tunesmith.data.dataset import check_known_labels, label_set, load_examples, stratified_split
from tunesmith.data.io import fingerprint, write_table
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.predict import encode, predict_logits
from tunesmith.models.load import load_classifier, load_tokenizer, resolve_max_length
from tunesmith.run import Run, default_out, open_run, prepare_out, versions, write_json, write_recipe
from tunesmith.tasks import get_task
from tunesmith.train import strategies
from tunesmith.train.loop import Split, evaluate_split, fit
from tunesmith.train.precision import use_bf16


def _say(on_event, msg):
    on_event("info", message=msg)


def device_for() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_data(recipe: Recipe, on_event=lambda *a, **k: None):
    """Load train/test, decide the task, split train/validation/test. Test is never used for choices."""
    loaded = load_examples(recipe.train, recipe.text_column, recipe.label_column, recipe.task)
    task = loaded.task
    for why, n in loaded.dropped.items():
        if n:
            _say(on_event, f"dropped {n} rows of {recipe.train} with {why.replace('_', ' ')}")
    if recipe.task == "auto":
        _say(on_event, f"task: {task} (decided from column '{loaded.label_column}')")
    ex = loaded.examples
    labels = label_set(ex.labels, task)
    if len(labels) < 2:
        raise TunesmithError(f"{recipe.train}: column '{loaded.label_column}' has a single class "
                             f"({labels[0] if labels else 'none'}); a classifier needs at least two")
    if recipe.test:
        t = load_examples(recipe.test, recipe.text_column or loaded.text_column,
                          recipe.label_column or loaded.label_column, task)
        test = t.examples
        check_known_labels(test, labels, task, recipe.test,
                           f"never seen in {recipe.train}; add training examples for it or remove the row")
        train = ex
    else:
        train, test = stratified_split(ex, recipe.test_fraction, recipe.seed, task)
    val = None
    if recipe.val_fraction > 0:
        train, val = stratified_split(train, recipe.val_fraction, recipe.seed + 1, task)
    return task, labels, train, val, test, loaded


def _fingerprints(recipe: Recipe) -> dict:
    files = {"train": recipe.train, "test": recipe.test, "retention_data": recipe.retention_data}
    return {k: {"path": str(v), "sha256": fingerprint(v)} for k, v in files.items() if v}


def train(train_path: str | None = None, *, config: str | None = None, resume: bool = False,
          overwrite: bool = False, on_event=None, stop=None, **settings) -> Run:
    """Fine-tune and evaluate. Returns the Run (path, metrics, recipe). Settings are Recipe fields."""
    on_event = on_event or (lambda *a, **k: None)
    t_start = time.perf_counter()
    if config:
        recipe = load_recipe(config, train=train_path, **settings)
    elif resume and train_path is None and settings.get("out"):
        recipe = load_recipe(Path(settings["out"]) / "recipe.yaml", **settings)
    else:
        if train_path is None:
            raise TunesmithError("no training data: pass a data file or --config recipe.yaml")
        recipe = make_recipe(train=train_path, **settings)
    if recipe.task == "sft":
        from tunesmith.tasks.sft import train_sft  # decoder instruction tuning has its own data path

        return train_sft(recipe, resume=resume, overwrite=overwrite, on_event=on_event, stop=stop)

    task_name, labels, tr, va, te, loaded = prepare_data(recipe, on_event)
    out = Path(recipe.out) if recipe.out else default_out(recipe.train)
    recipe = recipe.model_copy(update={"out": str(out), "task": task_name,
                                       "text_column": loaded.text_column, "label_column": loaded.label_column})
    task = get_task(task_name, labels)
    model, tok, model_path = load_classifier(recipe.model, labels, task_name)
    max_length = resolve_max_length(recipe.max_length, model.config, tok, recipe.model)
    recipe = recipe.model_copy(update={"max_length": max_length})
    device = device_for()
    bf16 = use_bf16(recipe.bf16, device)
    prepare_out(out, overwrite, resume)
    provenance = {"versions": versions(), "data": _fingerprints(recipe), "model_path": model_path,
                  "device": device.type, "bf16": bf16,
                  "rows": {"train": len(tr), "validation": len(va) if va else 0, "test": len(te)}}
    write_recipe(out, recipe, provenance)
    _say(on_event, f"{len(tr)} train / {len(va) if va else 0} validation / {len(te)} test rows, "
                   f"{len(labels)} labels, model {recipe.model}, strategy {recipe.strategy}, "
                   f"{'bf16' if bf16 else 'fp32'} on {device.type}")

    model = strategies.apply(model, recipe.strategy, recipe)
    split = lambda ex: Split(encode(tok, ex.texts, max_length), task.targets(ex.labels))
    train_split, val_split, test_split = split(tr), (split(va) if va else None), split(te)
    result = fit(model, task, train_split, val_split, recipe, pad_id=tok.pad_token_id, device=device,
                 bf16=bf16, ckpt_dir=out / "checkpoint", resume=resume, on_event=on_event, stop=stop)

    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    if merged is not model:
        model.save_pretrained(out / "adapter")
    merged.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")

    metrics = {"task": task_name, "labels": labels}
    test_m, test_loss, test_logits = evaluate_split(merged, task, test_split, tok.pad_token_id,
                                                    recipe.batch_size * 2, bf16, device)
    metrics["test"] = {**test_m, "loss": test_loss}
    if val_split is not None:
        vm, vloss, _ = evaluate_split(merged, task, val_split, tok.pad_token_id, recipe.batch_size * 2, bf16, device)
        metrics["validation"] = {**vm, "loss": vloss}
    metrics.update({"history": result.history, "best_epoch": result.best_epoch,
                    "stopped_early": result.stopped_early, "train_seconds": round(result.train_seconds, 3),
                    "train_samples_per_second": round(result.train_samples / max(result.train_seconds, 1e-9), 2),
                    "wall_seconds": round(time.perf_counter() - t_start, 3)})
    write_json(out / "metrics.json", metrics)
    np.save(out / "checkpoint" / "test_logits.npy", test_logits)
    on_event("done", out=str(out), test=metrics["test"])
    return Run(out, metrics, recipe.model_dump(mode="json"))


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
    return predict_logits(model, ids, tok.pad_token_id, 64, bf16, device)


def predict(run_path, data, *, out: str | None = None, text_column: str | None = None,
            overwrite: bool = False) -> pd.DataFrame:
    """Predict labels for a data file (or a list of texts). Adds `prediction` and `score` columns."""
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
        o = Path(out)
        if o.exists() and not overwrite:
            raise TunesmithError(f"{o}: already exists; pass --overwrite or choose another --out")
        write_table(frame, o)
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
