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
predict_with_generate). Training tokens/s = non-padding source+target tokens / seconds of the training call;
generation tokens/s = generated tokens (EOS excluded) / seconds of the call. Model loading, tokenisation and
metrics are outside both clocks.
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
    import torch

    from tunesmith.config import make_recipe
    from tunesmith.tasks.seq2seq.inference import generate
    from tunesmith.tasks.seq2seq.model import load, start_id
    from tunesmith.tasks.seq2seq.steps import Seq2SeqSteps, encode
    from tunesmith.train.loop import fit

    train, test = pairs(args.rows)
    recipe = make_recipe(train=str(DATA / "deu_eng_train.csv"), task="seq2seq", epochs=1, batch_size=args.batch_size,
                         lr=args.lr, warmup_ratio=0.0, patience=0, seed=args.seed, metric="loss")
    torch.manual_seed(args.seed)
    model, tok, path = load(args.model)
    eos = model.generation_config.eos_token_id
    enc = encode(tok, train, 128, start_id(model), eos)
    tokens = sum(len(s) + len(t) for s, t in zip(enc.src, enc.tgt))
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as d:
        steps = Seq2SeqSteps(None, enc, None, recipe, tok.pad_token_id, start_id(model), bf16, cpu)
        res = fit(model, steps, recipe, device=cpu, bf16=bf16, ckpt_dir=Path(d))
    ts_train = res.train_seconds
    ids = encode(tok, test, 128, start_id(model), eos).src
    t0 = time.perf_counter()
    gens = generate(model, tok, ids, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, length_penalty=1.0,
                    bf16=bf16, device=cpu, batch_size=16)
    ts_gen, ts_new = time.perf_counter() - t0, sum(g["tokens"] for g in gens)
    print(f"tunesmith:        train {ts_train:.1f}s, {tokens / ts_train:.0f} tokens/s, loss "
          f"{res.history[-1]['train_loss']:.3f}; generate {ts_gen:.1f}s, {ts_new / ts_gen:.1f} new tokens/s")
    hf_train, hf_tokens, hf_loss, hf_gen, hf_new = run_trainer(args, path, train, test, bf16)
    print(f"Seq2SeqTrainer:   train {hf_train:.1f}s, {hf_tokens / hf_train:.0f} tokens/s, loss {hf_loss:.3f}; "
          f"predict_with_generate {hf_gen:.1f}s, {hf_new / hf_gen:.1f} new tokens/s")
    print(f"ratio tunesmith/Trainer: train tokens/s {(tokens / ts_train) / (hf_tokens / hf_train):.2f}x, generation "
          f"tokens/s {(ts_new / ts_gen) / (hf_new / hf_gen):.2f}x (load average now {os.getloadavg()})")


def run_trainer(args, path, train, test, bf16):
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
    args = ap.parse_args()
    print(cpu_line(), flush=True)  # hosts differ: the ratios below hold for this one

    import torch

    from tunesmith.accel.precision import use_bf16

    bf16 = use_bf16(args.bf16, torch.device("cpu"))
    print(f"{torch.get_num_threads()} threads, {'bf16' if bf16 else 'fp32'}, load average {os.getloadavg()}")
    if not args.skip_quality:
        for model in args.models.split(","):
            quality(args, model.strip(), Path(args.out) / model.strip().replace("/", "_"))
    if not args.skip_speed:
        speed(args, bf16)


if __name__ == "__main__":
    main()
