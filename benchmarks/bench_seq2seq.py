"""Sequence to sequence: quality and speed of a BERT2BERT warm-started from minilm (Rothe et al. 2020), and
quality of the decoder smollm2 with LoRA (SmolLM2-135M-Instruct, prompted through --prompt-template), on
Tatoeba German→English (800 train / 200 test pairs of shared/data/pairs).

    .venv/bin/python benchmarks/bench_seq2seq.py                   # both models' quality, then speed (minilm)
    .venv/bin/python benchmarks/bench_seq2seq.py --skip-quality --rows 320
    .venv/bin/python benchmarks/bench_seq2seq.py --models smollm2 --skip-speed --quality-rows 200 \
        --decoder-epochs 1 --max-new-tokens 32            # a subset: the decoder's time on 2 shared cores

Quality: `tunesmith train --task seq2seq` for each of --models, chrF and ROUGE-L (and BLEU) of copying the
source, the untouched model (zero-shot; a decoder also retrieval few-shot, with the same template) and the
fine-tuned one on the test pairs, with 95% bootstrap intervals and the paired differences. --quality-rows
and --test-rows take the first pairs of each file (written to a temporary folder, not the repository).

Speed: one epoch of the same warm-started model (tied weights), the same pairs, batch size, learning rate,
linear schedule without warmup, precision, then generation of the test pairs with the same beam search,
through tunesmith's loop and `generate` and through transformers' Seq2SeqTrainer (train, then predict with
predict_with_generate), each side in a fresh child process, --repeats rounds (default 3; the Trainer's own
tokens/s spread ~20% between runs here). Training tokens/s = non-padding source+target tokens / seconds of
the training call; generation tokens/s = generated tokens (EOS excluded) / seconds of the call. Model
loading, tokenisation and metrics are outside both clocks.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pairs"


def subset(name: str, n: int | None, folder: Path) -> str:
    """The file, or its first n pairs written into `folder` (a temporary one)."""
    import pandas as pd

    if not n:
        return str(DATA / name)
    f = folder / name
    pd.read_csv(DATA / name).head(n).to_csv(f, index=False)
    return str(f)


def quality(args, model: str, out: Path):
    import tunesmith
    from tunesmith.tasks.seq2seq.decoder import is_decoder

    decoder = is_decoder(model)
    # a decoder: SFT's defaults (LoRA, lr 2e-4 unless --decoder-lr), greedy, the template; an encoder: beams
    kw = (dict(prompt_template=args.prompt_template, epochs=args.decoder_epochs, lr=args.decoder_lr,
               batch_size=args.decoder_batch_size, few_shot_k=args.few_shot_k) if decoder else
          dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, num_beams=args.num_beams))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        run = tunesmith.train(subset("deu_eng_train.csv", args.quality_rows, Path(d)),
                              test=subset("deu_eng_test.csv", args.test_rows, Path(d)), task="seq2seq", model=model,
                              max_new_tokens=args.max_new_tokens, seed=args.seed, bf16=args.bf16, out=str(out),
                              overwrite=True, **{k: v for k, v in kw.items() if v is not None})
    m = run.metrics
    r = run.recipe
    family = (f"decoder, {r['strategy']}, template {r['prompt_template']!r}, few-shot k {r['few_shot_k']}" if decoder
              else f"encoder-decoder, {r['strategy']}, {r['num_beams']} beams")
    print(f"== {model} ({family}; "
          f"{m['data']['pairs']['train']} train / {m['data']['pairs']['test']} test pairs, epochs "
          f"{r['epochs']}, lr {r['lr']}, max_new_tokens {args.max_new_tokens}; wall "
          f"{time.perf_counter() - t0:.0f}s)")
    names = {"copy_source": "copy the source", "zero_shot": "untouched model", "few_shot_retrieval": "few-shot (retr.)"}
    rows = [(names.get(k, k), b) for k, b in m["baselines"].items()] + [("fine-tuned", m["test"])]
    for name, r in rows:
        ci = r["ci95"]
        print(f"{name:16s} chrF {r['chrf']:5.1f} [{ci['chrf'][0]:.1f}, {ci['chrf'][1]:.1f}]  ROUGE-L "
              f"{r['rouge_l']:.3f} [{ci['rouge_l'][0]:.3f}, {ci['rouge_l'][1]:.3f}]  BLEU {r['bleu']:.1f}  "
              f"exact {r['exact_match']:.3f}")
    for k, c in m["comparison"].items():
        print(f"fine-tuned - {k}: chrF {c['chrf']['diff']:+.1f} [{c['chrf']['ci95'][0]:+.1f}, "
              f"{c['chrf']['ci95'][1]:+.1f}], ROUGE-L {c['rouge_l']['diff']:+.3f} [{c['rouge_l']['ci95'][0]:+.3f}, "
              f"{c['rouge_l']['ci95'][1]:+.3f}]")
    print(f"best epoch {m['best_epoch']} of {len(m['history'])}; train {m['train_seconds']:.0f}s "
          f"({m.get('train_tokens_per_second', 0):.0f} tokens/s); {m['signatures']['chrf']}; {m['signatures']['bleu']}",
          flush=True)


def pairs(n: int):
    """The first n training pairs, and a quarter as many test pairs (at least 50) to generate."""
    from tunesmith.tasks.seq2seq.data import read

    train, test = read(DATA / "deu_eng_train.csv").pairs, read(DATA / "deu_eng_test.csv").pairs
    return train.take(range(min(n, len(train)))), test.take(range(min(max(n // 4, 50), len(test))))


def speed(args, bf16: bool):
    """--repeats rounds, each side in its own child process (no allocator, thread-pool or oneDNN state carried
    from one to the other), tunesmith first then the Trainer; the ratio per round and their mean."""
    import json
    import statistics
    import subprocess
    import sys

    rounds = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.repeats):
            got = {}
            for side in ("ts", "hf"):
                f = Path(d) / f"{side}{r}.json"
                cmd = [sys.executable, __file__, "--side", side, "--result", str(f)] + [
                    x for k, v in vars(args).items() if k in SIDE_ARGS for x in (f"--{k.replace('_', '-')}", str(v))]
                p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if p.returncode:
                    sys.exit(f"the {side} side failed ({p.returncode}):\n{p.stderr[-3000:]}")
                got[side] = json.loads(f.read_text())
            ts, hf = got["ts"], got["hf"]
            rounds.append((ts["tokens"] / ts["train_s"]) / (hf["tokens"] / hf["train_s"]))
            print(f"round {r + 1}: tunesmith train {ts['train_s']:.1f}s, {ts['tokens'] / ts['train_s']:.0f} tokens/s, "
                  f"loss {ts['loss']:.3f}, generate {ts['new'] / ts['gen_s']:.1f} new tokens/s | Seq2SeqTrainer train "
                  f"{hf['train_s']:.1f}s, {hf['tokens'] / hf['train_s']:.0f} tokens/s, loss {hf['loss']:.3f}, "
                  f"predict_with_generate {hf['new'] / hf['gen_s']:.1f} new tokens/s | train tokens/s "
                  f"{rounds[-1]:.2f}x, generation {(ts['new'] / ts['gen_s']) / (hf['new'] / hf['gen_s']):.2f}x",
                  flush=True)
    spread = f" (min {min(rounds):.2f}x, max {max(rounds):.2f}x)" if len(rounds) > 1 else ""
    print(f"ratio tunesmith/Trainer, training tokens/s: mean {statistics.mean(rounds):.2f}x over {len(rounds)} "
          f"round(s){spread}; load average now {os.getloadavg()}")


SIDE_ARGS = ("model", "rows", "batch_size", "lr", "seed", "bf16", "max_new_tokens", "num_beams")


def side(args, bf16: bool):
    """One side of a speed round, in this (child) process: its figures written to --result."""
    import json

    import torch

    train, test = pairs(args.rows)
    if args.side == "hf":
        train_s, tokens, loss, gen_s, new = run_trainer(args, train, test, bf16)
    else:
        from tunesmith.config import make_recipe
        from tunesmith.tasks.seq2seq.inference import generate
        from tunesmith.tasks.seq2seq.model import load, start_id
        from tunesmith.tasks.seq2seq.steps import Seq2SeqSteps, encode
        from tunesmith.train.loop import fit

        recipe = make_recipe(train=str(DATA / "deu_eng_train.csv"), task="seq2seq", epochs=1,
                             batch_size=args.batch_size, lr=args.lr, warmup_ratio=0.0, patience=0, seed=args.seed,
                             metric="loss")
        torch.manual_seed(args.seed)
        model, tok, _ = load(args.model)
        eos = model.generation_config.eos_token_id
        enc = encode(tok, train, 128, start_id(model), eos)
        tokens = sum(len(s) + len(t) for s, t in zip(enc.src, enc.tgt))
        cpu = torch.device("cpu")
        steps = Seq2SeqSteps(None, enc, None, recipe, tok.pad_token_id, start_id(model), bf16, cpu)
        res = fit(model, steps, recipe, device=cpu, bf16=bf16, ckpt_dir=None)
        train_s, loss = res.train_seconds, res.history[-1]["train_loss"]
        ids = encode(tok, test, 128, start_id(model), eos).src
        t0 = time.perf_counter()
        gens = generate(model, tok, ids, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                        length_penalty=1.0, bf16=bf16, device=cpu, batch_size=16)
        gen_s, new = time.perf_counter() - t0, sum(g["tokens"] for g in gens)
    Path(args.result).write_text(json.dumps({"train_s": train_s, "tokens": tokens, "loss": loss, "gen_s": gen_s,
                                             "new": new}))


def run_trainer(args, train, test, bf16):
    import numpy as np
    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from tunesmith.tasks.seq2seq.model import load

    torch.manual_seed(args.seed)
    model, tok, _ = load(args.model)  # the same warm start, tied

    def rows(p):
        out = []
        for s, t in zip(p.sources, p.targets):
            x = tok(s, truncation=True, max_length=128, return_token_type_ids=False)
            y = tok(text_target=t, truncation=True, max_length=128)["input_ids"]
            out.append({**x, "labels": y[1:] if y[0] == model.config.decoder_start_token_id else y})
        return out

    tr, te = rows(train), rows(test)
    tokens = sum(len(r["input_ids"]) + len(r["labels"]) for r in tr)
    with tempfile.TemporaryDirectory() as d:
        cfg = Seq2SeqTrainingArguments(output_dir=d, num_train_epochs=1, per_device_train_batch_size=args.batch_size,
                                       per_device_eval_batch_size=16, learning_rate=args.lr, lr_scheduler_type="linear",
                                       warmup_steps=0, weight_decay=0.01, bf16=bf16, use_cpu=True, report_to=[],
                                       save_strategy="no", logging_steps=10_000, seed=args.seed,
                                       dataloader_num_workers=0, predict_with_generate=True,
                                       generation_max_length=None, generation_num_beams=args.num_beams)
        model.generation_config.max_new_tokens = args.max_new_tokens
        trainer = Seq2SeqTrainer(model=model, args=cfg, train_dataset=tr, processing_class=tok,
                                 data_collator=DataCollatorForSeq2Seq(tok, model=model))
        t0 = time.perf_counter()
        out = trainer.train()
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = trainer.predict(te, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
        gen_s = time.perf_counter() - t0
    ids = np.where(pred.predictions < 0, tok.pad_token_id, pred.predictions)[:, 1:]  # drop the start token
    eos, pad = model.generation_config.eos_token_id, tok.pad_token_id
    new = sum(int(next((k for k, t in enumerate(r) if t in (eos, pad)), len(r))) for r in ids.tolist())
    return train_s, tokens, out.training_loss, gen_s, new


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm", help="the speed comparison's model (an encoder-decoder)")
    ap.add_argument("--models", default="minilm,smollm2", help="the quality runs' models, comma-separated")
    ap.add_argument("--quality-rows", type=int, default=None, help="first training pairs of the quality runs")
    ap.add_argument("--test-rows", type=int, default=None, help="first test pairs of the quality runs")
    ap.add_argument("--prompt-template", default="Translate to English: {source}", help="decoders' template")
    ap.add_argument("--decoder-epochs", type=int, default=1)
    ap.add_argument("--decoder-lr", type=float, default=None, help="decoders' learning rate (default SFT's)")
    ap.add_argument("--decoder-batch-size", type=int, default=8)
    ap.add_argument("--few-shot-k", type=int, default=3, help="decoders' retrieval few-shot baseline")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--num-beams", type=int, default=4)
    ap.add_argument("--rows", type=int, default=800, help="training pairs of the speed comparison")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", default="runs/bench-seq2seq")
    ap.add_argument("--repeats", type=int, default=3, choices=range(1, 100), metavar="N",
                    help="speed rounds (each side a fresh process per round)")
    ap.add_argument("--side", choices=["ts", "hf"], help=argparse.SUPPRESS)   # a speed round's child
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.side:
        print(cpu_line(), flush=True)  # hosts differ: the ratios below hold for this one

    import torch

    from tunesmith.accel.precision import use_bf16

    bf16 = use_bf16(args.bf16, torch.device("cpu"))
    if args.side:
        return side(args, bf16)
    print(f"{torch.get_num_threads()} threads, {'bf16' if bf16 else 'fp32'}, load average {os.getloadavg()}")
    if not args.skip_quality:
        for model in args.models.split(","):
            quality(args, model.strip(), Path(args.out) / model.strip().replace("/", "_"))
    if not args.skip_speed:
        speed(args, bf16)


if __name__ == "__main__":
    main()
