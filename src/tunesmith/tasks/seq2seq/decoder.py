"""Decoder-only models (causal LMs such as smollm2) on source/target pairs: each source becomes one user turn
through --prompt-template ("{source}" where the source goes), rendered as instruction tuning renders prompts
(the tokenizer's chat template, else SFT's plain "### Instruction:" headers: tasks/sft/data.render_prompt),
and the target is the response to learn. The model, the response-only loss, LoRA by default and greedy
generation are the SFT task's (tasks/sft); the data, metrics, baselines, report and verdict stay the
seq2seq task's (task.py dispatches here when the model is a decoder).

The template is kept in model/tunesmith.json: `predict`, `generate` and `serve` build the same prompt, and
model/ answers a plain `pipeline("text-generation")` given the same user turn (chat template models) or
`AutoModelForCausalLM.generate` on the rendered prompt; its generation_config holds the run's greedy search.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import say
from tunesmith.tasks.seq2seq.data import Pairs
from tunesmith.tasks.sft.steps import SFTSteps, response_loss

SLOT = "{source}"
DEFAULT_TEMPLATE = SLOT  # the chat template (or SFT's headers) already frames the turn; no instruction invented
DECODER_BATCH = 8        # prompts per generate() call: SFT's (tasks/sft/inference.generation_batch_size)


def is_decoder(model_name: str) -> bool:
    """Whether --model is decoder-only (read from its config.json; the weights are not loaded)."""
    from transformers import AutoConfig

    from tunesmith.models.registry import check_hub, resolve
    from tunesmith.tasks.seq2seq.model import kind

    path = resolve(model_name)
    check_hub(path)
    return kind(AutoConfig.from_pretrained(path)) == "decoder"


def check_template(template: str) -> str:
    if SLOT not in template:
        raise TunesmithError(f"--prompt-template {template!r} has no {SLOT}: it must say where each source goes, "
                             f"e.g. \"Translate to English: {SLOT}\"")
    return template


def fill(template: str, source: str) -> str:
    # replace, not str.format: sources and templates may hold other braces (code, JSON)
    return template.replace(SLOT, source)


def prompt_ids(tok, template: str, sources: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """The prompts generation starts from (the last max_length tokens, as SFT's evaluation and Predictor keep),
    and which were cut. One function for the run's evaluation and the Predictor: they cannot drift apart."""
    from tunesmith.tasks.sft.data import render_prompt

    full = [render_prompt(tok, [{"role": "user", "content": fill(template, s)}]) for s in sources]
    return [x[-max_length:] for x in full], [len(x) > max_length for x in full]


@dataclass
class DecoderEncoded:
    """A split of pairs for a decoder: SFT's tokenized examples (prompt masked) for training and the loss, and
    every pair's generation prompt (rows over --max-length are dropped from `sft` only, never from scoring)."""
    pairs: Pairs
    convs: list           # tasks/sft/data.Conversation per pair (the few-shot baseline retrieves among them)
    sft: object           # tasks/sft/data.SFTData of the rows that fit, or None
    prompts: list[list[int]]
    cut: dict

    def __len__(self):
        return len(self.pairs)


def resolve(task, recipe):
    """The recipe for a decoder: the template checked (default "{source}"), SFT's strategy and learning-rate
    defaults (LoRA, 2e-4) where the user gave none, greedy search recorded (num_beams 1)."""
    from tunesmith.tasks.sft.task import InstructionTuning

    template = check_template(recipe.prompt_template if recipe.prompt_template is not None else DEFAULT_TEMPLATE)
    upd = {"prompt_template": template, "num_beams": 1, "length_penalty": 1.0}
    if "num_beams" in recipe.model_fields_set and recipe.num_beams != 1:
        raise TunesmithError(f"--num-beams {recipe.num_beams}: model '{recipe.model}' is a decoder only; it generates "
                             f"greedily as --task sft does (leave --num-beams out, or 1)")
    if "strategy" not in recipe.model_fields_set:
        upd["strategy"] = InstructionTuning.recipe_defaults["strategy"]
    strategy = upd.get("strategy", recipe.strategy)
    if strategy.split(":")[0] not in ("full", "lora", "freeze"):
        raise TunesmithError(f"--strategy {strategy}: a decoder on --task seq2seq takes lora, freeze:K or full")
    if recipe.lr is None:
        upd["lr"] = InstructionTuning.recipe_defaults["lr"]
    task.template = template
    return recipe.model_copy(update=upd)


def load_model(task, recipe):
    from tunesmith.tasks.sft.run import load_causal_lm

    torch.manual_seed(recipe.seed)
    model, tok, path = load_causal_lm(recipe.model, recipe.strategy)
    task.eos = tok.eos_token_id
    return model, tok, path


def conversations(pairs: Pairs, template: str) -> list:
    from tunesmith.tasks.sft.data import Conversation

    return [Conversation([{"role": "user", "content": fill(template, s)}], t, r)
            for s, t, r in zip(pairs.sources, pairs.targets, pairs.rows)]


def encode(task, tok, data, recipe, on_event) -> dict:
    from tunesmith.tasks.sft.data import encode as sft_encode, pack

    out = {}
    for name, pairs in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        if not pairs:
            out[name] = None
            continue
        convs = conversations(pairs, task.template)
        sft, c = sft_encode(tok, convs, recipe.max_length, recipe.overflow, recipe.train_on_prompt)
        if c["over_max_length"]:
            say(on_event, f"{name}: {c['over_max_length']} of {c['rows']} prompt+target rows are longer than "
                           f"--max-length {recipe.max_length} tokens: {c['dropped']} dropped from the loss, "
                           f"{c['truncated']} cut on the prompt side (--overflow {recipe.overflow})")
        if name == "train" and not len(sft):
            raise TunesmithError(f"train: every row is longer than --max-length {recipe.max_length}; raise it")
        prompts, cut = prompt_ids(tok, task.template, pairs.sources, recipe.max_length)
        out[name] = DecoderEncoded(pairs, convs, sft if len(sft) else None, prompts,
                                   {"prompts": sum(cut), "dropped_from_loss": c["dropped"]})
    if recipe.packing:
        out["train"].sft = pack(out["train"].sft, recipe.max_length)
        say(on_event, f"packing: {len(out['train'].sft)} examples into {len(out['train'].sft.units)} rows of "
                       f"≤{recipe.max_length} tokens")
    return out


def apply_strategy(model, recipe):
    from tunesmith.tasks.sft.run import apply_strategy as sft_apply

    torch.manual_seed(recipe.seed)  # LoRA's initial weights
    return sft_apply(model, recipe)


def generations(task, model, enc: DecoderEncoded, recipe, bf16, device, prompts=None) -> list[str]:
    from tunesmith.tasks.sft.evaluate import generate

    gens = generate(model, task.tok, enc.prompts if prompts is None else prompts, recipe.max_new_tokens, bf16, device,
                    batch_size=DECODER_BATCH)
    model.train()
    return [g["text"] for g in gens]


def split_loss(task, model, enc: DecoderEncoded, recipe, bf16, device) -> float | None:
    """Mean loss per target (response) token, SFT's; None when no row of the split fits --max-length."""
    if enc.sft is None:
        return None
    return response_loss(model, enc.sft, task.tok.pad_token_id, recipe.batch_size * 2, bf16, device)["loss"]


def few_shot(task, model, enc: dict, recipe, bf16, device, on_event) -> tuple[list[str], dict]:
    """The untouched model prompted with the k most similar training pairs as earlier turns (SFT's retrieval
    few-shot, tasks/sft/evaluate.few_shot_prompts), fewer where k do not fit --max-length."""
    from tunesmith.tasks.sft.evaluate import few_shot_prompts

    say(on_event, f"generating the untouched model's retrieval {recipe.few_shot_k}-shot outputs")
    prompts, shots = few_shot_prompts(task.tok, enc["train"].convs, enc["test"].convs, recipe.few_shot_k,
                                      recipe.max_length)
    return generations(task, model, enc["test"], recipe, bf16, device, prompts), {"k": recipe.few_shot_k,
                                                                                  "mean_shots_used": shots}


def finalize(task, model):
    """Greedy search and the run's token limit in generation_config: a plain `generate()` decodes as the run."""
    if task.recipe.gradient_checkpointing:  # as SFT's fit: the saved model and the test generations run without
        model.gradient_checkpointing_disable()
    g = model.generation_config
    g.max_new_tokens, g.do_sample, g.num_beams, g.max_length = task.recipe.max_new_tokens, False, 1, None
    g.eos_token_id, g.pad_token_id = task.tok.eos_token_id, task.tok.pad_token_id
    for k in ("temperature", "top_p", "top_k"):  # sampling settings a checkpoint ships are unused by greedy
        setattr(g, k, None)
    return model


def settings(recipe) -> dict:
    return {"max_new_tokens": recipe.max_new_tokens, "num_beams": 1, "length_penalty": 1.0,
            "prompt_template": recipe.prompt_template}


class DecoderSteps(SFTSteps):
    """SFT's steps (packed rows, loss on response tokens only); validation as the seq2seq task's: greedy chrF
    when there are enough pairs for it, else the loss."""

    def __init__(self, task, train: DecoderEncoded, val: DecoderEncoded | None, recipe, pad_id, bf16, device):
        super().__init__(train.sft, val.sft if val is not None else None, recipe, pad_id, bf16, device)
        self.task, self.val_pairs, self.by = task, val, recipe.metric

    def chooses(self, on_event) -> bool:
        from tunesmith.tasks.seq2seq.steps import VAL_CHRF_MIN

        if self.val is None or not len(self.val):
            return False
        if self.by == "chrf" and len(self.val_pairs) < VAL_CHRF_MIN:
            on_event("info", message=f"validation has {len(self.val_pairs)} pairs: too few for chrF to choose an "
                                     f"epoch (needs {VAL_CHRF_MIN}); its loss chooses")
            self.by = "loss"
        return True

    def validate(self, model):
        from tunesmith.tasks.seq2seq.metrics import measure

        record, loss, _ = super().validate(model)
        if self.by == "loss":
            return record, loss, False
        gens = generations(self.task, model, self.val_pairs, self.recipe, self.bf16, self.device)
        chrf = measure(gens, self.val_pairs.pairs.targets, with_ci=False)[0]["chrf"]
        return {"val_chrf": chrf, **record}, chrf, True

