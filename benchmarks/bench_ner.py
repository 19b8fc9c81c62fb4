"""Named entities on WNUT-17: `tunesmith train --task token` against the Hugging Face Trainer as run_ner.py
uses it (DataCollatorForTokenClassification, the label on each word's first sub-token, -100 on the rest),
same model, data, epochs, batch, learning rate and seed.

    .venv/bin/python benchmarks/bench_ner.py [--data ../shared/data/ner] [--model minilm] [--epochs 3]
                                             [--rows N] [--work DIR] [--seeds 42 43 44]

Each side is a child process (wall time, peak RSS from os.wait4). Both train on train.jsonl (or its first
--rows sentences) with no validation split, no warmup and no weight decay (the Trainer's defaults), and are
scored on test.jsonl with seqeval's entity F1 (strict span and type, micro). The Trainer computes in fp32
(its CPU default); tunesmith in bf16 where the CPU has it. The Trainer, like run_ner.py, truncates at
--max-length (words past it count as O); tunesmith reads them in windows. Also printed: tunesmith's
dictionary baseline and its F1 on entities unseen in training. With several --seeds both sides run once
per seed and the F1 target is read on the mean difference (one seed's ci95 is about +-3 points wide).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _children import stepper  # noqa: E402
from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BATCH, MAXLEN = 32, 128


def read(path: Path, rows: int | None = None) -> list[dict]:
    out = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return out[:rows] if rows else out


# ---------------------------------------------------------------- the Trainer, as run_ner.py does it
def child_trainer(train, test, out, model_name, epochs, lr, seed):
    import numpy as np
    from datasets import Dataset
    from seqeval.metrics import f1_score, precision_score, recall_score
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments, set_seed)

    from tunesmith.models.registry import resolve

    set_seed(seed)
    tr, te = read(Path(train)), read(Path(test))
    types = sorted({t[2:] for r in tr for t in r["tags"] if t != "O"})
    labels = ["O"] + [f"{p}-{t}" for t in types for p in "BI"]
    index = {l: i for i, l in enumerate(labels)}
    path = resolve(model_name)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index)

    def encode(rows):
        enc = tok([r["tokens"] for r in rows], is_split_into_words=True, truncation=True, max_length=MAXLEN)
        all_labels = []
        for i, r in enumerate(rows):  # run_ner.py's tokenize_and_align_labels (label_all_tokens=False)
            prev, lab = None, []
            for w in enc.word_ids(i):
                lab.append(-100 if w is None or w == prev else index.get(r["tags"][w], 0))
                prev = w
            all_labels.append(lab)
        return Dataset.from_dict({**enc, "labels": all_labels}), enc

    train_ds, _ = encode(tr)
    test_ds, test_enc = encode(te)
    args = TrainingArguments(output_dir=str(Path(out) / "hf"), per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=64, learning_rate=lr, num_train_epochs=epochs, seed=seed,
                             report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                      data_collator=DataCollatorForTokenClassification(tok))
    r = trainer.train()
    logits = trainer.predict(test_ds).predictions
    pred = []
    for i, row in enumerate(te):
        tags, seen = ["O"] * len(row["tokens"]), set()
        for j, w in enumerate(test_enc.word_ids(i)):
            if w is not None and w not in seen:
                seen.add(w)
                tags[w] = labels[int(np.argmax(logits[i][j]))]
        pred.append(tags)
    gold = [row["tags"] for row in te]
    json.dump({"train_seconds": r.metrics["train_runtime"], "samples_per_second": r.metrics["train_samples_per_second"],
               "f1": f1_score(gold, pred), "precision": precision_score(gold, pred),
               "recall": recall_score(gold, pred)}, open(Path(out) / "trainer.json", "w"))


def tunesmith_cmd(train, test, out, model, epochs, lr, seed):
    recipe = Path(out).with_suffix(".yaml")
    # The Trainer's settings: every row trains (no validation split), no warmup, no weight decay; the audit
    # off so the wall time is the fine-tune, the baselines and the test evaluation.
    recipe.write_text(json.dumps({"train": str(train), "test": str(test), "task": "token", "model": model,
                                  "strategy": "full", "epochs": epochs, "lr": lr, "batch_size": BATCH,
                                  "max_length": MAXLEN, "val_fraction": 0.0, "warmup_ratio": 0.0,
                                  "weight_decay": 0.0, "seed": seed, "audit": False, "out": str(out)}))
    return [str(Path(PY).parent / "tunesmith"), "train", "--config", str(recipe), "--overwrite"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ner"))
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--rows", type=int, default=None, help="train on the first N sentences only (a quick look)")
    ap.add_argument("--child", choices=["trainer"])
    ap.add_argument("--args", nargs="*")
    ap.add_argument("--work", help="work folder; steps whose results are there already are not rerun")
    ap.add_argument("--skip-trainer", action="store_true", help="tunesmith only")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    a = ap.parse_args()
    print(cpu_line(), flush=True)
    if a.child == "trainer":
        return child_trainer(a.args[0], a.args[1], a.args[2], a.args[3], int(a.args[4]), float(a.args[5]),
                             int(a.args[6]))

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_ner_"))
    work.mkdir(parents=True, exist_ok=True)
    train, test = Path(a.data) / "train.jsonl", Path(a.data) / "test.jsonl"
    if a.rows:
        sample = work / f"train_{a.rows}.jsonl"
        sample.write_text("".join(json.dumps(r) + "\n" for r in read(train, a.rows)))
        train = sample
    n_train = len(read(train))
    load0 = os.getloadavg()
    print(f"work folder: {work}\ndata: {n_train} sentences of {train}, test {test}; model {a.model}, {a.epochs} "
          f"epochs, batch {BATCH}, max length {MAXLEN}, lr {a.lr}, seeds {a.seeds}; load average "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    env = {"TUNESMITH_CACHE": os.environ.get("TUNESMITH_CACHE", str(work / "cache")), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}

    step = stepper(work, env)
    results = [one_seed(a, step, work, train, test, seed) for seed in a.seeds]
    if a.skip_trainer or len(results) < 2:
        return
    import statistics

    diffs = [100 * (t - h) for t, h, _ in results]
    ratios = [r for _, _, r in results]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    print(f"\nover seeds {a.seeds}: tunesmith F1 {statistics.mean(t for t, _, _ in results):.4f}, Trainer "
          f"{statistics.mean(h for _, h, _ in results):.4f}; difference {mean:+.2f} pt (sd {sd:.2f}, per seed "
          f"{', '.join(f'{d:+.2f}' for d in diffs)}); samples/s ratio median {statistics.median(ratios):.2f}x")
    print(f"targets over seeds: F1 at least Trainer's - 1 pt: {'met' if mean >= -1 else 'MISSED'}, "
          f"samples/s >= 3x: {'met' if statistics.median(ratios) >= 3 else 'MISSED'}")
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


def one_seed(a, step, work, train, test, seed):
    """Both sides at one seed: (tunesmith F1, Trainer F1, samples/s ratio); the table of that seed printed."""
    tag = f"{a.model}" + (f"_s{seed}" if seed != 42 else "")  # seed 42 keeps the folders of earlier runs
    ts_out = work / f"ts_{tag}"
    wall_ts, rss_ts = step(f"tunesmith_{tag}", tunesmith_cmd(train, test, ts_out, a.model, a.epochs, a.lr, seed),
                           ts_out / "metrics.json")
    ts = json.loads((ts_out / "metrics.json").read_text())
    t, b, su = ts["test"], ts.get("baselines", {}), ts.get("seen_unseen", {})
    print(f"\nseed {seed}, tunesmith: entity F1 {t['f1']:.4f} [{t['ci95']['f1'][0]:.4f}, {t['ci95']['f1'][1]:.4f}], "
          f"precision {t['precision']:.4f}, recall {t['recall']:.4f}; dictionary baseline F1 "
          f"{b.get('dictionary', {}).get('f1', float('nan')):.4f}; unseen-entity F1 "
          f"{su.get('unseen', {}).get('f1', float('nan')):.4f} ({100 * su.get('share_seen', 0):.1f}% of test entities "
          f"seen in train)")
    print("per type F1: " + ", ".join(f"{k} {v['f1']:.3f}" for k, v in t["per_type"].items()))
    if a.skip_trainer:
        return t["f1"], float("nan"), float("nan")
    hf_out = work / f"hf_{tag}"
    hf_out.mkdir(exist_ok=True)
    wall_hf, rss_hf = step(f"trainer_{tag}", [PY, __file__, "--child", "trainer", "--args", str(train), str(test),
                                              str(hf_out), a.model, str(a.epochs), str(a.lr), str(seed)],
                           hf_out / "trainer.json")
    hf = json.load(open(hf_out / "trainer.json"))
    sps_ts, sps_hf = ts["train_samples_per_second"], hf["samples_per_second"]
    rows = [("training samples/s", f"{sps_hf:.1f}", f"{sps_ts:.1f}", f"{sps_ts / sps_hf:.2f}x"),
            ("whole command wall s", f"{wall_hf:.1f}", f"{wall_ts:.1f}", f"{wall_hf / wall_ts:.2f}x"),
            ("test entity F1", f"{hf['f1']:.4f}", f"{t['f1']:.4f}", f"{100 * (t['f1'] - hf['f1']):+.2f} pt"),
            ("test entity precision", f"{hf['precision']:.4f}", f"{t['precision']:.4f}", ""),
            ("test entity recall", f"{hf['recall']:.4f}", f"{t['recall']:.4f}", ""),
            ("peak RSS MiB", f"{rss_hf:.0f}", f"{rss_ts:.0f}", f"{rss_ts / rss_hf:.2f}x")]
    print(f"\n| {a.model}, WNUT-17, seed {seed} | HF Trainer (fp32) | tunesmith | ratio |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    targets = {"F1 at least Trainer's - 1 pt": t["f1"] >= hf["f1"] - 0.01, "samples/s >= 3x": sps_ts >= 3 * sps_hf}
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    load1 = os.getloadavg()
    print(f"load average: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}", flush=True)
    return t["f1"], hf["f1"], sps_ts / sps_hf


if __name__ == "__main__":
    main()
