"""Seq2seq precision: bf16 where the device has it, fp32 elsewhere, never fp16 (tunesmith has no fp16 path). A
T5-family model on a GPU without bf16, where fp16 would be the usual mixed precision, is told why it stays in
fp32: T5 overflows in fp16. The GPU's capability is faked (the decision is a pure function)."""
from __future__ import annotations

import pytest
import torch

from tunesmith.tasks.seq2seq import model as s2s_model
from tunesmith.tasks.seq2seq.task import Seq2Seq

from s2s_runs import tiny_t5  # noqa: F401  (a fixture)


@pytest.mark.parametrize("config", ["T5Config", "MT5Config", "UMT5Config", "LongT5Config"])
def test_t5_family_names_are_the_configs_model_types(config):
    import transformers

    assert getattr(transformers, config).model_type in s2s_model.T5_FAMILY


def test_decision_with_a_faked_capability():
    p = s2s_model.precision
    kind, note = p("t5", "cuda", bf16=False)  # a GPU without bf16 (V100, T4)
    assert kind == "fp32" and "fp16" in note and "bf16" in note and "\n" not in note
    assert p("mt5", "cuda", bf16=True) == ("bf16", None)   # Ampere or newer: bf16 as for every model
    assert p("t5", "cpu", bf16=False) == ("fp32", None)    # a CPU without AVX512-BF16/AMX: fp32, nothing to say
    assert p("bart", "cuda", bf16=False) == ("fp32", None)  # fp32 too, but BART has no fp16 story to tell


def test_before_fit_tells_a_t5_on_a_gpu_without_bf16(tiny_t5):
    model, tok, _ = s2s_model.load(str(tiny_t5))
    assert model.config.model_type == "t5"
    said = []

    def on_event(kind, **kw):
        said.append((kind, kw.get("message")))

    task = Seq2Seq([])
    task.before_fit(model, tok, {}, None, torch.device("cuda"), False, on_event)  # a device object: no GPU needed
    assert len(said) == 1 and said[0][0] == "info" and "not fp16" in said[0][1]
    said.clear()
    task.before_fit(model, tok, {}, None, torch.device("cuda"), True, on_event)
    task.before_fit(model, tok, {}, None, torch.device("cpu"), False, on_event)
    assert said == []


def test_an_fp16_checkpoint_loads_in_fp32(tiny_t5, tmp_path):
    """transformers 5 loads a checkpoint in its saved dtype by default: an fp16 T5 would train in fp16."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    half = tmp_path / "t5-fp16"
    AutoModelForSeq2SeqLM.from_pretrained(tiny_t5).half().save_pretrained(half)
    AutoTokenizer.from_pretrained(tiny_t5).save_pretrained(half)
    assert AutoModelForSeq2SeqLM.from_pretrained(half).dtype == torch.float16  # the default would keep fp16
    model, _, _ = s2s_model.load(str(half))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_no_fp16_setting_exists():
    """The premise of the above: --bf16 takes auto/on/off and nothing resolves to fp16."""
    from typing import get_args

    from tunesmith.accel.precision import use_bf16
    from tunesmith.config import Recipe

    assert set(get_args(Recipe.model_fields["bf16"].annotation)) == {"auto", "on", "off"}
    assert use_bf16("off", torch.device("cuda")) is False
