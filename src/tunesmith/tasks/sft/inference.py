"""Instruction tuning's inference hooks (the Predictor's, tasks/base.py): a causal LM answering prompts
(or a running conversation) by greedy generation, as the run's own evaluation generated them."""
from __future__ import annotations

import functools

from tunesmith.errors import TunesmithError

PROMPT_COLUMNS = ("prompt", "instruction", "text")  # a file's prompts when --text-column names none


class GeneratorInference:
    kind = "generator"
    public_settings = ("max_new_tokens",)
    public_metrics = ("after",)
    # Prompts per generate() call, below the Predictor's batch: each row holds a KV cache growing with every
    # new token, and 8 is what the run's own evaluation batched (tasks/sft/evaluate.generate).
    generation_batch_size = 8

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load_inference_model(cls, model_dir):
        from transformers import AutoModelForCausalLM

        from tunesmith.models.load import load_tokenizer

        return AutoModelForCausalLM.from_pretrained(model_dir), load_tokenizer(str(model_dir))

    @classmethod
    def from_run(cls, run, model_config):
        return cls([])

    def options(self, settings: dict) -> dict:
        """The forward's settings a caller may leave out: the run's generation limit."""
        return {"max_new_tokens": int(settings["max_new_tokens"])}

    # ---- inputs ----------------------------------------------------------------------------------------------
    def read_inputs(self, data, text_column: str | None = None):
        """(frame the answers are added to, prompts) of a data file, or of a list of prompts."""
        import pandas as pd

        if isinstance(data, (list, tuple)):
            return pd.DataFrame({"prompt": list(data)}), [str(p) for p in data]
        from tunesmith.data.io import read_table

        frame = read_table(data)
        cols = {str(c).lower(): c for c in frame.columns}
        col = text_column or next((cols[c] for c in PROMPT_COLUMNS if c in cols), None)
        if col not in frame.columns:
            raise TunesmithError(f"{data}: no column {col or ' or '.join(PROMPT_COLUMNS)} with the prompts; columns "
                                 f"are {', '.join(map(str, frame.columns))} (--text-column names it)")
        return frame, ["" if pd.isna(v) else str(v) for v in frame[col]]

    def read_labelled(self, data, text_column=None, label_column=None, known=None):
        raise TunesmithError("an instruction-tuning run is measured when it trains (held-out response loss and "
                             "generations before and after, in metrics.json); `evaluate` scores classifiers")

    def encode_inputs(self, tok, items: list, max_length: int,
                      with_cut: bool = True) -> tuple[list[list[int]], list[bool]]:
        """Prompt ids (a prompt text is one user turn; a list of turns is a conversation), keeping the last
        max_length tokens, and which prompts were cut (known for free here, with_cut or not)."""
        from tunesmith.tasks.sft.data import render_prompt

        full = [render_prompt(tok, [{"role": "user", "content": x}] if isinstance(x, str) else list(x))
                for x in items]
        return [x[-max_length:] for x in full], [len(x) > max_length for x in full]

    # ---- forward and records -------------------------------------------------------------------------------------
    def outputs(self, model, tok, ids, batch_size: int, bf16: bool, device, *, max_new_tokens: int) -> list[dict]:
        """Greedy continuations: text, tokens, stopped (EOS before the limit)."""
        from tunesmith.tasks.sft import evaluate as sft_eval

        return sft_eval.generate(model, tok, ids, max_new_tokens, bf16, device,
                                 batch_size=min(batch_size, self.generation_batch_size))

    def records(self, outputs, temperature: float = 1.0) -> list[dict]:
        return [dict(g) for g in outputs]  # greedy: no temperature

    def columns(self, records: list[dict]) -> dict:
        return {"response": [r["text"] for r in records]}

    # ---- serving: POST /generate {prompts, max_new_tokens} → {generations} (tasks/base.py, serve/app.py) -----------
    @classmethod
    def serve_request(cls, limits):
        from typing import Annotated

        from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

        Texts = Annotated[list[StrictStr], Field(min_length=1, max_length=limits.max_texts)]

        class GenerateRequest(BaseModel):
            model_config = ConfigDict(extra="forbid")
            prompts: Texts
            max_new_tokens: StrictInt | None = Field(None, ge=1, le=limits.max_new_tokens)

        return GenerateRequest

    @classmethod
    def serve_response(cls):
        return _generate_response()

    def serve_inputs(self, req, limits, settings: dict) -> tuple[list[str], dict]:
        """The prompts (each one user turn) and their generation limit: the request's, else the run's within
        the server's."""
        n = req.max_new_tokens or min(int(settings["max_new_tokens"]), limits.max_new_tokens)
        return list(req.prompts), {"max_new_tokens": n}

    def serve_body(self, records: list[dict]) -> dict:
        return {"generations": records}


@functools.cache
def _generate_response():
    """/generate's answer model, made once (pydantic imported only when serving)."""
    from pydantic import BaseModel

    class Generation(BaseModel):
        text: str
        tokens: int
        stopped: bool
        truncated: bool

    class GenerateResponse(BaseModel):
        generations: list[Generation]
        model: str
        seconds: float

    return GenerateResponse
