"""Instruction-tuning speed: TRL's SFTTrainer vs tunesmith's SFT loop, same everything.

    .venv/bin/python benchmarks/bench_sft.py                  # 96 Dolly rows, smollm2, LoRA r=8, 256 tokens
    .venv/bin/python benchmarks/bench_sft.py --rows 200 --max-length 512

Same rows (rendered with the model's chat template, EOS after each response), same model, LoRA
settings (r, alpha, dropout, target modules), sequence length, batch size, learning rate, one epoch,
response-only loss, same precision (tunesmith's bf16 decision is passed to TRL). TRL's gradient
checkpointing (on by default) is turned off because tunesmith's is off by default too; everything else
is TRL's default. Tokens/s = non-padding tokens of the training rows / seconds of the training call
(data preparation and model loading excluded on both sides). Needs the `bench` extra (trl).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _machine import cpu_line  # noqa: E402  (one definition for every benchmark)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "instructions" / "dolly_3k.jsonl"


def load_rows(n: int, max_length: int, tok):
    from tunesmith.tasks.sft.data import encode, load_conversations

    convs, _, _ = load_conversations(DATA)
    data, counts = encode(tok, convs[: n * 2], max_length, "drop")
    keep = set(data.rows[:n])  # rows that fit: neither side truncates anything
    convs = [c for c in convs if c.row in keep]
    data, _ = encode(tok, convs, max_length, "drop")
    return convs, data


def run_tunesmith(args, convs, data, bf16):
    import torch

    from tunesmith.config import make_recipe
    from tunesmith.tasks.sft.run import apply_strategy, load_causal_lm
    from tunesmith.tasks.sft.steps import SFTSteps
    from tunesmith.train.loop import fit

    recipe = make_recipe(train=str(DATA), task="sft", strategy="lora", epochs=1, batch_size=args.batch_size,
                         lr=args.lr, max_length=args.max_length, lora_r=8, lora_alpha=16, lora_dropout=0.05,
                         warmup_ratio=0.0, patience=0, seed=args.seed)
    model, tok, _ = load_causal_lm(args.model)
    model = apply_strategy(model, recipe)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cpu = torch.device("cpu")
        steps = SFTSteps(data, None, recipe, tok.pad_token_id, bf16, cpu)
        res = fit(model, steps, recipe, device=cpu, bf16=bf16, ckpt_dir=Path(d))
    return res.train_seconds, res.history[-1]["train_loss"]


def run_trl(args, convs, tok_path, bf16):
    import tempfile

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.load import load_tokenizer
    from tunesmith.train.strategies.lora import target_modules

    tok = load_tokenizer(tok_path)
    model = AutoModelForCausalLM.from_pretrained(tok_path)
    ds = Dataset.from_list([{"prompt": c.prompt, "completion": [{"role": "assistant", "content": c.response}]}
                            for c in convs])
    with tempfile.TemporaryDirectory() as d:
        cfg = SFTConfig(output_dir=d, num_train_epochs=1, per_device_train_batch_size=args.batch_size,
                        learning_rate=args.lr, max_length=args.max_length, lr_scheduler_type="linear",
                        warmup_steps=0, gradient_checkpointing=False, bf16=bf16, use_cpu=True, report_to=[],
                        save_strategy="no", logging_steps=10_000, seed=args.seed, dataloader_num_workers=0)
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=target_modules(model),
                          task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora)
        tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
        t0 = time.perf_counter()
        out = trainer.train()
        return time.perf_counter() - t0, out.training_loss, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    args = ap.parse_args()
    print(cpu_line(), flush=True)  # hosts differ: the ratios below hold for this one

    import torch

    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.registry import resolve
    from tunesmith.accel.precision import use_bf16

    path = resolve(args.model)
    tok = load_tokenizer(path)
    bf16 = use_bf16(args.bf16, torch.device("cpu"))
    convs, data = load_rows(args.rows, args.max_length, tok)
    tokens = sum(len(x) for x in data.ids)
    print(f"{len(convs)} rows, {tokens} tokens, max length {args.max_length}, batch {args.batch_size}, "
          f"{'bf16' if bf16 else 'fp32'}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    trl_s, trl_loss, trl_tokens = run_trl(args, convs, path, bf16)
    print(f"TRL SFTTrainer: {trl_s:.1f}s, {trl_tokens / trl_s:.1f} tokens/s (its own count {trl_tokens}), "
          f"train loss {trl_loss:.4f}")
    ts_s, ts_loss = run_tunesmith(args, convs, data, bf16)
    print(f"tunesmith:      {ts_s:.1f}s, {tokens / ts_s:.1f} tokens/s, train loss {ts_loss:.4f}")
    print(f"ratio tunesmith/TRL tokens/s: {(tokens / ts_s) / (trl_tokens / trl_s):.2f}x  "
          f"(load average now {os.getloadavg()})")


if __name__ == "__main__":
    main()
