"""Sequence-to-sequence inference hooks (the Predictor's, tasks/base.py): an encoder-decoder rewriting each
text by beam search with the run's settings (model/tunesmith.json: max_new_tokens, num_beams,
length_penalty), the same search the run's own evaluation ran. `tunesmith generate` and serve's
POST /generate go through it. A decoder-only run (tasks/seq2seq/decoder.py) answers through SFT's greedy
generation from the run's prompt template (model/tunesmith.json: prompt_template, max_new_tokens)."""
from __future__ import annotations

import functools

import torch

from tunesmith.accel.precision import autocast
from tunesmith.data.batching import collate, inference_batches
from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import input_column

INPUT_COLUMNS = ("source", "src", "input", "document", "text", "prompt")  # a file's texts when none is named
SEARCH = ("max_new_tokens", "num_beams", "length_penalty")
MAX_BEAMS = 8  # what a serve request may ask: beams multiply the batch's memory and time


@torch.no_grad()
def generate(model, tok, ids: list[list[int]], *, max_new_tokens: int, num_beams: int, length_penalty: float,
             bf16: bool, device, batch_size: int = 16) -> list[dict]:
    """Per source: text, tokens (generated, EOS excluded), stopped (EOS before the limit). Sources are
    batched by length; the output's first token is the decoder's start and is dropped."""
    model.eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    pad = tok.pad_token_id
    out: list[dict] = [None] * len(ids)
    for idx in inference_batches([len(x) for x in ids], batch_size):
        b = {k: v.to(device) for k, v in collate([ids[i] for i in idx], pad).items()}
        with autocast(bf16, device):
            g = model.generate(**b, max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                               do_sample=False)
        for r, i in enumerate(idx):
            new = g[r, 1:].tolist()
            end = next((k for k, t in enumerate(new) if t in eos), None)
            new = new if end is None else new[:end]
            new = new[:len(new) - next((k for k, t in enumerate(reversed(new)) if t != pad), len(new))]
            out[i] = {"text": tok.decode(new, skip_special_tokens=True).strip(), "tokens": len(new),
                      "stopped": end is not None}
    return out


def source_text(item) -> str:
    """A text, or a conversation's last user turn (`tunesmith generate` sends turns)."""
    if isinstance(item, str):
        return item
    turns = list(item)
    return next((t["content"] for t in reversed(turns) if t.get("role") == "user"), turns[-1]["content"])


