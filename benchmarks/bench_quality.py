"""Does the default recipe earn its keep? `tunesmith train` with no flags but data and --seed, against
its own baselines, the Hugging Face Trainer's defaults and (few-shot) SetFit, on the same rows.

    .venv/bin/pip install -c requirements.lock -e '.[bench]'       # or: make bench
    .venv/bin/python benchmarks/bench_quality.py --out runs/bench-quality.json            # hours on 2 cores
    .venv/bin/python benchmarks/bench_quality.py --sets intents_8 --seeds 0 --out runs/q8.json   # minutes

Sets (../shared/data): sms_spam (a stratified 80/20 split, fixed), intents, topics, multilabel, and
intents_8 / intents_16 / intents_64: k rows per class of intents/train.csv (fixed and nested: the 8 are
among the 16), tested on the full intents/test.csv. For each set and seed, three children:
  tunesmith  `tunesmith train TRAIN --test TEST --seed S` (plus --model when not the default); the
             baselines and the calibration temperature come from its metrics.json.
  trainer    AutoModelForSequenceClassification on the same model, TrainingArguments defaults (lr 5e-5,
             3 epochs, batch 8, linear decay, no warmup, no weight decay) with the seed; inputs truncated
             at the max length the tunesmith run resolved, so only the training recipe differs.
  setfit     few-shot sets only: setfit 1.2 on the same model, its defaults except num_iterations=20
             (the SetFit paper's setting; --setfit-iterations). Its default draws every pair of the
             training rows: ~375k pairs for 8 x 77 rows, days on a CPU.
Every child reads the files with tunesmith's loader, so all three see the same rows and labels, and
metrics are tunesmith's own (macro-F1 over all labels; multilabel: subset accuracy, threshold 0.5).
Results go to --out after each child; a rerun with the same --out skips what is there, so the full
run can be done in parts (--sets, --seeds).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PY = sys.executable
FEW_SHOT = {"intents_8": 8, "intents_16": 16, "intents_64": 64}
ALL_SETS = ["sms_spam", "intents", "topics", "multilabel", *FEW_SHOT]
SPLIT_SEED = 0          # data preparation; independent of the training seeds
SETFIT_ITERATIONS = 20
TEMPERATURE_RANGE = (0.5, 2.0)


# ---------------------------------------------------------------- data
def prepare(name: str, data: Path, work: Path) -> tuple[Path, Path]:
    """(train, test) files for a set; derived files are written once into the work folder."""
    import pandas as pd

    if name in ("intents", "topics", "multilabel"):
        return data / name / "train.csv", data / name / "test.csv"
    out = work / "data" / name
    train, test = out / "train.csv", out / "test.csv"
    if train.exists() and test.exists():
        return train, test
    out.mkdir(parents=True, exist_ok=True)
    if name == "sms_spam":
        from sklearn.model_selection import train_test_split

        df = pd.read_csv(data / "sms_spam" / "sms_spam.csv")
        tr, te = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=SPLIT_SEED)
    else:
        # k per class, nested across k: each class's rows in one fixed shuffled order, first k taken
        df = pd.read_csv(data / "intents" / "train.csv")
        order = df.sample(frac=1.0, random_state=SPLIT_SEED)
        tr = order.groupby("label", sort=True).head(FEW_SHOT[name]).sort_index()
        te = pd.read_csv(data / "intents" / "test.csv")
    tr.to_csv(train.with_suffix(".tmp"), index=False)
    te.to_csv(test.with_suffix(".tmp"), index=False)
    os.replace(train.with_suffix(".tmp"), train)
    os.replace(test.with_suffix(".tmp"), test)
    return train, test


def _read(train: str, test: str):
    """Both files through tunesmith's own loader: the rows and labels tunesmith trains and tests on."""
    from tunesmith.data.dataset import label_set, load_examples

    tr = load_examples(train)
    te = load_examples(test, task=tr.task)
    labels = label_set(list(tr.examples.labels) + list(te.examples.labels), tr.task)
    return tr.examples, te.examples, tr.task, labels


