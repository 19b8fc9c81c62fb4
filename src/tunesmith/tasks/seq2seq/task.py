"""Sequence to sequence's pipeline hooks (tasks/base.py): pairs of texts in (translation, summarisation,
rewriting), an encoder-decoder that writes the target out, measured by chrF, BLEU, ROUGE-L and exact match
on the test pairs against copying the source and against the untouched model."""
from __future__ import annotations

import numpy as np

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import Prepared, Task, say
from tunesmith.tasks.seq2seq import data as s2s_data
from tunesmith.tasks.seq2seq import decoder as s2s_decoder
from tunesmith.tasks.seq2seq.inference import Seq2SeqInference, generate

OBJECTIVES = ("chrf", "loss")  # what --metric may choose epochs by
SAMPLES, REGRESSIONS = 20, 10  # test pairs shown side by side, and the largest chrF drops marked among them


class Seq2Seq(Seq2SeqInference, Task):
    name = "seq2seq"
    peft_task_type = "SEQ_2_SEQ_LM"
    main_metric = "chrf"
    detect_priority = 35  # after embedding's pairs (source/target is an embedding's only when asked), before
                          # classification's fallback; detect() also yields to a text and a label column
    summary_columns = ("chrf", "bleu", "rouge_l", "exact_match")
    recipe_defaults = {"metric": "chrf", "batch_size": 16}
    row_audit = False     # pairs of texts, not text and label rows
    default_max_length = 128

    # ---- choosing the task and reading the data --------------------------------------------------------------
    @classmethod
    def detect(cls, recipe) -> str | None:
        cols = s2s_data.detect(recipe.train, recipe.text_column, recipe.label_column)
        return (f"task: seq2seq ({cols['source']} → {cols['target']} columns detected; --task to choose another)"
                if cols else None)

    @classmethod
    def prepare(cls, recipe, on_event, with_test: bool = True) -> Prepared:
        loaded = s2s_data.read(recipe.train, recipe.prompt_column, recipe.response_column)
        pairs, cols = loaded.pairs, loaded.columns
        say(on_event, f"{recipe.train}: {len(pairs)} pairs, {cols['source']} → {cols['target']}")
        test = None
        if recipe.test and with_test:
            test = s2s_data.read(recipe.test, recipe.prompt_column or cols["source"],
                                 recipe.response_column or cols["target"]).pairs
        elif not recipe.test:
            pairs, test = s2s_data.split(pairs, recipe.test_fraction, recipe.seed)
        train, val = pairs, None
        if recipe.val_fraction > 0:
            train, val = s2s_data.split(pairs, recipe.val_fraction, recipe.seed + 1)
        return Prepared(train, val, test, task=cls.name, info={"columns": cols},
                        columns={"prompt_column": cols["source"], "response_column": cols["target"]})

    @classmethod
    def from_data(cls, data: Prepared) -> "Seq2Seq":
        return cls([])

    def audit(self, recipe, data: Prepared, on_event):
        from tunesmith.audit import pairs

        cols = data.info["columns"]
        rows = lambda p: pairs.PairRows(p.sources, p.targets, p.rows)  # noqa: E731
        known = [rows(x) for x in (data.train, data.validation) if x is not None]
        return pairs.audit(pairs.PairRows.join(known), rows(data.test) if data.test is not None else None,
                           kind="seq2seq", names={"a": cols["source"], "b": cols["target"]}, recipe=recipe,
                           on_event=on_event)

    def resolve(self, recipe, data: Prepared):
        if recipe.metric not in OBJECTIVES:
            raise TunesmithError(f"--metric {recipe.metric}: --task seq2seq chooses epochs by {' or '.join(OBJECTIVES)}")
        if s2s_decoder.is_decoder(recipe.model):  # a causal LM: SFT's model, loss and generation under a template
            self.recipe = recipe = s2s_decoder.resolve(self, recipe)
            return recipe
        if recipe.prompt_template is not None:
            raise TunesmithError(f"--prompt-template: model '{recipe.model}' is an encoder-decoder (or an encoder to "
                                 f"warm-start); the template frames a decoder-only model's prompt")
        kind = recipe.strategy.split(":")[0]
        if kind not in ("full", "lora"):
            raise TunesmithError(f"--strategy {recipe.strategy}: --task seq2seq takes full or lora (a decoder has no "
                                 f"head alone to train, and freeze:K counts one stack's layers)")
        if recipe.lr is None:
            recipe = recipe.model_copy(update={"lr": 5e-4 if kind == "lora" else 1e-4})
        self.recipe = recipe
        return recipe

    def describe(self) -> str:
        return "text to text, "

    # ---- model -----------------------------------------------------------------------------------------------
    def load_model(self, recipe):
        import torch

        from tunesmith.tasks.seq2seq.model import load, start_id

        if self.template is not None:
            return s2s_decoder.load_model(self, recipe)
        torch.manual_seed(recipe.seed)  # a warm start's cross-attention (and LoRA's matrices) start random
        model, tok, path = load(recipe.model)
        self.start_id, self.eos = start_id(model), _eos(model)
        return model, tok, path

    def encode(self, tok, data: Prepared, recipe, on_event, memo=None, model_path=None) -> dict:
        from tunesmith.tasks.seq2seq.steps import encode

        self.tok = tok  # generations on validation and test decode with it
        if self.template is not None:
            return s2s_decoder.encode(self, tok, data, recipe, on_event)
        out = {}
        for name, pairs in (("train", data.train), ("validation", data.validation), ("test", data.test)):
            out[name] = encode(tok, pairs, recipe.max_length, self.start_id, self.eos) if pairs else None
            if out[name] is not None and any(out[name].cut.values()):
                c = out[name].cut
                say(on_event, f"{name}: {c['sources']} sources and {c['targets']} targets over --max-length "
                               f"{recipe.max_length} tokens, cut to it")
        return out

    def before_fit(self, model, tok, enc, recipe, device, bf16, on_event, memo=None, model_path=None) -> None:
        """The precision line a T5 on a GPU without bf16 gets (model.precision: fp32 there, never fp16)."""
        from tunesmith.tasks.seq2seq.model import precision

        note = precision(model.config.model_type, device.type, bf16)[1]
        if note:
            say(on_event, note)

    def apply_strategy(self, model, recipe):
        from tunesmith.tasks.seq2seq.model import untie

        if self.template is not None:
            return s2s_decoder.apply_strategy(model, recipe)
        if recipe.strategy == "lora":
            untie(model)  # one adapter per stack: merging two into one shared weight would add both
        return super().apply_strategy(model, recipe)

    def steps(self, model, tok, enc, recipe, device, bf16):
        from tunesmith.tasks.seq2seq.steps import Seq2SeqSteps

        if self.template is not None:
            return s2s_decoder.DecoderSteps(self, enc["train"], enc["validation"], recipe, tok.pad_token_id, bf16,
                                            device)
        return Seq2SeqSteps(self, enc["train"], enc["validation"], recipe, tok.pad_token_id, self.start_id, bf16, device)

    def finalize_model(self, merged):
        """Copies of shared weights (safetensors writes no shared tensors), and the run's search in its
        generation_config: plain transformers `generate()` then decodes as tunesmith does, not 20 tokens."""
        from tunesmith.tasks.seq2seq.model import untie

        if self.template is not None:
            return s2s_decoder.finalize(self, merged)
        merged = untie(merged)
        g = merged.generation_config
        g.max_new_tokens, g.num_beams, g.length_penalty = (self.recipe.max_new_tokens, self.recipe.num_beams,
                                                           self.recipe.length_penalty)
        g.max_length = None
        return merged

    def inference_settings(self, metrics: dict, recipe) -> dict:
        if self.template is not None:
            return s2s_decoder.settings(recipe)
        return {"max_new_tokens": recipe.max_new_tokens, "num_beams": recipe.num_beams,
                "length_penalty": recipe.length_penalty}

    # ---- measuring -------------------------------------------------------------------------------------------
    def generations(self, model, enc, recipe, bf16, device, num_beams=None) -> list[str]:
        if self.template is not None:  # greedy, as --task sft generates
            return s2s_decoder.generations(self, model, enc, recipe, bf16, device)
        gens = generate(model, self.tok, enc.src, max_new_tokens=recipe.max_new_tokens,
                        num_beams=num_beams or recipe.num_beams, length_penalty=recipe.length_penalty, bf16=bf16,
                        device=device, batch_size=min(recipe.batch_size * 2, 32))
        model.train()
        return [g["text"] for g in gens]

    def score_split(self, model, enc, recipe, bf16, device, num_beams=None) -> dict:
        from tunesmith.tasks.seq2seq.metrics import measure

        return measure(self.generations(model, enc, recipe, bf16, device, num_beams), enc.pairs.targets,
                       with_ci=False)[0]

    def split_loss(self, model, enc, recipe, bf16, device) -> float | None:
        """Mean teacher-forced loss per target token (a decoder's: per response token, as SFT's)."""
        from tunesmith.tasks.seq2seq.steps import split_loss

        if self.template is not None:
            return s2s_decoder.split_loss(self, model, enc, recipe, bf16, device)
        return split_loss(model, enc, self.tok.pad_token_id, self.start_id, recipe.batch_size * 2, bf16, device)

    def baselines(self, model, tok, enc, data: Prepared, recipe, device, bf16, on_event) -> dict:
        """Before any weight moves: the source copied as the output (what a metric gives for no work: high
        where source and target share words), and the untouched model's own outputs (zero-shot)."""
        if enc["test"] is None:
            return {}
        texts = {"copy_source": list(data.test.sources)}
        loss, few = None, {}
        if recipe.baselines:
            say(on_event, f"generating the untouched model's outputs for {len(enc['test'])} test sources")
            texts["zero_shot"] = self.generations(model, enc["test"], recipe, bf16, device)
            loss = self.split_loss(model, enc["test"], recipe, bf16, device)
            if self.template is not None and recipe.few_shot_k > 0:  # a decoder can also be prompted with examples
                texts["few_shot_retrieval"], few = s2s_decoder.few_shot(self, model, enc, recipe, bf16, device,
                                                                        on_event)
        return {"texts": texts, "loss": loss, **({"few_shot": few} if few else {})}

    def check_baselines(self, doc) -> None:
        if not isinstance(doc["texts"], dict) or not all(isinstance(v, list) for v in doc["texts"].values()):
            raise TypeError("texts must map baseline names to lists")

    def measure(self, metrics: dict, model, tok, enc, data: Prepared, recipe, baselines: dict, device, bf16,
                on_event) -> dict:
        from tunesmith.tasks.seq2seq import metrics as M

        if enc["validation"] is not None:
            metrics["validation"] = {"loss": self.split_loss(model, enc["validation"], recipe, bf16, device)}
        test = enc["test"]
        if test is None:  # a tune trial: validation only
            return {}
        say(on_event, f"generating the tuned model's outputs for {len(test)} test sources")
        refs = list(data.test.targets)
        after = self.generations(model, test, recipe, bf16, device)
        m, st = M.measure(after, refs, seed=recipe.seed)
        m["loss"] = self.split_loss(model, test, recipe, bf16, device)
        metrics["test"] = m
        base, comp, stats = {}, {}, {}
        for name, texts in (baselines.get("texts") or {}).items():
            base[name], stats[name] = M.measure(texts, refs, seed=recipe.seed)
            comp[name] = M.paired(st, stats[name], seed=recipe.seed)
        if baselines.get("loss") is not None:
            base["zero_shot"]["loss"] = baselines["loss"]
        if baselines.get("few_shot"):
            base["few_shot_retrieval"].update(baselines["few_shot"])  # k, and the shots that fit on average
        metrics.update({"baselines": base, "comparison": comp, "signatures": M.signatures(),
                        "generation": self.inference_settings(metrics, recipe),
                        "data": {"pairs": {k: len(v) for k, v in enc.items() if v is not None},
                                 "cut": {k: v.cut for k, v in enc.items() if v is not None},
                                 "columns": data.info["columns"]}})
        before = baselines.get("texts", {}).get("zero_shot")
        metrics["samples"] = samples(data.test, after, before, M.sentence_chrf(st),
                                     M.sentence_chrf(stats["zero_shot"]) if before else None)
        metrics["verdict"] = verdict(metrics)
        return {}

    def summary(self, metrics: dict) -> str:
        from tunesmith.tasks.seq2seq.report import summary

        return summary(metrics)

    def report(self, name: str, metrics: dict, recipe_doc: dict, audit) -> tuple[str, str]:
        from tunesmith.tasks.seq2seq import report

        return report.render_html(name, metrics, recipe_doc, audit), report.render_card(name, metrics, recipe_doc)