class Seq2SeqInference:
    kind = "generator"
    serve_route = "/generate"
    public_settings = SEARCH
    public_metrics = ("test", "baselines")
    template: str | None = None  # a decoder-only run's prompt template (None: an encoder-decoder)

    @classmethod
    def load_inference_model(cls, model_dir):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from tunesmith.models.load import load_tokenizer
        from tunesmith.tasks.seq2seq.model import kind

        auto = AutoModelForCausalLM if kind(AutoConfig.from_pretrained(model_dir)) == "decoder" else AutoModelForSeq2SeqLM
        return auto.from_pretrained(model_dir), load_tokenizer(str(model_dir))

    @classmethod
    def from_run(cls, run, model_config):
        from tunesmith.tasks.seq2seq.model import kind

        task = cls([])
        if kind(model_config) == "decoder":
            from tunesmith.run import inference_settings
            from tunesmith.tasks.seq2seq.decoder import DEFAULT_TEMPLATE

            task.template = inference_settings(run).get("prompt_template") or DEFAULT_TEMPLATE
            task.public_settings = ("max_new_tokens", "prompt_template")
        return task

    def options(self, settings: dict) -> dict:
        """The search a caller may leave out: the run's (a run without them: the recipe's defaults)."""
        from tunesmith.config import Recipe

        keys = ("max_new_tokens",) if self.template is not None else SEARCH  # a decoder: greedy
        return {k: type(Recipe.model_fields[k].default)(settings.get(k, Recipe.model_fields[k].default))
                for k in keys}

    # ---- inputs ----------------------------------------------------------------------------------------------
    def read_inputs(self, data, text_column: str | None = None):
        """(frame the outputs are added to, source texts) of a data file, or of a list of texts."""
        import pandas as pd

        if isinstance(data, (list, tuple)):
            return pd.DataFrame({"source": [source_text(x) for x in data]}), list(data)
        from tunesmith.data.io import read_table

        frame = read_table(data)
        col = input_column(frame, data, text_column, INPUT_COLUMNS)
        return frame, ["" if pd.isna(v) else str(v) for v in frame[col]]

    def read_labelled(self, data, text_column=None, label_column=None, known=None):
        """(sources, targets) of a file of pairs (its columns as training reads them)."""
        from tunesmith.tasks.seq2seq.data import read

        pairs = read(data).pairs
        return pairs.sources, pairs.targets

    def encode_inputs(self, tok, items: list, max_length: int, with_cut: bool = True):
        """Source ids cut to max_length (keeping the closing token), and which sources were cut. A decoder: the
        template's prompt, its last max_length tokens (decoder.prompt_ids, as the run's evaluation built it)."""
        if self.template is not None:
            from tunesmith.tasks.seq2seq.decoder import prompt_ids

            return prompt_ids(tok, self.template, [source_text(x) for x in items], max_length)
        full = tok([source_text(x) for x in items])["input_ids"]
        return [x if len(x) <= max_length else x[:max_length - 1] + x[-1:] for x in full], \
            [len(x) > max_length for x in full]

    # ---- forward and records -------------------------------------------------------------------------------------
    def outputs(self, model, tok, ids, batch_size: int, bf16: bool, device, *, max_new_tokens: int,
                num_beams: int = 1, length_penalty: float = 1.0) -> list[dict]:
        if self.template is not None:
            from tunesmith.tasks.seq2seq.decoder import DECODER_BATCH
            from tunesmith.tasks.sft.evaluate import generate as greedy

            return greedy(model, tok, ids, max_new_tokens, bf16, device, batch_size=min(batch_size, DECODER_BATCH))
        return generate(model, tok, ids, max_new_tokens=max_new_tokens, num_beams=num_beams,
                        length_penalty=length_penalty, bf16=bf16, device=device, batch_size=min(batch_size, 16))

    def records(self, outputs, temperature: float = 1.0) -> list[dict]:
        return [dict(g) for g in outputs]  # beam search: no temperature

    def columns(self, records: list[dict]) -> dict:
        return {"output": [r["text"] for r in records]}

    def score(self, outputs, targets, with_loss: bool = True) -> dict:
        """chrF, BLEU, ROUGE-L, exact match of the outputs against the targets (tasks/seq2seq/metrics.py)."""
        from tunesmith.tasks.seq2seq.metrics import measure

        m, _ = measure([o["text"] for o in outputs], list(targets), with_ci=False)
        return m

    # ---- serving: POST /generate {prompts, max_new_tokens, num_beams} → {generations} ----------------------------
    @classmethod
    def serve_request(cls, limits):
        from typing import Annotated

        from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

        Texts = Annotated[list[StrictStr], Field(min_length=1, max_length=limits.max_texts)]

        class RewriteRequest(BaseModel):
            model_config = ConfigDict(extra="forbid", json_schema_extra={
                "examples": [{"prompts": ["Ich habe Hunger."], "num_beams": 4}]})
            prompts: Texts = Field(description="source texts, each rewritten on its own")
            max_new_tokens: StrictInt | None = Field(None, ge=1, le=limits.max_new_tokens)
            num_beams: StrictInt | None = Field(None, ge=1, le=MAX_BEAMS)

        return RewriteRequest

    @classmethod
    def serve_response(cls):
        return _response()

    def serve_inputs(self, req, limits, settings: dict) -> tuple[list[str], dict]:
        """The texts and their search: the request's, else the run's (its token limit within the server's)."""
        run = self.options(settings)
        if self.template is not None:
            if req.num_beams not in (None, 1):
                from fastapi import HTTPException

                raise HTTPException(422, "num_beams: this run's model is a decoder only; it generates greedily (1)")
            return list(req.prompts), {"max_new_tokens": req.max_new_tokens or min(run["max_new_tokens"],
                                                                                   limits.max_new_tokens)}
        return list(req.prompts), {"max_new_tokens": req.max_new_tokens or min(run["max_new_tokens"],
                                                                               limits.max_new_tokens),
                                   "num_beams": req.num_beams or min(run["num_beams"], MAX_BEAMS),
                                   "length_penalty": run["length_penalty"]}

    def serve_body(self, records: list[dict]) -> dict:
        return {"generations": records}


@functools.cache
def _response():
    """/generate's answer model, made once (pydantic imported only when serving)."""
    from pydantic import BaseModel

    class Rewrite(BaseModel):
        text: str
        tokens: int
        stopped: bool
        truncated: bool

    class RewriteResponse(BaseModel):
        generations: list[Rewrite]
        model: str
        seconds: float

    return RewriteResponse
