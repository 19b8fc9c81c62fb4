"""Embedding fine-tuning on BANKING77 question pairs: `tunesmith train --task embedding` against
sentence-transformers' own SentenceTransformerTrainer with MultipleNegativesRankingLoss, same model, data,
epochs, batch, learning rate, maximum length and seed.

    .venv/bin/python benchmarks/bench_embed.py [--data ../shared/data/intents] [--model minilm] [--epochs 1]
                                               [--rows N] [--work DIR]

Pairs: in each intent, its questions in a seeded order, each with the next (a cycle): anchor and positive of
the same intent. Train pairs from train.csv (or its first --rows pairs), test pairs from test.csv. Both sides
keep duplicate texts out of a batch (sentence-transformers' NO_DUPLICATES; tunesmith's own sampler), no
warmup, no weight decay, no validation split. Each side is a child process (wall time, peak RSS); a third
child scores both saved models and the untouched one with tunesmith's metrics code on test.csv as labelled
texts (metrics.measure: each test question queries all the others, those of its intent relevant), so MRR@10
is computed alike for all, over one pool. tunesmith's own test scoring (part of its command's wall time) is
kept to the first 200 test pairs; the trainer scores nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _children import stepper  # noqa: E402
from _machine import cpu_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BATCH, MAXLEN, SEED = 32, 64, 42


def intent_pairs(path: Path, seed: int, rows: int | None = None) -> list[dict]:
    import numpy as np
    import pandas as pd

    df = pd.read_csv(path)
    rng = np.random.default_rng(seed)
    out = []
    for _, g in df.groupby("label", sort=True):
        t = list(dict.fromkeys(g["text"]))
        t = [t[i] for i in rng.permutation(len(t))]
        out += [{"anchor": t[k], "positive": t[(k + 1) % len(t)]} for k in range(len(t)) if len(t) > 1]
    out = [out[i] for i in rng.permutation(len(out))]  # intents mixed, so --rows keeps many of them
    return out[:rows] if rows else out


# ---------------------------------------------------------------- sentence-transformers' trainer
def child_st(train, out, model_name, epochs, lr, seed):
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import set_seed

    from tunesmith.models.registry import resolve

    set_seed(seed)
    model = SentenceTransformer(resolve(model_name), device="cpu")
    model.max_seq_length = MAXLEN
    ds = Dataset.from_list(json.loads(Path(train).read_text()))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(out) / "st_tmp"), per_device_train_batch_size=BATCH, learning_rate=lr,
        num_train_epochs=epochs, seed=seed, warmup_ratio=0.0, weight_decay=0.0,
        batch_sampler=BatchSamplers.NO_DUPLICATES, report_to=[], save_strategy="no", logging_strategy="no",
        disable_tqdm=True, use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=losses.MultipleNegativesRankingLoss(model))
    r = trainer.train()
    model.save(str(Path(out) / "model"))
    Path(out, "st.json").write_text(json.dumps({"train_seconds": r.metrics["train_runtime"],
                                                "samples_per_second": r.metrics["train_samples_per_second"]}))


# ---------------------------------------------------------------- one scorer for every model
def child_score(test_csv, result, *folders):
    import torch
    from transformers import AutoModel

    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.registry import resolve
    from tunesmith.tasks.embedding import metrics as M
    from tunesmith.tasks.embedding.data import Examples
    from tunesmith.tasks.embedding.inference import cosine_sim

    import pandas as pd

    df = pd.read_csv(test_csv)
    ex = Examples("labelled", df["text"].tolist(), label=df["label"].astype(str).tolist())
    found = {}
    for f in folders:
        path = resolve(f)
        model, tok = AutoModel.from_pretrained(path).eval(), load_tokenizer(path)
        m, _ = M.measure(ex, cosine_sim(model, tok, MAXLEN, 64, False, torch.device("cpu")), with_ci=False)
        found[f] = m
    Path(result).write_text(json.dumps(found))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "intents"))
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--rows", type=int, default=None, help="train on the first N pairs only (a quick look)")
    ap.add_argument("--work", help="work folder; steps whose results are there already are not rerun")
    ap.add_argument("--child", choices=["st", "score"])
    ap.add_argument("--args", nargs="*")
    a = ap.parse_args()
    if a.child == "st":
        return child_st(a.args[0], a.args[1], a.args[2], int(a.args[3]), float(a.args[4]), int(a.args[5]))
    if a.child == "score":
        return child_score(*a.args)
    print(cpu_line(), flush=True)

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_embed_"))
    work.mkdir(parents=True, exist_ok=True)
    train_rows = intent_pairs(Path(a.data) / "train.csv", SEED, a.rows)
    test_rows = intent_pairs(Path(a.data) / "test.csv", SEED + 1)
    tag = f"{a.model}_{a.rows or 'all'}_e{a.epochs}"
    train_json = work / f"train_{tag}.json"
    train_json.write_text(json.dumps(train_rows))
    train_csv = work / f"train_{tag}.csv"
    import pandas as pd

    pd.DataFrame(train_rows).to_csv(train_csv, index=False)
    test_csv = work / "test.csv"
    pd.DataFrame(test_rows[:200]).to_csv(test_csv, index=False)
    load0 = os.getloadavg()
    n_test = len(pd.read_csv(Path(a.data) / "test.csv"))
    print(f"work folder: {work}\ndata: {len(train_rows)} train pairs (BANKING77, same intent), scored on the "
          f"{n_test} test questions by intent; model {a.model}, {a.epochs} epochs, batch {BATCH}, max length "
          f"{MAXLEN}, lr {a.lr}, seed {SEED}; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    env = {"TUNESMITH_CACHE": os.environ.get("TUNESMITH_CACHE", str(work / "cache")), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    step = stepper(work, env)

    ts_out = work / f"ts_{tag}"
    recipe = work / f"ts_{tag}.yaml"
    # baselines and audit off: the wall time is the fine-tune and its own test scoring (the trainer has none)
    recipe.write_text(json.dumps({"train": str(train_csv), "test": str(test_csv), "task": "embedding",
                                  "model": a.model, "strategy": "full", "epochs": a.epochs, "lr": a.lr,
                                  "batch_size": BATCH, "max_length": MAXLEN, "val_fraction": 0.0, "warmup_ratio": 0.0,
                                  "weight_decay": 0.0, "seed": SEED, "audit": False, "baselines": False,
                                  "out": str(ts_out)}))
    tunesmith = str(Path(PY).parent / "tunesmith")
    wall_ts, rss_ts = step(f"tunesmith_{tag}", [tunesmith, "train", "--config", str(recipe), "--overwrite"],
                           ts_out / "metrics.json")
    st_out = work / f"st_{tag}"
    st_out.mkdir(exist_ok=True)
    wall_st, rss_st = step(f"st_{tag}", [PY, __file__, "--child", "st", "--args", str(train_json), str(st_out),
                                         a.model, str(a.epochs), str(a.lr), str(SEED)], st_out / "st.json")
    scores = work / f"scores_{tag}.json"
    step(f"score_{tag}", [PY, __file__, "--child", "score", "--args", str(Path(a.data) / "test.csv"), str(scores),
                          a.model, str(st_out / "model"), str(ts_out / "model")], scores)
    sc = json.loads(scores.read_text())
    base, st, ts = sc[a.model], sc[str(st_out / "model")], sc[str(ts_out / "model")]
    sps_ts = json.loads((ts_out / "metrics.json").read_text())["train_samples_per_second"]
    sps_st = json.loads((st_out / "st.json").read_text())["samples_per_second"]
    rows = [("training samples/s", f"{sps_st:.1f}", f"{sps_ts:.1f}", f"{sps_ts / sps_st:.2f}x"),
            ("whole command wall s", f"{wall_st:.1f}", f"{wall_ts:.1f}", f"{wall_st / wall_ts:.2f}x"),
            ("test MRR@10", f"{st['mrr@10']:.4f}", f"{ts['mrr@10']:.4f}", f"{ts['mrr@10'] - st['mrr@10']:+.4f}"),
            ("test nDCG@10", f"{st['ndcg@10']:.4f}", f"{ts['ndcg@10']:.4f}", f"{ts['ndcg@10'] - st['ndcg@10']:+.4f}"),
            ("test recall@10", f"{st['recall@10']:.4f}", f"{ts['recall@10']:.4f}", ""),
            ("peak RSS MiB", f"{rss_st:.0f}", f"{rss_ts:.0f}", f"{rss_ts / rss_st:.2f}x")]
    print(f"\nuntouched {a.model}: test MRR@10 {base['mrr@10']:.4f} ({base['queries']} queries over {base['docs']} "
          f"texts)")
    print(f"\n| {a.model}, BANKING77 pairs | sentence-transformers trainer | tunesmith | ratio |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}", flush=True)


if __name__ == "__main__":
    main()
