"""Instruction tuning's pieces used by its task hooks (task.py): loading a causal LM, its strategies,
the before/after evaluation, the verdict against prompting, and the CLI summary."""
from __future__ import annotations

import torch

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import say
from tunesmith.tasks.sft import evaluate as sft_eval
from tunesmith.evaluate.bootstrap import paired_mean_diff
from tunesmith.tasks.sft.data import encode, render_prompt
from tunesmith.tasks.sft.steps import response_loss


def load_causal_lm(model_name: str, strategy: str = "full"):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.quantize import load_kwargs
    from tunesmith.models.registry import check_hub, resolve

    path = resolve(model_name)
    check_hub(path)
    config = AutoConfig.from_pretrained(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs(strategy))  # fp32, or 4-bit for qlora
    except ValueError as e:
        raise TunesmithError(f"model '{model_name}' ({config.model_type}) is not a decoder that can generate "
                             f"text; --task sft needs a causal LM such as smollm2 ({str(e).splitlines()[0]})") from None
    return model, load_tokenizer(path), path


def apply_strategy(model, recipe):
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if recipe.strategy == "head":
        raise TunesmithError("--strategy head trains a classifier head; --task sft takes lora, freeze:K or full")
    from tunesmith.train import strategies

    return strategies.apply(model, recipe.strategy, recipe, peft_task_type="CAUSAL_LM")


def encode_split(tok, convs, recipe, name, on_event):
    data, c = encode(tok, convs, recipe.max_length, recipe.overflow, recipe.train_on_prompt)
    if c["over_max_length"]:
        say(on_event, f"{name}: {c['over_max_length']} of {c['rows']} rows are longer than --max-length "
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
