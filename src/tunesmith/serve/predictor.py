"""A run loaded for serving: classifier scores with the run's calibrated temperature (as api.predict)."""
from __future__ import annotations

import numpy as np

from tunesmith.run import open_run


def clean(text: str, max_chars: int) -> tuple[str, bool]:
    # JSON may carry lone surrogates; tokenizers need valid UTF-8.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return (text[:max_chars], True) if len(text) > max_chars else (text, False)


class Classifier:
    kind = "classifier"

    def __init__(self, run):
        from tunesmith.api import _load_for_inference, device_for
        from tunesmith.train.precision import use_bf16

        self.run = run
        self.model, self.tok, self.task = _load_for_inference(run)
        self.device = device_for()
        self.model.to(self.device).eval()
        self.bf16 = use_bf16(run.recipe.get("bf16", "auto"), self.device)
        self.max_length = int(run.recipe.get("max_length") or 128)
        self.temperature = float(run.metrics.get("calibration", {}).get("temperature", 1.0))

    def __call__(self, texts: list[str]) -> list[dict]:
        from tunesmith.evaluate.predict import encode, predict_logits

        ids = encode(self.tok, texts, self.max_length)
        # A text that fills max_length may have been cut: only those are tokenized again in full.
        full = [i for i, x in enumerate(ids) if len(x) >= self.max_length]
        cut = set()
        if full:
            lens = self.tok([texts[i] for i in full], truncation=False)["input_ids"]
            cut = {i for i, x in zip(full, lens) if len(x) > self.max_length}
        logits = predict_logits(self.model, ids, self.tok.pad_token_id, 64, self.bf16, self.device)
        probs = self.task.probabilities(logits, self.temperature)
        decided = self.task.decide(probs)
        out = []
        for i, (p, d) in enumerate(zip(probs, decided)):
            if self.task.name == "multilabel":
                labels = [self.task.labels[j] for j in np.flatnonzero(d)]
                score = float(p[d.astype(bool)].min()) if d.any() else float(1 - p.max())
            else:
                labels, score = [self.task.labels[int(d)]], float(p[int(d)])
            out.append({"label": "|".join(labels), "labels": labels, "score": score,
                        "scores": {l: float(v) for l, v in zip(self.task.labels, p)}, "truncated": i in cut})
        return out

    def info(self) -> dict:
        m = self.run.metrics
        return {"task": self.task.name, "labels": self.task.labels, "max_length": self.max_length,
                "temperature": self.temperature, "metrics": {k: m[k] for k in ("test", "validation") if k in m}}


class Generator:
    """SFT runs (task sft, model/ a causal LM): greedy generation via tunesmith.tasks.sft.Generator."""
    kind = "generator"

    def __init__(self, run):
        from tunesmith.tasks.sft import Generator as SFTGenerator

        self.run = run
        self.gen = SFTGenerator(run.path)
        self.max_length = self.gen.max_length
        self.default_new = int(run.recipe.get("max_new_tokens") or 128)

    def __call__(self, items: list[tuple[str, int]]) -> list[dict]:
        from tunesmith.evaluate import sft_eval
        from tunesmith.tasks.sft_data import render_prompt

        g = self.gen
        prompts = [render_prompt(g.tok, [{"role": "user", "content": p}]) for p, _ in items]
        out = [None] * len(items)
        for n in {n for _, n in items}:  # one generate() call per max_new_tokens value in the batch
            idx = [i for i, (_, m) in enumerate(items) if m == n]
            gens = sft_eval.generate(g.model, g.tok, [prompts[i][-self.max_length:] for i in idx], n, g.bf16, g.device)
            for i, r in zip(idx, gens):
                out[i] = {**r, "truncated": len(prompts[i]) > self.max_length}
        return out

    def info(self) -> dict:
        m = self.run.metrics
        return {"task": "sft", "max_length": self.max_length, "max_new_tokens": self.default_new,
                "metrics": {k: m[k] for k in ("after",) if k in m}}


def load(run_path):
    run = open_run(run_path)
    return (Generator if run.metrics.get("task", run.recipe.get("task")) == "sft" else Classifier)(run)
