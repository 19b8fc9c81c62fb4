"""`tunesmith merge`: base + tuned run folders → a new run folder (model/, recipe.yaml, metrics.json)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from tunesmith.errors import TunesmithError
from tunesmith.merge import build, models, sweep
from tunesmith.merge.registry import METHODS
from tunesmith.merge.spec import MergeSpec
from tunesmith.accel import run_device
from tunesmith.predictor import Predictor, bf16_for
from tunesmith.run import (Run, artifact, discard, inference_settings, open_run, prepare_out, save_model, set_state,
                           versions, write_inference_settings, write_json, write_recipe)
from tunesmith.tasks import get_task

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _labels(config) -> list[str]:
    return [config.id2label[i] for i in range(config.num_labels)]


def merge(spec: MergeSpec, out, *, weights: list[float] | None = None, eval_data=None, retention_data=None,
          overwrite: bool = False, on_event=None) -> Run:
    """Merge once (spec as given) or sweep `weights` and keep the chosen point. Returns the new Run."""
    say = (lambda m: on_event("info", message=m)) if on_event else (lambda m: None)
    t0 = time.perf_counter()
    out = Path(out)
    if weights and not eval_data:
        raise TunesmithError("--sweep needs --eval (labelled task data) to score each weight")
    if spec.dtype not in DTYPES:
        raise TunesmithError(f"dtype {spec.dtype}: use one of {', '.join(DTYPES)}")
    tuned = [models.locate(s.model) for s in spec.models]
    for p in [spec.base] + [s.model for s in spec.models]:
        if Path(p).exists() and Path(p).resolve() == out.resolve():
            raise TunesmithError(f"--out {out}: is one of the merged models; choose another folder")
    inputs = [p for p in [spec.base, *[s.model for s in spec.models], eval_data, retention_data]
              if p and Path(p).exists()]
    prepare_out(out, overwrite, resume=False, inputs=inputs)
    try:
        return _build(spec, out, tuned, weights, eval_data, retention_data, say, t0)
    except BaseException:
        discard(out)  # only what this merge wrote (the marker lists it); the folder too when that empties it
        raise


def _build(spec, out, tuned, weights, eval_data, retention_data, say, t0) -> Run:
    with models.quiet():
        from transformers import AutoConfig

        configs = [AutoConfig.from_pretrained(t.model_dir) for t in tuned]
    labels = _labels(configs[0])
    for t, c in zip(tuned[1:], configs[1:]):
        if _labels(c) != labels:
            raise TunesmithError(f"{t.source}: its labels differ from {tuned[0].source}'s; merged models must "
                                 f"share one label set (same training labels)")
    pooled = {getattr(c, "tunesmith_pooling", None) for c in configs}
    if len(pooled) > 1:  # a folded mean-pooling layer in some but not all: their heads read other vectors
        raise TunesmithError(f"{', '.join(t.source for t in tuned)}: some read the mean of the tokens and some "
                             f"the first token (--pooling auto vs native); merge runs trained with one pooling")
    src_run = open_run(tuned[0].run_dir) if tuned[0].run_dir else None
    # a bare classifier folder (no run around it): what `tunesmith train` defaults to
    recipe = dict(src_run.recipe) if src_run else {"task": "single_label", "max_length": 128, "bf16": "auto"}
    settings = inference_settings(src_run) if src_run else recipe
    task_name, max_length = settings["task"], settings["max_length"]
    task = get_task(task_name, labels)
    if not task.mergeable:
        raise TunesmithError(f"{tuned[0].source}: task '{task_name}' runs cannot be merged here; merge classifier or "
                             f"embedding runs")
    # The task's optional merge hooks (a classifier's when absent): `merge_auto_class`, the transformers class
    # its weights load as; `merge_metric(targets)`, what picks a sweep point on the --eval data;
    # `merge_model(model, tok, max_length)`, what is saved as model/.
    import transformers

    auto = getattr(transformers, getattr(task, "merge_auto_class", "AutoModelForSequenceClassification"))
    model, lacks, base_path = models.load_base(spec.base, configs[0], auto)
    base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tuned_sds = []
    for t in tuned:
        sd = models.tuned_state(t, base_path, configs[0], auto)  # one pooling for all (checked above)
        models.check_same(base_sd, sd, lacks, t.source)
        tuned_sds.append(sd)
    say(f"merging {len(tuned)} tuned model(s) into {spec.base} with {spec.method}"
        + (f"; heads taken from the tuned model(s): {', '.join(sorted(lacks))}" if lacks else ""))

    from tunesmith.models.load import load_tokenizer

    tok = load_tokenizer(str(tuned[0].model_dir))
    device = run_device()
    predictor = Predictor(task, model, tok, max_length=max_length, bf16=bf16_for(settings["bf16"], device),
                          device=device)  # the merged model, scored in place at every point
    data = sweep.TaskData(eval_data, predictor, recipe.get("text_column"),
                          recipe.get("label_column")) if eval_data else None
    retention = sweep.Retention(retention_data, tok, max_length) if retention_data else None
    metric = task.merge_metric(data.targets) if data and hasattr(task, "merge_metric") else task.main_metric

    def point(s):
        model.load_state_dict(build.merge_state(s, base_sd, tuned_sds, lacks))
        row = {}
        if data:
            row.update({k: v for k, v in data.score().items() if k != "n"})
        if retention:
            row["retention"] = retention.score(model)
        return row

    metrics = {"task": task_name, "labels": labels}
    if weights:
        rows = []
        for w in weights:
            s = METHODS[spec.method].with_weight(spec, w)
            rows.append({"weight": w, **point(s)})
            say(f"weight {w:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1].items() if k != "weight"))
        chosen = sweep.choose(rows, metric)
        spec = METHODS[spec.method].with_weight(spec, rows[chosen]["weight"])
        for i, r in enumerate(rows):
            r["chosen"] = i == chosen
        import pandas as pd

        pd.DataFrame(rows).to_csv(artifact(out, "sweep.csv"), index=False)
        sweep.plot(rows, metric, chosen, artifact(out, "sweep.png"), f"{spec.method} merge: {metric} vs retention")
        metrics["sweep"] = {"rows": rows, "chosen_weight": rows[chosen]["weight"], "metric": metric,
                            "rule": f"most retention within {sweep.TOLERANCE:g} of the best {metric}"}
    final = point(spec)
    if data:
        metrics["test"] = {k: v for k, v in final.items() if k != "retention"} | {"n": data.n, "file": data.path}
    if retention:
        metrics["retention"] = {"kind": "sts_spearman", "file": retention.path, "n": len(retention.score_),
                                "after": final["retention"]}
    merged = model.to(DTYPES[spec.dtype])
    if hasattr(task, "merge_model"):
        merged = task.merge_model(merged, tok, max_length)
    save_model(merged, tok, artifact(out, "model"))
    # uncalibrated: a merge has no validation split to fit a temperature on
    write_inference_settings(out / "model", task=task_name, max_length=max_length, temperature=1.0)
    recipe.update({"out": str(out)})
    provenance = {"versions": versions(), "merge": spec.model_dump(mode="json"), "base_path": base_path,
                  "tuned": [{"source": t.source, "run": str(t.run_dir) if t.run_dir else None,
                             "lora_adapter": str(t.adapter) if t.adapter else None} for t in tuned],
                  "heads_from_tuned": sorted(lacks)}
    write_recipe(out, recipe, provenance)
    metrics["merge"] = spec.model_dump(mode="json")
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 3)
    write_json(artifact(out, "metrics.json"), metrics)
    set_state(out, "finished")
    return Run(out, metrics, recipe)