def _task(task: str, labels: list[str]):
    from tunesmith.tasks.classification import SingleLabel
    from tunesmith.tasks.classification import MultiLabel

    return (MultiLabel if task == "multilabel" else SingleLabel)(labels)


def _targets(task, ex):
    return task.targets(ex.labels).numpy()


# ---------------------------------------------------------------- children
def child_trainer(a: dict) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    from tunesmith.models.registry import resolve

    tr, te, kind, labels = _read(a["train"], a["test"])
    task = _task(kind, labels)
    set_seed(a["seed"])
    path = resolve(a["model"])
    tok = AutoTokenizer.from_pretrained(path)
    multi = kind == "multilabel"
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), problem_type="multi_label_classification" if multi else None,
        id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    if tok.pad_token is None:  # decoders
        tok.pad_token = tok.eos_token
        model.config.pad_token_id = tok.pad_token_id

    def enc(ex):
        y = _targets(task, ex)
        return Dataset.from_dict({**tok(ex.texts, truncation=True, max_length=a["max_length"]),
                                  "labels": y.astype(np.float32) if multi else y})

    args = TrainingArguments(output_dir=str(Path(a["work"]) / "hf"), seed=a["seed"], report_to=[],
                             save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             per_device_eval_batch_size=64)  # defaults otherwise: lr 5e-5, 3 epochs, batch 8
    trainer = Trainer(model=model, args=args, train_dataset=enc(tr), data_collator=DataCollatorWithPadding(tok))
    r = trainer.train()
    logits = trainer.predict(enc(te)).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    pred = task.decide(task.probabilities(np.asarray(logits, dtype=np.float64)))
    m = task.metrics(_targets(task, te), pred)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "train_seconds": r.metrics["train_runtime"],
            "max_length": a["max_length"], "torch_threads": torch.get_num_threads()}


def child_setfit(a: dict) -> dict:
    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from tunesmith.models.registry import resolve

    tr, te, kind, labels = _read(a["train"], a["test"])
    if kind == "multilabel":
        raise SystemExit("setfit anchor: single-label sets only")
    task = _task(kind, labels)
    model = SetFitModel.from_pretrained(resolve(a["model"]), labels=labels)
    args = TrainingArguments(output_dir=str(Path(a["work"]) / "setfit"), seed=a["seed"],
                             num_iterations=a["iterations"], save_strategy="no", report_to="none")
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": tr.texts, "label": tr.labels}))
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    pred = np.array([task.index[str(p)] for p in model.predict(te.texts, as_numpy=True)])
    m = task.metrics(_targets(task, te), pred)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "train_seconds": seconds,
            "num_iterations": a["iterations"]}


# ---------------------------------------------------------------- parent
def run_child(kind: str, a: dict, log: Path) -> dict:
    spec = log.with_suffix(".args.json")
    spec.write_text(json.dumps(a))
    res = log.with_suffix(".result.json")
    res.unlink(missing_ok=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run([PY, __file__, "--child", kind, str(spec), str(res)], stdout=f, stderr=subprocess.STDOUT,
                           env=ENV)
    wall = time.perf_counter() - t
    if p.returncode or not res.exists():
        sys.exit(f"{kind} failed ({p.returncode}); last lines of {log}:\n" + "".join(open(log).readlines()[-15:]))
    return {**json.loads(res.read_text()), "wall_seconds": wall}


def run_tunesmith(train: Path, test: Path, seed: int, model: str, out: Path, log: Path, keep: bool) -> dict:
    import yaml

    shutil.rmtree(out, ignore_errors=True)  # a half-done run of an interrupted bench
    cmd = [str(Path(PY).parent / "tunesmith"), "train", str(train), "--test", str(test), "--seed", str(seed),
           "--out", str(out)]
    if model != "minilm":  # the default model needs no flag
        cmd += ["--model", model]
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV)
    wall = time.perf_counter() - t
    if p.returncode:
        sys.exit(f"tunesmith train failed ({p.returncode}); last lines of {log}:\n"
                 + "".join(open(log).readlines()[-15:]))
    m = json.loads((out / "metrics.json").read_text())
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    recipe = recipe.get("recipe", recipe)
    baselines = {n: ({"skipped": b["skipped"]} if "skipped" in b else
                     {"accuracy": b["accuracy"], "macro_f1": b["macro_f1"]}) for n, b in m["baselines"].items()}
    ci = m["test"].get("ci95", {}).get("macro_f1")
    out_ = {"accuracy": m["test"]["accuracy"], "macro_f1": m["test"]["macro_f1"],
            "macro_f1_ci95": ci, "baselines": baselines,
            "temperature": (m.get("calibration") or {}).get("temperature"),
            "max_length": recipe.get("max_length"), "epochs_run": len(m.get("history", [])),
            "train_seconds": m.get("train_seconds"), "wall_seconds": wall, "verdict": m.get("verdict")}
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return out_


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"results": {}}