def _eos(model) -> int:
    eos = model.generation_config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


def samples(pairs, after: list[str], before: list[str] | None, chrf_after, chrf_before) -> list[dict]:
    """The first SAMPLES test pairs and the REGRESSIONS whose sentence chrF fell most from the untouched
    model's (marked `regression`: 1 = the largest drop), in test order."""
    drop = (chrf_after - chrf_before) if before is not None else np.zeros(len(after))
    worst = [int(i) for i in np.argsort(drop, kind="stable")[:REGRESSIONS] if drop[i] < 0]
    rank = {i: k + 1 for k, i in enumerate(worst)}
    keep = sorted(set(range(min(SAMPLES, len(after)))) | set(worst))
    return [{"row": pairs.rows[i], "source": pairs.sources[i], "reference": pairs.targets[i],
             "before": before[i] if before is not None else None, "after": after[i],
             "chrf_before": round(float(chrf_before[i]), 2) if before is not None else None,
             "chrf_after": round(float(chrf_after[i]), 2), "regression": rank.get(i)} for i in keep]


def verdict(m: dict) -> str:
    t, comp = m["test"], m.get("comparison", {})
    names = {"copy_source": "copying the source", "zero_shot": "the untouched model",
             "few_shot_retrieval": "retrieval few-shot prompting"}
    ci = t.get("ci95", {}).get("chrf")
    parts = [f"chrF {t['chrf']:.1f}" + (f" (95% CI {ci[0]:.1f} to {ci[1]:.1f})" if ci else "")
             + f", BLEU {t['bleu']:.1f}, ROUGE-L {t['rouge_l']:.3f}, exact match {t['exact_match']:.1%} on "
               f"{t['n']} test pairs"]
    won, lost = [], []
    for k, c in comp.items():
        d = c["chrf"]
        lo, hi = d["ci95"]
        (won if lo > 0 else lost if hi < 0 else []).append(names.get(k, k))
        parts.append(f"vs {names.get(k, k)} {d['diff']:+.1f} chrF (CI {lo:+.1f} to {hi:+.1f})")
    if comp and len(won) == len(comp):
        head = "fine-tuning beat every baseline on chrF"
    elif lost:
        head = f"fine-tuning did WORSE than {' and '.join(lost)} on chrF"
    elif won:
        head = f"fine-tuning beat {' and '.join(won)}; against the rest the difference is within noise"
    else:
        head = "no baseline measured" if not comp else "fine-tuning did not beat the baselines by more than the noise"
    return f"{head}: " + "; ".join(parts) + "."
