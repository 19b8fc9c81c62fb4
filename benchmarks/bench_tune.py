"""`tunesmith tune` vs a plain Optuna search over the Hugging Face Trainer, same budget, same data.

    .venv/bin/python benchmarks/bench_tune.py --minutes 15                     # the issue's benchmark
    .venv/bin/python benchmarks/bench_tune.py --minutes 3 --train-rows 2000 --test-rows 1000   # a quick check

Both select on the same validation rows (tunesmith's split of train) and report the test accuracy of
their validation-best model and when that model was found (seconds since the search started).
The baseline searches learning rate, epochs and weight decay with TPE, no pruning, no caching; a trial
still running at the deadline is stopped and measured as it is (tunesmith does the same with its own).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "intents"


def subsample(src: Path, rows: int | None, dest: Path, seed: int) -> str:
    import pandas as pd

    df = pd.read_csv(src)
    if rows and rows < len(df):  # stratified, so every intent stays in
        df = df.groupby("label", group_keys=False).sample(frac=rows / len(df), random_state=seed)
    df.to_csv(dest, index=False)
    return str(dest)


def run_tunesmith(train: str, test: str, seconds: float, out: Path) -> dict:
    from rich.console import Console

    from tunesmith.tune.search import TuneArgs, tune

    cfg = out.parent / "tune.yaml"
    cfg.write_text("recipe: {baselines: false, audit: false}\n")  # only the winner's test accuracy counts here
    t0 = time.time()
    doc = tune(TuneArgs(train=train, test=test, seconds=seconds, out=str(out), config=str(cfg)), Console(stderr=True))
    search_s = time.time() - t0
    w = doc["winner"]
    if not w:
        return {"system": "tunesmith tune", "test_accuracy": None, "found_at_s": None, "trials": len(doc["trials"]),
                "wall_s": round(search_s, 1), "best": "no trial finished in the budget"}
    row = next(r for r in doc["trials"] if r["trial"] == w["trial"])
    start = min(r["started"] for r in doc["trials"] if r["started"])
    from datetime import datetime

    found = (datetime.fromisoformat(row["started"]) - datetime.fromisoformat(start)).total_seconds() + row["seconds"]
    return {"system": "tunesmith tune", "test_accuracy": w["test"]["accuracy"], "found_at_s": round(found, 1),
            "trials": len(doc["trials"]), "counts": doc["counts"], "wall_s": round(search_s, 1),
            "best": f"{w['settings']['strategy']} lr={w['settings']['lr']:.2g} epochs={w['settings']['epochs']}"}


def run_hf_optuna(train: str, test: str, seconds: float, seed: int) -> dict:
    """The baseline a user would write: Optuna + Trainer, default TPE, full fine-tuning."""
    import numpy as np
    import optuna
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    from tunesmith.pipeline import prepare_data
    from tunesmith.config import make_recipe
    from tunesmith.data.dataset import load_examples
    from tunesmith.models.registry import resolve

    recipe = make_recipe(train=train, test=test)
    d = prepare_data(recipe, with_test=False)  # the same validation rows as tunesmith
    labels, tr, va = d.labels, d.train, d.validation
    te = load_examples(test, "text", "label", "single_label").examples
    path = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    lid = {l: i for i, l in enumerate(labels)}

    def rows(ex):
        enc = tok(list(ex.texts), truncation=True, max_length=128)
        return [{"input_ids": i, "attention_mask": m, "labels": lid[y]} for i, m, y in
                zip(enc["input_ids"], enc["attention_mask"], ex.labels)]

    train_rows, val_rows, test_rows = rows(tr), rows(va), rows(te)
    deadline = time.time() + seconds
    t0 = time.time()
    results = []

    class Deadline(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if time.time() > deadline:
                control.should_training_stop = True
                self.hit = True

    def accuracy(trainer, data):
        logits = trainer.predict(data).predictions
        return float((np.argmax(logits, -1) == np.array([r["labels"] for r in data])).mean())

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        epochs = trial.suggest_int("epochs", 1, 5)
        wd = trial.suggest_float("weight_decay", 0.0, 0.1)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
        stop = Deadline()
        stop.hit = False
        with tempfile.TemporaryDirectory() as d:
            args = TrainingArguments(output_dir=d, learning_rate=lr, num_train_epochs=epochs, weight_decay=wd,
                                     per_device_train_batch_size=32, per_device_eval_batch_size=64,
                                     save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                                     logging_strategy="no", use_cpu=True, seed=seed)
            trainer = Trainer(model=model, args=args, train_dataset=train_rows, callbacks=[stop],
                              data_collator=DataCollatorWithPadding(tok))
            trainer.train()  # cut at the deadline: measured like a finished trial, as tunesmith does
            val, tst = accuracy(trainer, val_rows), accuracy(trainer, test_rows)
        results.append({"trial": trial.number, "val": val, "test": tst, "at_s": time.time() - t0,
                        "params": trial.params})
        print(f"baseline trial {trial.number}: val {val:.4f} test {tst:.4f} {trial.params}", file=sys.stderr)
        return val

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, timeout=seconds)
    wall = time.time() - t0
    if not results:
        return {"system": "Optuna + HF Trainer", "test_accuracy": None, "found_at_s": None, "trials": len(study.trials),
                "wall_s": round(wall, 1), "best": "no trial finished in the budget"}
    best = max(results, key=lambda r: r["val"])
    return {"system": "Optuna + HF Trainer", "test_accuracy": best["test"], "found_at_s": round(best["at_s"], 1),
            "trials": len(study.trials), "finished": len(results), "wall_s": round(wall, 1),
            "best": " ".join(f"{k}={v:.2g}" for k, v in best["params"].items())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0, help="budget for each system")
    ap.add_argument("--train-rows", type=int, default=None, help="stratified subsample of train.csv (default all)")
    ap.add_argument("--test-rows", type=int, default=None, help="stratified subsample of test.csv (default all)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", choices=["tunesmith", "baseline"], default=None)
    ap.add_argument("--out", type=Path, default=None, help="keep the tune folder here (default: a temp folder)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(cpu_line(), flush=True)  # hosts differ: the ratios below hold for this one

    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    train = subsample(a.data / "train.csv", a.train_rows, work / "train.csv", a.seed)
    test = subsample(a.data / "test.csv", a.test_rows, work / "test.csv", a.seed)
    seconds = a.minutes * 60
    load0 = os.getloadavg()
    rows = []
    if a.only != "baseline":
        rows.append(run_tunesmith(train, test, seconds, a.out or work / "tune"))
    if a.only != "tunesmith":
        rows.append(run_hf_optuna(train, test, seconds, a.seed))
    load1 = os.getloadavg()

    print(f"\nintents: {a.train_rows or 'all'} train rows, {a.test_rows or 'all'} test rows; "
          f"{a.minutes:g} min each on {os.cpu_count()} cores; load average before {load0[0]:.1f}, after {load1[0]:.1f}")
    print(f"{'system':<22} {'test acc':>9} {'found at':>9} {'trials':>7}  best")
    for r in rows:
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        at = f"{r['found_at_s']:.0f}s" if r["found_at_s"] is not None else "-"
        print(f"{r['system']:<22} {acc:>9} {at:>9} {r['trials']:>7}  {r['best']}")
    if len(rows) == 2 and all(r["test_accuracy"] is not None for r in rows):
        ts, hf = rows
        print(f"accuracy difference: {100 * (ts['test_accuracy'] - hf['test_accuracy']):+.1f} points; "
              f"time to best: tunesmith {ts['found_at_s']:.0f}s vs baseline {hf['found_at_s']:.0f}s "
              f"(ratio {ts['found_at_s'] / max(hf['found_at_s'], 1e-9):.2f}; target: +1 point, or <= 0.33 at equal accuracy)")
    print(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
