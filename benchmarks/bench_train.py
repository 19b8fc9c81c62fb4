"""tunesmith's training engine against the Hugging Face Trainer, same data, settings and seed.

    .venv/bin/python benchmarks/bench_train.py [--data ../shared/data/intents] [--rows 2000] [--epochs 3]

Each measured run is a child process (wall time and peak RSS from os.wait4): (a) HF Trainer with
DataCollatorWithPadding, fp32; (b) `tunesmith train`, strategy full (bf16 where the CPU has it);
(c) `tunesmith train --strategy head` epoch times (feature cache); (d) prediction on test.csv:
tunesmith's predict path vs transformers.pipeline at batch 64. Settings: all-MiniLM-L6-v2, batch 32,
max length 128, lr 5e-5, linear decay without warmup or weight decay (the Trainer's defaults).
MFU = achieved training FLOP/s over the bf16 matmul peak measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _children import stepper  # noqa: E402
from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BATCH, MAXLEN, LR, SEED = 32, 128, 5e-5, 42


def bf16_peak() -> float:
    import torch

    a, b = (torch.randn(2048, 2048, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * 2048 ** 3 / (time.perf_counter() - t))
    return best


def train_flops(sample: Path, epochs: int) -> float:
    """6 x non-embedding parameters x real tokens, plus attention scores (12 x L x H x T^2 per text)."""
    import pandas as pd
    from transformers import AutoConfig, AutoTokenizer

    from tunesmith.models.registry import resolve

    path = resolve("minilm")
    cfg, tok = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    lens = [len(x) for x in tok(list(pd.read_csv(sample)["text"]), truncation=True, max_length=MAXLEN)["input_ids"]]
    h, L, ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_token = L * (4 * h * h + 2 * h * ff)
    return epochs * sum(6 * per_token * n + 12 * L * h * n * n for n in lens)


# ---------------------------------------------------------------- children
def child_trainer(sample, test, out, epochs):
    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    from tunesmith.models.registry import resolve

    set_seed(SEED)
    tr, te = pd.read_csv(sample), pd.read_csv(test)
    labels = sorted(set(tr["label"]) | set(te["label"]))
    index = {l: i for i, l in enumerate(labels)}
    path = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    enc = lambda df: Dataset.from_dict({**tok(list(df["text"]), truncation=True, max_length=MAXLEN),  # noqa: E731
                                        "labels": [index[l] for l in df["label"]]})
    args = TrainingArguments(output_dir=str(Path(out) / "hf"), per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=64, learning_rate=LR, num_train_epochs=epochs, seed=SEED,
                             report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=enc(tr), data_collator=DataCollatorWithPadding(tok))
    r = trainer.train()
    pred = trainer.predict(enc(te)).predictions.argmax(-1)
    y = np.array([index[l] for l in te["label"]])
    json.dump({"train_seconds": r.metrics["train_runtime"], "samples_per_second": r.metrics["train_samples_per_second"],
               "accuracy": accuracy_score(y, pred), "macro_f1": f1_score(y, pred, average="macro")},
              open(Path(out) / "trainer.json", "w"))


def child_predict(run_dir, test, out):
    import pandas as pd
    from transformers import pipeline

    from tunesmith import api
    from tunesmith.run import open_run

    texts = list(pd.read_csv(test)["text"])
    pipe = pipeline("text-classification", model=str(Path(run_dir) / "model"), device="cpu")
    pipe(texts[:64], batch_size=64, truncation=True, max_length=MAXLEN)  # warm-up
    t = time.perf_counter()
    pipe(texts, batch_size=64, truncation=True, max_length=MAXLEN)
    t_pipe = time.perf_counter() - t
    run = open_run(run_dir)
    model, tok, _ = api._load_for_inference(run)
    api._logits(run, model, tok, texts[:64])  # warm-up
    t = time.perf_counter()
    api._logits(run, model, tok, texts)  # tokenize + length-grouped bf16 inference, as `tunesmith predict`
    t_ts = time.perf_counter() - t
    json.dump({"pipeline_seconds": t_pipe, "tunesmith_seconds": t_ts, "n": len(texts)},
              open(Path(out) / "predict.json", "w"))


# ---------------------------------------------------------------- parent
def tunesmith_cmd(sample, test, out, epochs, strategy, lr):
    recipe = Path(out).with_suffix(".yaml")
    # Same settings as the Trainer: all rows train (no validation split), no warmup, no weight decay;
    # baselines and audit off so the wall time is the fine-tune plus test evaluation only.
    recipe.write_text(json.dumps({"train": str(sample), "test": str(test), "model": "minilm", "strategy": strategy,
                                  "epochs": epochs, "lr": lr, "batch_size": BATCH, "max_length": MAXLEN,
                                  "val_fraction": 0.0, "warmup_ratio": 0.0, "weight_decay": 0.0, "seed": SEED,
                                  "baselines": False, "audit": False, "out": str(out)}))
    return [str(Path(PY).parent / "tunesmith"), "train", "--config", str(recipe), "--overwrite"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "intents"))
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--child", choices=["trainer", "predict"])
    ap.add_argument("--args", nargs="*")
    ap.add_argument("--work", help="work folder; steps whose results are there already are not rerun")
    a = ap.parse_args()
    print(cpu_line(), flush=True)  # hosts differ: the ratios below hold for this one
    if a.child == "trainer":
        return child_trainer(a.args[0], a.args[1], a.args[2], int(a.args[3]))
    if a.child == "predict":
        return child_predict(*a.args)

    import pandas as pd

    load0 = os.getloadavg()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    sample, test = work / "train_sample.csv", Path(a.data) / "test.csv"
    print(f"work folder: {work}")
    if not sample.exists():
        pd.read_csv(Path(a.data) / "train.csv").sample(a.rows, random_state=SEED).to_csv(sample, index=False)
    env = {"TUNESMITH_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    peak = bf16_peak()
    print(f"data: {a.rows} rows of {a.data}/train.csv (seed {SEED}), {test}; {a.epochs} epochs, batch {BATCH}, "
          f"max length {MAXLEN}, lr {LR}; bf16 matmul peak {peak / 1e9:.0f} GFLOP/s; "
          f"{os.cpu_count()} CPUs; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)

    step = stepper(work, env)

    ts_out, head_out = work / "ts_full", work / "ts_head"
    wall_ts, rss_ts = step("tunesmith_full", tunesmith_cmd(sample, test, ts_out, a.epochs, "full", LR),
                           ts_out / "metrics.json")
    step("tunesmith_head", tunesmith_cmd(sample, test, head_out, a.epochs, "head", 1e-3), head_out / "metrics.json")
    step("predict", [PY, __file__, "--child", "predict", "--args", str(ts_out), str(test), str(work)],
         work / "predict.json")
    wall_hf, rss_hf = step("trainer", [PY, __file__, "--child", "trainer", "--args", str(sample), str(test),
                                       str(work), str(a.epochs)], work / "trainer.json")
    hf = json.load(open(work / "trainer.json"))
    ts = json.loads((ts_out / "metrics.json").read_text())
    head = json.loads((head_out / "metrics.json").read_text())
    pr = json.load(open(work / "predict.json"))

    flops = train_flops(sample, a.epochs)
    sps_ts = ts["train_samples_per_second"]
    mfu = flops / ts["train_seconds"] / peak
    rows = [("training samples/s", f"{hf['samples_per_second']:.1f}", f"{sps_ts:.1f}",
             f"{sps_ts / hf['samples_per_second']:.2f}x"),
            ("whole command wall s", f"{wall_hf:.1f}", f"{wall_ts:.1f}", f"{wall_hf / wall_ts:.2f}x"),
            ("test accuracy", f"{hf['accuracy']:.4f}", f"{ts['test']['accuracy']:.4f}",
             f"{100 * (ts['test']['accuracy'] - hf['accuracy']):+.2f} pt"),
            ("test macro-F1", f"{hf['macro_f1']:.4f}", f"{ts['test']['macro_f1']:.4f}",
             f"{100 * (ts['test']['macro_f1'] - hf['macro_f1']):+.2f} pt"),
            ("peak RSS MiB", f"{rss_hf:.0f}", f"{rss_ts:.0f}", f"{rss_ts / rss_hf:.2f}x")]
    print(f"\n| full fine-tuning | HF Trainer (fp32) | tunesmith | ratio |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print("\ntunesmith samples/s by epoch (the first includes one-time kernel set-up for each new shape): "
          + ", ".join(f"{h['train_samples_per_second']:.0f}" for h in ts["history"]))
    print(f"tunesmith MFU: {flops / ts['train_seconds'] / 1e9:.1f} GFLOP/s achieved / {peak / 1e9:.0f} "
          f"GFLOP/s bf16 peak = {100 * mfu:.1f}%")
    ep = [h["epoch_seconds"] for h in head["history"]]
    print(f"head strategy epoch seconds: {', '.join(f'{e:.2f}' for e in ep)}; first / later: "
          f"{', '.join(f'{ep[0] / e:.0f}x' for e in ep[1:])}")
    print(f"prediction on {pr['n']} test texts: pipeline(batch 64) {pr['pipeline_seconds']:.2f}s, tunesmith "
          f"{pr['tunesmith_seconds']:.2f}s = {pr['pipeline_seconds'] / pr['tunesmith_seconds']:.1f}x")
    targets = {"samples/s >= 5x": sps_ts / hf["samples_per_second"] >= 5,
               "accuracy at most 1 pt below": ts["test"]["accuracy"] >= hf["accuracy"] - 0.01,
               "head later epochs >= 20x": all(ep[0] / e >= 20 for e in ep[1:]),
               "prediction >= 5x pipeline": pr["pipeline_seconds"] / pr["tunesmith_seconds"] >= 5,
               "peak RSS <= Trainer": rss_ts <= rss_hf}
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
