"""Instruction tuning's pipeline hooks (tasks/base.py): conversations in, a decoder that answers out,
measured against simply prompting the base model (zero-shot and retrieval few-shot).

The "baselines" of this task are the base model's own held-out evaluation (response loss, generations,
retention), kept in checkpoint/baselines.json so a resumed run does not generate them again."""
from __future__ import annotations

import torch

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import Prepared, Task, say
from tunesmith.tasks.sft import evaluate as sft_eval
from tunesmith.tasks.sft.data import instruction_format, load_conversations, pack, split
from tunesmith.tasks.sft.inference import GeneratorInference


class InstructionTuning(GeneratorInference, Task):
    name = "sft"
    peft_task_type = "CAUSAL_LM"
    loads_4bit = True  # --strategy qlora: run.load_causal_lm
    main_metric = "loss"
    detect_priority = 10
    serve_route = "/generate"
    # Classification defaults (an encoder, full fine-tuning, batch 32, 128 tokens) do not suit decoders.
    recipe_defaults = {"model": "smollm2", "strategy": "lora", "batch_size": 8, "lr": 2e-4, "epochs": 3,
                       "metric": "loss"}
    default_max_length = 512  # or the model's limit when lower

    @classmethod
    def detect(cls, recipe) -> str | None:
        if recipe.label_column is not None or recipe.text_column is not None:
            return None
        fmt = instruction_format(recipe.train, recipe.prompt_column, recipe.response_column)
        # instruction/response columns, not text/label: a decoder learns to answer
        return f"task: sft ({fmt} format detected from the columns; --task to choose another)" if fmt else None

    @classmethod
    def prepare(cls, recipe, on_event, with_test: bool = True) -> Prepared:
        convs, fmt, skipped = load_conversations(recipe.train, recipe.prompt_column, recipe.response_column)
        say(on_event, f"instruction format: {fmt} ({len(convs)} rows of {recipe.train})")
        for why, n in skipped.items():
            if n:
                say(on_event, f"skipped {n} rows of {recipe.train}: {why.replace('_', ' ')}")
        if recipe.test and not with_test:
            train_convs, test_convs = convs, None
        elif recipe.test:
            test_convs, _, _ = load_conversations(recipe.test, recipe.prompt_column, recipe.response_column)
            train_convs = convs
        else:
            train_convs, test_convs = split(convs, recipe.test_fraction, recipe.seed)
        val_convs = []
        if recipe.val_fraction > 0:
            train_convs, val_convs = split(train_convs, recipe.val_fraction, recipe.seed + 1)
        return Prepared(train_convs, val_convs or None, test_convs, task=cls.name,
                        info={"format": fmt, "skipped": skipped})

    @classmethod
    def from_data(cls, data: Prepared) -> "InstructionTuning":
        return cls([])

    def resolve(self, recipe, data):
        self.check_strategy(recipe)  # before the model loads and the base model is evaluated
        return recipe

    def load_model(self, recipe):
        from tunesmith.tasks.sft.run import load_causal_lm

        torch.manual_seed(recipe.seed)  # weights the checkpoint lacks are initialised at load: seeded
        return load_causal_lm(recipe.model, recipe.strategy)

    def encode(self, tok, data: Prepared, recipe, on_event, memo=None, model_path=None) -> dict:
        from tunesmith.tasks.sft.run import encode_split

        train, self.train_convs, c_train = encode_split(tok, data.train, recipe, "train", on_event)
        val = encode_split(tok, data.validation, recipe, "validation", on_event)[0] if data.validation else None
        test = c_test = None
        self.test_convs = []
        if data.test is not None:
            test, self.test_convs, c_test = encode_split(tok, data.test, recipe, "test", on_event)
        if recipe.packing:
            train = pack(train, recipe.max_length)
            say(on_event, f"packing: {len(train)} examples into {len(train.units)} rows of ≤{recipe.max_length} "
                           f"tokens")
        self.counts = {"train": c_train, "test": c_test}
        return {"train": train, "validation": val, "test": test}

    def _retention(self, tok, recipe, on_event):
        if not hasattr(self, "retention"):
            self.retention = None
            if recipe.retention_data:
                self.retention, cut = sft_eval.text_data(tok, sft_eval.read_texts(recipe.retention_data),
                                                         recipe.max_length)
                if cut:
                    say(on_event, f"retention: {cut} texts cut to --max-length {recipe.max_length} tokens")
        return self.retention

    def baselines(self, model, tok, enc, data: Prepared, recipe, device, bf16, on_event) -> dict:
        from tunesmith.tasks.sft.run import evaluate_model

        retention = self._retention(tok, recipe, on_event)
        if enc["test"] is None:
            return {}
        say(on_event, "evaluating the base model: held-out loss, zero-shot and retrieval few-shot generations")
        few_shot, shots = None, 0.0
        if recipe.baselines and recipe.few_shot_k > 0:
            few_shot, shots = sft_eval.few_shot_prompts(tok, self.train_convs, self.test_convs[:recipe.eval_generations],
                                                        recipe.few_shot_k, recipe.max_length)
        before = evaluate_model(model, tok, recipe, enc["test"], self.test_convs, device, bf16, retention, few_shot)
        if "few_shot" in before:
            before["few_shot"].update(k=recipe.few_shot_k, mean_shots_used=shots)
        return {"before": before}

    def read_baselines(self, ckpt_dir) -> dict | None:
        """Also a run interrupted before baselines.json existed: its base-model evaluation was before.json."""
        import json
        from pathlib import Path

        kept = super().read_baselines(ckpt_dir)
        old = Path(ckpt_dir) / "before.json"
        if kept is None and old.exists():
            try:
                kept = {"before": json.loads(old.read_text())}
                self.check_baselines(kept)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise TunesmithError(f"{old}: unreadable ({type(e).__name__}); delete it and resume again to "
                                     f"evaluate the base model anew") from None
        return kept

    def check_baselines(self, doc) -> None:
        if not isinstance(doc["before"], dict) or not isinstance(doc["before"]["texts"], list):
            raise TypeError("before must hold the base model's evaluation")

    def apply_strategy(self, model, recipe):
        from tunesmith.tasks.sft.run import apply_strategy

        torch.manual_seed(recipe.seed)  # LoRA's initial weights: the same seed gives the same run
        return apply_strategy(model, recipe)

    def steps(self, model, tok, enc, recipe, device, bf16):
        from tunesmith.tasks.sft.steps import SFTSteps

        return SFTSteps(enc["train"], enc["validation"], recipe, tok.pad_token_id, bf16, device)

    def fit(self, model, tok, enc, recipe, **kw):
        result = super().fit(model, tok, enc, recipe, **kw)
        if recipe.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        return result

    def measure(self, metrics: dict, model, tok, enc, data: Prepared, recipe, baselines: dict, device, bf16,
                on_event) -> dict:
        from tunesmith.tasks.sft.run import evaluate_model, verdict

        if enc["test"] is None:
            return {}
        retention = self._retention(tok, recipe, lambda *a, **k: None)
        before = baselines["before"]
        metrics["format"] = data.info["format"]
        say(on_event, "evaluating the tuned model")
        after = evaluate_model(model, tok, recipe, enc["test"], self.test_convs, device, bf16, retention)
        gen_convs = self.test_convs[:recipe.eval_generations]
        samples = [{"row": c.row, "prompt": c.prompt[-1]["content"], "reference": c.response,
                    "before": before["texts"][i], "after": after["texts"][i],
                    **({"few_shot": before["few_shot_texts"][i]} if "few_shot_texts" in before else {})}
                   for i, c in enumerate(gen_convs)]
        strip = lambda d: {k: v for k, v in d.items() if k not in ("texts", "few_shot", "few_shot_texts")}
        rivals = {"zero_shot": before["generation"]}
        if "few_shot" in before:
            rivals["few_shot_retrieval"] = before["few_shot"]
        metrics.update({"before": strip(before), "after": strip(after),
                        "test": {"loss": after["loss"], "perplexity": after["perplexity"], **after["generation"]},
                        "baselines": rivals, "samples": samples,
                        "data": {**self.counts, "skipped": data.info["skipped"], "packed_rows": len(enc["train"].units)}})
        metrics["verdict"] = verdict(metrics)
        return {}

    def summary(self, metrics: dict) -> str:
        from tunesmith.tasks.sft.run import summary

        return summary(metrics)

    def report(self, name: str, metrics: dict, recipe_doc: dict, audit) -> tuple[str, str]:
        from tunesmith.tasks.sft import report

        return report.render_html(name, metrics, recipe_doc), report.render_card(name, metrics, recipe_doc)

    def check_strategy(self, recipe) -> None:
        if recipe.strategy == "head":
            raise TunesmithError("--strategy head trains a classifier head; --task sft takes lora, freeze:K or full")
