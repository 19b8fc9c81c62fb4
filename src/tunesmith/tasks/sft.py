"""Supervised instruction tuning of decoder (causal LM) models, measured against simply prompting.

train_sft: data → before-evaluation (held-out response loss/perplexity, generations, zero-shot and
retrieval few-shot baselines, retention) → training → the same evaluation after → verdict.
Settings the user did not give take decoder-friendly defaults (SFT_DEFAULTS), written into recipe.yaml.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from tunesmith.errors import TunesmithError
from tunesmith.evaluate import sft_eval
from tunesmith.evaluate.bootstrap import paired_mean_diff
from tunesmith.run import (Run, artifact, check_out, check_resume, default_out, is_finished, open_run, prepare_out,
                           save_model, versions, write_json, write_recipe)
from tunesmith.tasks.sft_data import encode, load_conversations, pack, render_prompt, split
from tunesmith.train.precision import use_bf16
from tunesmith.train.sft_loop import fit_sft, response_loss

# Classification defaults (an encoder, full fine-tuning, batch 32, 128 tokens) do not suit decoders.
SFT_DEFAULTS = {"model": "smollm2", "strategy": "lora", "batch_size": 8, "lr": 2e-4, "epochs": 3, "metric": "loss"}
DEFAULT_MAX_LENGTH = 512  # or the model's limit when lower


def load_causal_lm(model_name: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.registry import check_hub, resolve

    path = resolve(model_name)
    check_hub(path)
    config = AutoConfig.from_pretrained(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except ValueError as e:
        raise TunesmithError(f"model '{model_name}' ({config.model_type}) is not a decoder that can generate "
                             f"text; --task sft needs a causal LM such as smollm2 ({str(e).splitlines()[0]})") from None
    return model, load_tokenizer(path), path


def apply_strategy(model, recipe):
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if recipe.strategy == "head":
        raise TunesmithError("--strategy head trains a classifier head; --task sft takes lora, freeze:K or full")
    if recipe.strategy != "lora":
        from tunesmith.train import strategies

        return strategies.apply(model, recipe.strategy, recipe)
    from peft import LoraConfig, TaskType, get_peft_model

    from tunesmith.train.strategies.lora import target_modules

    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                     lora_dropout=recipe.lora_dropout,
                     target_modules=recipe.lora_target_modules or target_modules(model))
    return get_peft_model(model, cfg)


def _say(on_event, msg):
    on_event("info", message=msg)


def _encode_split(tok, convs, recipe, name, on_event):
    data, c = encode(tok, convs, recipe.max_length, recipe.overflow, recipe.train_on_prompt)
    if c["over_max_length"]:
        _say(on_event, f"{name}: {c['over_max_length']} of {c['rows']} rows are longer than --max-length "
                       f"{recipe.max_length} tokens: {c['dropped']} dropped, {c['truncated']} truncated from the "
                       f"prompt side (--overflow {recipe.overflow})")
    if not len(data):
        raise TunesmithError(f"{name}: every row is longer than --max-length {recipe.max_length}; raise it")
    kept = {c_.row: c_ for c_ in convs}
    return data, [kept[r] for r in data.rows], c


def evaluate_model(model, tok, recipe, test, test_convs, device, bf16, retention=None, few_shot=None) -> dict:
    """Held-out response loss/perplexity, generations for the fixed prompts, optional retention."""
    res = response_loss(model, test, tok.pad_token_id, recipe.batch_size * 2, bf16, device)
    out = {"loss": res["loss"], "perplexity": res["perplexity"], "tokens": res["tokens"]}
    gen_convs = test_convs[:recipe.eval_generations]
    refs = [c.response for c in gen_convs]
    prompts = [render_prompt(tok, c.prompt)[-recipe.max_length:] for c in gen_convs]
    gens = sft_eval.generate(model, tok, prompts, recipe.max_new_tokens, bf16, device)
    out["generation"] = sft_eval.score_generations(gens, refs)
    out["texts"] = [g["text"] for g in gens]
    if few_shot is not None:
        fs = sft_eval.generate(model, tok, few_shot, recipe.max_new_tokens, bf16, device)
        out["few_shot"] = sft_eval.score_generations(fs, refs)
        out["few_shot_texts"] = [g["text"] for g in fs]
    if retention is not None:
        r = response_loss(model, retention, tok.pad_token_id, recipe.batch_size * 2, bf16, device)
        out["retention"] = {"loss": r["loss"], "perplexity": r["perplexity"]}
    model.train()
    return out


def verdict(m: dict) -> str:
    """Fine-tuned vs each prompting baseline on the same prompts: a win or a loss only when the 95%
    interval of the per-prompt ROUGE-L difference excludes zero; 16 generations rarely settle it."""
    before, after, fs = m["before"], m["after"], m["baselines"].get("few_shot_retrieval")
    g = after["generation"]
    parts = [f"held-out response loss {before['loss']:.3f} → {after['loss']:.3f} "
             f"(perplexity {before['perplexity']:.1f} → {after['perplexity']:.1f})"]
    rivals = {"zero-shot base model": m["baselines"]["zero_shot"]}
    if fs:
        rivals[f"retrieval {fs['k']}-shot base model"] = fs
    won, lost, cmp = [], [], []
    for name, b in rivals.items():
        d = paired_mean_diff(g.get("rouge_l_each", []), b.get("rouge_l_each", []))
        (won if d["significant"] and d["diff"] > 0 else lost if d["significant"] else []).append(name)
        cmp.append(f"{name} {b['rouge_l']:.3f} (difference {d['diff']:+.3f}, 95% CI "
                   f"{d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})")
    parts.append(f"ROUGE-L fine-tuned {g['rouge_l']:.3f} vs {'; '.join(cmp)}; stop rate {g['stop_rate']:.0%} "
                 f"(base {rivals['zero-shot base model']['stop_rate']:.0%})")
    if g["n"] == 0:
        head = "no generations compared (--eval-generations 0); held-out loss only"
    elif len(won) == len(rivals):
        head = "fine-tuning beat every prompting baseline"
    elif lost:
        head = f"fine-tuning did NOT beat the {' and '.join(lost)}; prefer the prompt, or add data"
    elif won:
        head = f"fine-tuning beat the {' and '.join(won)}; against the rest the difference is within noise"
    else:
        head = (f"no measurable difference from prompting the base model on {g['n']} generations "
                f"(raise --eval-generations); held-out loss is the firmer signal")
    if "retention" in after:
        parts.append(f"retention perplexity {before['retention']['perplexity']:.1f} → "
                     f"{after['retention']['perplexity']:.1f}")
    return f"verdict: {head}. " + "; ".join(parts) + "."


def train_sft(recipe, resume=False, overwrite=False, on_event=None, stop=None, inputs=()) -> Run:
    on_event = on_event or (lambda *a, **k: None)
    t_start = time.perf_counter()
    recipe = recipe.model_copy(update={k: v for k, v in SFT_DEFAULTS.items()
                                       if k not in recipe.model_fields_set or getattr(recipe, k) is None})
    out = Path(recipe.out) if recipe.out else default_out(recipe.train)
    check_out(out, overwrite, resume, inputs)  # before the data's and the model's slow work
    if resume:
        recipe = check_resume(out, recipe)  # data and training settings: before anything of the run is rewritten
        if is_finished(out):
            _say(on_event, f"{out}: the run is already finished, nothing to resume (--overwrite trains it again)")
            return open_run(out)
    convs, fmt, skipped = load_conversations(recipe.train, recipe.prompt_column, recipe.response_column)
    _say(on_event, f"instruction format: {fmt} ({len(convs)} rows of {recipe.train})")
    for why, n in skipped.items():
        if n:
            _say(on_event, f"skipped {n} rows of {recipe.train}: {why.replace('_', ' ')}")
    if recipe.test:
        test_convs, _, _ = load_conversations(recipe.test, recipe.prompt_column, recipe.response_column)
        train_convs = convs
    else:
        train_convs, test_convs = split(convs, recipe.test_fraction, recipe.seed)
    val_convs = []
    if recipe.val_fraction > 0:
        train_convs, val_convs = split(train_convs, recipe.val_fraction, recipe.seed + 1)

    torch.manual_seed(recipe.seed)  # weights the checkpoint lacks are initialised at load: seeded
    model, tok, model_path = load_causal_lm(recipe.model)
    from tunesmith.models.load import resolve_max_length

    recipe = recipe.model_copy(update={"max_length": resolve_max_length(
        recipe.max_length, model.config, tok, recipe.model, default=DEFAULT_MAX_LENGTH)})
    train, train_convs, c_train = _encode_split(tok, train_convs, recipe, "train", on_event)
    val = _encode_split(tok, val_convs, recipe, "validation", on_event)[0] if val_convs else None
    test, test_convs, c_test = _encode_split(tok, test_convs, recipe, "test", on_event)
    if recipe.packing:
        train = pack(train, recipe.max_length)
        _say(on_event, f"packing: {len(train)} examples into {len(train.units)} rows of ≤{recipe.max_length} tokens")

    recipe = recipe.model_copy(update={"out": str(out), "task": "sft"})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = use_bf16(recipe.bf16, device)
    prepare_out(out, overwrite, resume, inputs)
    from tunesmith.run import fingerprints

    provenance = {"versions": versions(), "data": fingerprints(recipe), "model_path": model_path,
                  "device": device.type, "bf16": bf16, "format": fmt,
                  "rows": {"train": len(train), "validation": len(val) if val else 0, "test": len(test)}}
    write_recipe(out, recipe, provenance)
    _say(on_event, f"{len(train)} train / {len(val) if val else 0} validation / {len(test)} test rows, "
                   f"model {recipe.model}, strategy {recipe.strategy}, {'bf16' if bf16 else 'fp32'} on {device.type}")
    model.to(device)

    retention = None
    if recipe.retention_data:
        retention, cut = sft_eval.text_data(tok, sft_eval.read_texts(recipe.retention_data), recipe.max_length)
        if cut:
            _say(on_event, f"retention: {cut} texts cut to --max-length {recipe.max_length} tokens")
    ckpt = artifact(out, "checkpoint")
    ckpt.mkdir(exist_ok=True)
    before_file = ckpt / "before.json"
    if resume and before_file.exists():
        before = json.loads(before_file.read_text())
    else:
        _say(on_event, "evaluating the base model: held-out loss, zero-shot and retrieval few-shot generations")
        few_shot, shots = None, 0.0
        if recipe.baselines and recipe.few_shot_k > 0:
            few_shot, shots = sft_eval.few_shot_prompts(tok, train_convs, test_convs[:recipe.eval_generations],
                                                        recipe.few_shot_k, recipe.max_length)
        before = evaluate_model(model, tok, recipe, test, test_convs, device, bf16, retention, few_shot)
        if "few_shot" in before:
            before["few_shot"].update(k=recipe.few_shot_k, mean_shots_used=shots)
        write_json(before_file, before)

    torch.manual_seed(recipe.seed)  # LoRA's initial weights: the same seed gives the same run
    model = apply_strategy(model, recipe)
    result = fit_sft(model, train, val, recipe, pad_id=tok.pad_token_id, device=device, bf16=bf16,
                     ckpt_dir=ckpt, resume=resume, on_event=on_event, stop=stop)
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    if hasattr(model, "merge_and_unload"):  # the adapter first: merging unloads the LoRA layers
        save_model(model, tok, artifact(out, "adapter"))
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    save_model(merged, tok, artifact(out, "model"))  # a temporary folder renamed into place: whole or absent

    _say(on_event, "evaluating the tuned model")
    after = evaluate_model(merged, tok, recipe, test, test_convs, device, bf16, retention)
    gen_convs = test_convs[:recipe.eval_generations]
    samples = [{"row": c.row, "prompt": c.prompt[-1]["content"], "reference": c.response,
                "before": before["texts"][i], "after": after["texts"][i],
                **({"few_shot": before["few_shot_texts"][i]} if "few_shot_texts" in before else {})}
               for i, c in enumerate(gen_convs)]
    strip = lambda d: {k: v for k, v in d.items() if k not in ("texts", "few_shot", "few_shot_texts")}
    baselines = {"zero_shot": before["generation"]}
    if "few_shot" in before:
        baselines["few_shot_retrieval"] = before["few_shot"]
    metrics = {"task": "sft", "format": fmt, "before": strip(before), "after": strip(after),
               "test": {"loss": after["loss"], "perplexity": after["perplexity"], **after["generation"]},
               "baselines": baselines, "samples": samples,
               "data": {"train": c_train, "test": c_test, "skipped": skipped, "packed_rows": len(train.units)},
               "history": result.history, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
               "train_seconds": round(result.train_seconds, 3),
               "train_samples_per_second": round(result.train_samples / max(result.train_seconds, 1e-9), 2),
               "train_tokens_per_second": round(result.train_tokens / max(result.train_seconds, 1e-9), 1),
               "wall_seconds": round(time.perf_counter() - t_start, 3)}
    metrics["verdict"] = verdict(metrics)
    write_json(artifact(out, "metrics.json"), metrics)
    from tunesmith.run import finish
    from tunesmith.report import write_report

    write_report(out)
    finish(out, recipe, on_event)
    on_event("done", out=str(out), test=metrics["test"])
    return Run(out, metrics, recipe.model_dump(mode="json"))


def summary(m: dict, n_samples: int = 2) -> str:
    """What `tunesmith train --task sft` prints at the end."""
    b, a = m["before"], m["after"]
    lines = [f"held-out response loss {b['loss']:.4f} → {a['loss']:.4f}, perplexity {b['perplexity']:.2f} → "
             f"{a['perplexity']:.2f}",
             f"stop rate {b['generation']['stop_rate']:.0%} → {a['generation']['stop_rate']:.0%}, ROUGE-L "
             f"{b['generation']['rouge_l']:.3f} → {a['generation']['rouge_l']:.3f}"]
    for s in m.get("samples", [])[:n_samples]:
        lines += [f"--- prompt (row {s['row']}): {s['prompt'][:200]}", f"  before: {s['before'][:200]}",
                  f"  after:  {s['after'][:200]}"]
    if m.get("verdict"):
        lines.append(m["verdict"])
    return "\n".join(lines)


class Generator:
    """A finished SFT run, loaded once, answering prompts or a running conversation."""

    def __init__(self, run_path):
        from transformers import AutoModelForCausalLM

        from tunesmith.models.load import load_tokenizer

        self.run = open_run(run_path)
        if self.run.recipe.get("task") != "sft":
            raise TunesmithError(f"{run_path}: not an instruction-tuning run (task "
                                 f"{self.run.recipe.get('task')}); use `tunesmith predict` for classifiers")
        self.tok = load_tokenizer(str(self.run.model_dir))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(self.run.model_dir).to(self.device).eval()
        self.bf16 = use_bf16(self.run.recipe.get("bf16", "auto"), self.device)
        self.max_length = self.run.recipe.get("max_length") or 512

    def reply(self, turns: list[dict], max_new_tokens: int | None = None) -> dict:
        ids = render_prompt(self.tok, turns)[-self.max_length:]
        n = max_new_tokens or self.run.recipe.get("max_new_tokens") or 128
        return sft_eval.generate(self.model, self.tok, [ids], n, self.bf16, self.device)[0]
