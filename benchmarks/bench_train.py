"""tunesmith's training engine against the Hugging Face Trainer, same data, settings and seed.

    .venv/bin/python benchmarks/bench_train.py [--data ../shared/data/intents] [--rows 2000] [--epochs 3]

Each measured run is a child process (wall time and peak RSS from os.wait4): (a) HF Trainer with
DataCollatorWithPadding, fp32; (b) `tunesmith train`, strategy full (bf16 where the CPU has it);
(c) `tunesmith train --strategy head` epoch times (feature cache); (d) prediction on test.csv:
tunesmith's predict path vs transformers.pipeline at batch 64. Settings: all-MiniLM-L6-v2, batch 32,
max length 128, lr 5e-5, linear decay without warmup or weight decay (the Trainer's defaults).
MFU = achieved training FLOP/s over the bf16 matmul peak measured here.

Shapes table (issue #23: engine speed on every shape, and time to a result on small data):

    .venv/bin/python benchmarks/bench_train.py --shapes short,intents,long,many [--seeds 3] [--table-only]

Each shape runs `tunesmith train` as a user would (audit, baselines, report and test scoring included: time to
the verdict) and the HF Trainer's train + predict, both as measured child processes with the Trainer's settings
(no validation split, no warmup or weight decay, same lr, batch, epochs, max length and seed). Per shape:
training samples/s, whole-command wall time, test accuracy per seed, peak RSS.
  short    600 rows of ~11 tokens: 20 intents (seeded) x 30 rows of at most 9 words; their test rows alike; 5 epochs
  intents  2,000 rows (~16 tokens) of all 77 intents, the full test set; 3 epochs
  long     topics (medical abstracts, ~300 tokens), all 2,126 rows, --max-length 512; 3 epochs
  many     all 10,003 intents rows; 1 epoch
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


def train_flops(lens: list[int], epochs: int) -> float:
    """6 x non-embedding parameters x real tokens, plus attention scores (12 x L x H x T^2 per text); `lens`:
    tokens per text (token_lengths)."""
    from transformers import AutoConfig

    from tunesmith.models.registry import resolve

    cfg = AutoConfig.from_pretrained(resolve("minilm"))
    h, L, ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_token = L * (4 * h * h + 2 * h * ff)
    return epochs * sum(6 * per_token * n + 12 * L * h * n * n for n in lens)


# ---------------------------------------------------------------- children
def child_trainer(sample, test, out, epochs, maxlen=MAXLEN, seed=SEED):
    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    from tunesmith.models.registry import resolve

    set_seed(seed)
    tr, te = pd.read_csv(sample), pd.read_csv(test)
    labels = sorted(set(tr["label"]) | set(te["label"]))
    index = {l: i for i, l in enumerate(labels)}
    path = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    enc = lambda df: Dataset.from_dict({**tok(list(df["text"]), truncation=True, max_length=maxlen),  # noqa: E731
                                        "labels": [index[l] for l in df["label"]]})
    args = TrainingArguments(output_dir=str(Path(out) / "hf"), per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=64, learning_rate=LR, num_train_epochs=epochs, seed=seed,
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


# ---------------------------------------------------------------- shapes
# name: (data set, rows (None: all), epochs, max length)
SHAPES = {"short": ("intents", 600, 5, MAXLEN), "intents": ("intents", 2000, 3, MAXLEN),
          "long": ("topics", None, 3, 512), "many": ("intents", None, 1, MAXLEN)}
SHORT_CLASSES, SHORT_PER_CLASS, SHORT_WORDS = 20, 30, 9


def shape_files(name: str, shared: Path, work: Path) -> tuple[Path, Path]:
    """(train, test) of a shape; derived files are written once into work/<name>/."""
    import numpy as np
    import pandas as pd

    data, rows, _, _ = SHAPES[name]
    src = shared / data
    if rows is None:
        return src / "train.csv", src / "test.csv"
    folder = work / name
    train, test = folder / "train.csv", folder / "test.csv"
    if train.exists() and test.exists():
        return train, test
    folder.mkdir(parents=True, exist_ok=True)
    tr, te = pd.read_csv(src / "train.csv"), pd.read_csv(src / "test.csv")
    if name == "short":  # seeded classes, short texts only, SHORT_PER_CLASS rows each; the same classes' test rows
        pick = set(np.random.default_rng(SEED).choice(sorted(tr["label"].unique()), SHORT_CLASSES, replace=False))
        short = lambda d: d[d["label"].isin(pick) & (d["text"].str.split().str.len() <= SHORT_WORDS)]  # noqa: E731
        tr = short(tr).groupby("label", sort=True).sample(SHORT_PER_CLASS, random_state=SEED)
        tr, te = tr.sample(frac=1.0, random_state=SEED), short(te)
    else:
        tr = tr.sample(rows, random_state=SEED)
    tr.to_csv(train, index=False)
    te.to_csv(test, index=False)
    return train, test


def token_lengths(path: Path, maxlen: int) -> list[int]:
    """Tokens per text of a CSV's `text` column under minilm's tokenizer, truncated at `maxlen`."""
    import pandas as pd
    from transformers import AutoTokenizer

    from tunesmith.models.registry import resolve

    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    return [len(x) for x in tok(list(pd.read_csv(path)["text"].astype(str)), truncation=True, max_length=maxlen)["input_ids"]]


def spread(values: list[float], digits: int = 4) -> str:
    import statistics

    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def shapes_table(names: list[str], seeds: list[int], shared: Path, work: Path, step, peak: float) -> dict:
    """Runs every shape x seed (tunesmith train with audit, baselines and report; the Trainer's train + predict)
    and prints one table; returns the figures by shape. `peak`: this host's bf16 matmul FLOP/s, for each
    shape's ceiling (the most samples/s any bf16 engine could reach here, its matmuls alone at that peak)."""
    import pandas as pd

    out = {}
    for name in names:
        data, rows, epochs, maxlen = SHAPES[name]
        train, test = shape_files(name, shared, work)
        n_train, n_test = (len(pd.read_csv(f)) for f in (train, test))
        r = {"ts": [], "hf": []}
        for seed in seeds:
            folder = work / name / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            ts_out = folder / "ts"
            wall, rss = step(f"{name}_s{seed}_tunesmith",
                             tunesmith_cmd(train, test, ts_out, epochs, "full", LR, maxlen, seed, extras=True),
                             ts_out / "metrics.json")
            m = json.loads((ts_out / "metrics.json").read_text())
            r["ts"].append({"wall": wall, "rss": rss, "sps": m["train_samples_per_second"],
                            "acc": m["test"]["accuracy"], "train_s": m["train_seconds"],
                            # the run's stages; the rest of the process (imports, report, exit) is wall minus them
                            "stages": {**m.get("stage_seconds", {}), "imports, report, exit": wall - m["wall_seconds"]}})
            wall, rss = step(f"{name}_s{seed}_trainer", [PY, __file__, "--child", "trainer", "--args", str(train),
                                                         str(test), str(folder), str(epochs), str(maxlen), str(seed)],
                             folder / "trainer.json")
            h = json.load(open(folder / "trainer.json"))
            r["hf"].append({"wall": wall, "rss": rss, "sps": h["samples_per_second"], "acc": h["accuracy"],
                            "train_s": h["train_seconds"]})
        lens = token_lengths(train, maxlen)
        r["desc"] = f"{n_train} rows x {sum(lens) / len(lens):.0f} tok, {n_test} test, {epochs} ep, max len {maxlen}"
        r["flops_per_sample"] = train_flops(lens, 1) / n_train
        out[name] = r

    def mean(rs, k):
        return sum(x[k] for x in rs) / len(rs)

    print(f"\nshapes ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: {', '.join(map(str, seeds))}); tunesmith = "
          f"`tunesmith train` with audit, baselines, test scoring and report; Trainer = its train + predict\n")
    print("| shape | data | samples/s Trainer | tunesmith | ratio | whole command s Trainer | tunesmith | ratio "
          "| test accuracy Trainer | tunesmith | peak RSS MiB Trainer | tunesmith |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in out.items():
        hf, ts = r["hf"], r["ts"]
        print(f"| {name} | {r['desc']} | {mean(hf, 'sps'):.1f} | {mean(ts, 'sps'):.1f} | "
              f"{mean(ts, 'sps') / mean(hf, 'sps'):.2f}x | {mean(hf, 'wall'):.1f} | {mean(ts, 'wall'):.1f} | "
              f"{mean(hf, 'wall') / mean(ts, 'wall'):.2f}x | {spread([x['acc'] for x in hf])} | "
              f"{spread([x['acc'] for x in ts])} | {max(x['rss'] for x in hf):.0f} | {max(x['rss'] for x in ts):.0f} |")
    for name, r in out.items():
        ts, hf = r["ts"], r["hf"]
        print(f"{name}: tunesmith wall {mean(ts, 'wall'):.1f}s of which training {mean(ts, 'train_s'):.1f}s "
              f"(fixed costs {mean(ts, 'wall') - mean(ts, 'train_s'):.1f}s); Trainer wall {mean(hf, 'wall'):.1f}s "
              f"of which training {mean(hf, 'train_s'):.1f}s")
        keys = list(dict.fromkeys(k for x in ts for k in x["stages"]))  # a run kept from before may lack some
        stages = {k: sum(x["stages"].get(k, 0.0) for x in ts) / len(ts) for k in keys}
        print(f"{name}: tunesmith's stages, s: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    for name, r in out.items():
        # The ratio a shape allows on this host: the Trainer trains in fp32, the engine in bf16, both at a fixed
        # FLOP count a sample (real tokens; padding and everything but the matmuls left out, so a bound)
        ceiling = peak / r["flops_per_sample"]
        print(f"{name}: {r['flops_per_sample'] / 1e9:.2f} GFLOP a sample; at the bf16 matmul peak at most "
              f"{ceiling:.0f} samples/s = {ceiling / mean(r['hf'], 'sps'):.2f}x the Trainer's; tunesmith reached "
              f"{100 * mean(r['ts'], 'sps') / ceiling:.0f}% of that ceiling")
    if "short" in out:
        ratio = mean(out["short"]["hf"], "wall") / mean(out["short"]["ts"], "wall")
        print(f"target: short whole command >= 2.5x the Trainer's train + predict: "
              f"{'met' if ratio >= 2.5 else 'MISSED'} ({ratio:.2f}x)")
    return out


# ---------------------------------------------------------------- parent
def tunesmith_cmd(sample, test, out, epochs, strategy, lr, maxlen=MAXLEN, seed=SEED, extras=False):
    recipe = Path(out).with_suffix(".yaml")
    # Same settings as the Trainer: all rows train (no validation split), no warmup, no weight decay;
    # baselines and audit off so the wall time is the fine-tune plus test evaluation only (extras=True: on, as
    # a user runs it, for the time to a verdict).
    recipe.write_text(json.dumps({"train": str(sample), "test": str(test), "model": "minilm", "strategy": strategy,
                                  "epochs": epochs, "lr": lr, "batch_size": BATCH, "max_length": maxlen,
                                  "val_fraction": 0.0, "warmup_ratio": 0.0, "weight_decay": 0.0, "seed": seed,
                                  "baselines": extras, "audit": extras, "out": str(out)}))
    return [str(Path(PY).parent / "tunesmith"), "train", "--config", str(recipe), "--overwrite"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "intents"))
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--child", choices=["trainer", "predict"])
    ap.add_argument("--args", nargs="*")
    ap.add_argument("--work", help="work folder; steps whose results are there already are not rerun")
    ap.add_argument("--shapes", default="short,intents",
                    help=f"comma-separated shapes for the table ({', '.join(SHAPES)}); empty: no table")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per shape in the table (42, 43, ...)")
    ap.add_argument("--table-only", action="store_true", help="only the shapes table (not the --rows run above it)")
    a = ap.parse_args()
    print(cpu_line(), flush=True)  # hosts differ: the ratios below hold for this one
    if a.child == "trainer":
        return child_trainer(a.args[0], a.args[1], a.args[2], *map(int, a.args[3:]))
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
    shapes = [x for x in a.shapes.split(",") if x]
    unknown = [x for x in shapes if x not in SHAPES]
    if unknown:
        sys.exit(f"unknown shape {unknown[0]}; the shapes are: {', '.join(SHAPES)}")
    if a.table_only:
        shapes_table(shapes, [SEED + i for i in range(a.seeds)], Path(a.data).parent, work, step, peak)
        load1 = os.getloadavg()
        print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
        return

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

    flops = train_flops(token_lengths(sample, MAXLEN), a.epochs)
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
    print("\n| full fine-tuning | HF Trainer (fp32) | tunesmith | ratio |\n|---|---|---|---|")
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
    if shapes:
        shapes_table(shapes, [SEED + i for i in range(a.seeds)], Path(a.data).parent, work, step, peak)
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
