"""With the Hugging Face Trainer's own hyperparameters given as flags, does tunesmith train what it trains?

Issue #15 asks that `tunesmith train` with the Trainer's settings match the Trainer's accuracy within
noise (mean over 3 seeds), and suspected batches grouped by length. Three systems, same rows, same
model (minilm), lr 5e-5, 5 epochs, batch 32, warmup 6%, weight decay 0.01, no validation:
  trainer     transformers.Trainer, random batches (DataCollatorWithPadding)
  tunesmith   `--head-init random --pooling native` (the Trainer's model: BERT's [CLS] pooler, random
              head), batches grouped by length as always (windows of 64 batches sorted by length)
  ungrouped   the same, with every batch drawn at random (batching.MEGA = 1)
and, for scale, tunesmith's default recipe on the same rows.

    .venv/bin/python benchmarks/bench_trainer_flags.py            # ~10 minutes on 2 cores

The data: 30 rows of each of 20 intents drawn from ../shared/data/intents/train.csv (seed 1), tested on
those intents' rows of test.csv: 600 short texts, the small-data shape.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_line  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "intents"
FLAGS = dict(strategy="full", epochs=5, lr=5e-5, batch_size=32, warmup_ratio=0.06, weight_decay=0.01, patience=0,
             val_fraction=0.0)


def sample(work: Path) -> tuple[str, str]:
    import numpy as np
    import pandas as pd

    tr, te = pd.read_csv(SHARED / "train.csv"), pd.read_csv(SHARED / "test.csv")
    cls = list(np.random.default_rng(1).choice(sorted(tr.label.unique()), 20, replace=False))
    a = pd.concat([g.sample(min(30, len(g)), random_state=1) for _, g in tr[tr.label.isin(cls)].groupby("label")])
    a.to_csv(work / "train.csv", index=False)
    te[te.label.isin(cls)].to_csv(work / "test.csv", index=False)
    return str(work / "train.csv"), str(work / "test.csv")


def child(mode: str, seed: int, train: str, test: str, work: str) -> float:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if mode != "trainer":
        import tunesmith
        from tunesmith.train import batching

        batching.MEGA = 1 if mode == "ungrouped" else batching.MEGA
        extra = {} if mode == "default" else dict(FLAGS, head_init="random", pooling="native")
        run = tunesmith.train(train, test=test, out=f"{work}/{mode}-{seed}", audit=False, baselines=False,
                              seed=seed, **extra)
        return run.metrics["test"]["accuracy"]
    import numpy as np
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    from tunesmith.data.dataset import load_examples
    from tunesmith.models.registry import resolve

    set_seed(seed)
    tr, te = load_examples(train, None, None, "auto").examples, load_examples(test, None, None, "auto").examples
    labels = sorted(set(tr.labels))
    idx = {label: i for i, label in enumerate(labels)}
    path = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))

    class Rows(torch.utils.data.Dataset):
        def __init__(self, ex):
            self.enc, self.y = tok(list(ex.texts), truncation=True, max_length=128), [idx[x] for x in ex.labels]

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "labels": self.y[i]}

    args = TrainingArguments(output_dir=f"{work}/trainer-{seed}", num_train_epochs=FLAGS["epochs"],
                             learning_rate=FLAGS["lr"], per_device_train_batch_size=FLAGS["batch_size"],
                             warmup_steps=FLAGS["warmup_ratio"], weight_decay=FLAGS["weight_decay"], seed=seed,
                             save_strategy="no", report_to=[], logging_strategy="no", use_cpu=True,
                             disable_tqdm=True)
    t = Trainer(model=model, args=args, train_dataset=Rows(tr), data_collator=DataCollatorWithPadding(tok))
    t.train()
    pred = t.predict(Rows(te)).predictions.argmax(-1)
    return float((pred == np.array([idx[x] for x in te.labels])).mean())


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), *sys.argv[4:7])))
        return
    print(cpu_line())
    work = Path(tempfile.mkdtemp(prefix="bench-trainer-flags-"))
    train, test = sample(work)
    rows = {}
    for mode in ("trainer", "tunesmith", "ungrouped", "default"):
        for seed in (0, 1, 2):
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, __file__, "--child", mode, str(seed), train, test, str(work)],
                               capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"{mode} seed {seed} failed:\n{p.stderr[-2000:]}")
            rows.setdefault(mode, []).append((json.loads(p.stdout.strip().splitlines()[-1]), time.perf_counter() - t0))
    print("| system (600 rows, 20 intents) | accuracy by seed | mean | wall s (mean) |\n|---|---|---|---|")
    names = {"trainer": "HF Trainer", "tunesmith": "tunesmith, Trainer's flags",
             "ungrouped": "tunesmith, Trainer's flags, batches not grouped", "default": "tunesmith default recipe"}
    for mode, r in rows.items():
        accs = [a for a, _ in r]
        print(f"| {names[mode]} | {', '.join(f'{a:.4f}' for a in accs)} | {statistics.mean(accs):.4f} | "
              f"{statistics.mean(s for _, s in r):.0f} |")
    gap = statistics.mean(a for a, _ in rows["tunesmith"]) - statistics.mean(a for a, _ in rows["trainer"])
    sd = statistics.stdev([a for a, _ in rows["trainer"]])
    print(f"tunesmith minus Trainer, Trainer's flags: {gap * 100:+.2f} points (Trainer's seed spread {sd * 100:.2f})")


if __name__ == "__main__":
    main()