def save_results(path: Path, r: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(r, indent=1))
    os.replace(tmp, path)


def ms(values: list[float], digits: int = 3) -> str:
    """mean ± spread, the spread being half the range over seeds (one seed: the value alone)."""
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def report(name: str, by_seed: dict) -> dict:
    """Prints one set's table and returns its targets (name -> True/False)."""
    seeds = sorted(by_seed, key=int)
    ts = [by_seed[s]["tunesmith"] for s in seeds if "tunesmith" in by_seed[s]]
    if not ts:
        return {}
    rows = [("fine-tuned (tunesmith default)", [r["accuracy"] for r in ts], [r["macro_f1"] for r in ts],
             [r["wall_seconds"] for r in ts])]
    base_f1 = {}
    for b in ts[0]["baselines"]:
        got = [r["baselines"][b] for r in ts if "macro_f1" in r["baselines"].get(b, {})]
        if got:
            rows.append((f"baseline {b}", [g["accuracy"] for g in got], [g["macro_f1"] for g in got], []))
            base_f1[b] = statistics.fmean(g["macro_f1"] for g in got)
        else:
            rows.append((f"baseline {b}: skipped ({ts[0]['baselines'][b].get('skipped', '')[:60]})", [], [], []))
    others = {}
    for kind in ("trainer", "setfit"):
        got = [by_seed[s][kind] for s in seeds if kind in by_seed[s]]
        if got:
            label = ("HF Trainer defaults (lr 5e-5, 3 epochs, batch 8)" if kind == "trainer" else
                     f"SetFit 1.2 (num_iterations {', '.join(sorted({str(g['num_iterations']) for g in got}))})")
            rows.append((label, [g["accuracy"] for g in got], [g["macro_f1"] for g in got],
                         [g["wall_seconds"] for g in got]))
            others[kind] = statistics.fmean(g["macro_f1"] for g in got)
    temps = [r["temperature"] for r in ts if r.get("temperature") is not None]
    print(f"\n## {name}  (seeds {', '.join(seeds)}; max length {ts[0].get('max_length')}; "
          f"tunesmith epochs run {', '.join(str(r['epochs_run']) for r in ts)})")
    print("| system | accuracy | macro-F1 | wall s |\n|---|---|---|---|")
    for label, acc, f1, wall in rows:
        print(f"| {label} | {ms(acc)} | {ms(f1)} | {ms(wall, 0)} |")
    print(f"calibration temperature: {', '.join(f'{t:.2f}' for t in temps) or '-'}")

    ft = statistics.fmean(r["macro_f1"] for r in ts)
    targets = {}
    if base_f1:
        best = max(base_f1, key=base_f1.get)
        targets[f"fine-tune >= best baseline ({best})"] = ft >= base_f1[best]
        cis = [r["macro_f1_ci95"] for r in ts if r.get("macro_f1_ci95")]
        if name not in FEW_SHOT and cis:
            half = statistics.fmean((c[1] - c[0]) / 2 for c in cis)
            targets[f"full set: above best baseline by > 95% CI half-width ({half:.3f})"] = ft - base_f1[best] > half
    if "trainer" in others:
        targets["fine-tune >= HF Trainer"] = ft >= others["trainer"]
    if "setfit" in others:
        targets["fine-tune >= SetFit"] = ft >= others["setfit"]
    if temps:
        lo, hi = TEMPERATURE_RANGE
        targets[f"temperature within {lo}-{hi}"] = all(lo <= t <= hi for t in temps)
    print("targets: " + "; ".join(f"{k}: {'met' if v else 'NOT MET'}" for k, v in targets.items()))
    return targets


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default=",".join(ALL_SETS), help=f"comma-separated, from {', '.join(ALL_SETS)}")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--model", default="minilm", help="built-in name or model folder, for all three systems")
    ap.add_argument("--out", default="runs/bench-quality.json", help="results JSON; rerunning resumes from it")
    ap.add_argument("--work", help="work folder (derived data, logs); default: beside --out")
    ap.add_argument("--data", default=str(SHARED))
    ap.add_argument("--skip", default="", help="systems to leave out this time: trainer, setfit")
    ap.add_argument("--setfit-iterations", type=int, default=SETFIT_ITERATIONS,
                    help="SetFit pairs per training row and epoch (fewer: a quicker, weaker anchor)")
    ap.add_argument("--keep-runs", action="store_true", help="keep tunesmith's run folders (else only metrics)")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "ARGS", "RESULT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, spec, res = a.child
        r = (child_trainer if kind == "trainer" else child_setfit)(json.loads(Path(spec).read_text()))
        Path(res).write_text(json.dumps(r))
        return

    sets = [s.strip() for s in a.sets.split(",") if s.strip()]
    bad = [s for s in sets if s not in ALL_SETS]
    if bad:
        sys.exit(f"unknown set(s) {', '.join(bad)}; choose from {', '.join(ALL_SETS)}")
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    out = Path(a.out)
    work = Path(a.work) if a.work else out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    data = Path(a.data)
    results = load_results(out)
    load0 = os.getloadavg()
    print(cpu_line())
    print(f"model {a.model}; sets {', '.join(sets)}; seeds {', '.join(map(str, seeds))}; results {out}; "
          f"work {work}; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    results.setdefault("machine", cpu_line())
    R = results.setdefault("results", {})
    key = lambda s: s if a.model == "minilm" else f"{s}@{a.model}"  # noqa: E731  (other models kept apart)
    for name in sets:
        train, test = prepare(name, data, work)
        for seed in seeds:
            slot = R.setdefault(key(name), {}).setdefault(str(seed), {})
            base = work / "logs" / key(name).replace("/", "_") / f"s{seed}"
            base.mkdir(parents=True, exist_ok=True)
            if "tunesmith" not in slot:
                print(f"[{name} seed {seed}] tunesmith train ...", flush=True)
                slot["tunesmith"] = run_tunesmith(train, test, seed, a.model, base / "run", base / "tunesmith.log",
                                                  a.keep_runs)
                save_results(out, results)
            child = {"train": str(train), "test": str(test), "seed": seed, "model": a.model, "work": str(base),
                     "max_length": slot["tunesmith"]["max_length"], "iterations": a.setfit_iterations}
            if "trainer" not in slot and "trainer" not in skip:
                print(f"[{name} seed {seed}] HF Trainer ...", flush=True)
                slot["trainer"] = run_child("trainer", child, base / "trainer.log")
                save_results(out, results)
            if name in FEW_SHOT and "setfit" not in slot and "setfit" not in skip:
                print(f"[{name} seed {seed}] SetFit ...", flush=True)
                slot["setfit"] = run_child("setfit", child, base / "setfit.log")
                save_results(out, results)

    missed = []
    for name in sets:
        targets = report(name, {s: v for s, v in R.get(key(name), {}).items() if int(s) in seeds})
        missed += [f"{name}: {k}" for k, v in targets.items() if not v]
    load1 = os.getloadavg()
    print(f"\nload average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(f"targets not met: {len(missed)}" + "".join(f"\n  - {m}" for m in missed))


if __name__ == "__main__":
    main()
