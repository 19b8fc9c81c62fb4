"""End to end: train_sft on tiny random decoders; the tuned model stops; run folder loads plainly."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith import api
from tunesmith.errors import TunesmithError
from tunesmith.predictor import Predictor


def _data(tmp_path, n=32):
    rows = [{"instruction": f"say the colour number {i}", "input": "", "output": "red"} for i in range(n)]
    p = tmp_path / "qa.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture(scope="module")
def tuned_run(tiny_models, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sft")
    return api.train(str(_data(tmp_path)), task="sft", model=str(tiny_models["llama"]), strategy="full",
                     epochs=3, lr=1e-2, bf16="off", batch_size=8, max_length=48, warmup_ratio=0.0, patience=0,
                     max_new_tokens=12, eval_generations=6, few_shot_k=2, out=str(tmp_path / "run"))


def test_sft_tuned_model_stops_before_limit(tuned_run):
    run = tuned_run
    m = run.metrics
    assert m["before"]["generation"]["stop_rate"] < 0.5  # a random model rambles to the limit
    assert m["after"]["generation"]["stop_rate"] == 1.0
    assert m["after"]["generation"]["mean_new_tokens"] < 12
    assert m["after"]["loss"] < m["before"]["loss"]
    assert m["after"]["generation"]["exact_match"] == 1.0  # "red" is a short answer
    assert "few_shot_retrieval" in m["baselines"] and m["verdict"].startswith("verdict:")
    assert len(m["samples"]) == 6 and m["data"]["train"]["dropped"] == 0
    r = Predictor.load(run.path).records([[{"role": "user", "content": "say the colour number 99"}]],
                                         max_new_tokens=12)[0]
    assert r["stopped"] and r["text"] == "red"


def test_sft_report_shows_generations_side_by_side(tuned_run):
    page = (tuned_run.path / "report.html").read_text()
    assert "Generations side by side" in page and "say the colour number" in page and "Verdict." in page
    assert page.count("<tr") >= 3 + len(tuned_run.metrics["samples"])  # header, 2+ model rows, one row per prompt
    card = (tuned_run.path / "MODEL_CARD.md").read_text()
    assert "pipeline_tag: text-generation" in card and "| fine-tuned |" in card


def test_sft_generate_and_chat_commands(tuned_run):
    from typer.testing import CliRunner

    from tunesmith.cli import app

    r = CliRunner().invoke(app, ["generate", str(tuned_run.path), "--prompt", "say the colour number 5"])
    assert r.exit_code == 0 and r.stdout.strip() == "red"
    r = CliRunner().invoke(app, ["chat", str(tuned_run.path)], input="say the colour number 1\nagain\n\n")
    assert r.exit_code == 0 and r.stdout.split() == ["red", "red"]


def test_sft_lora_run_folder_loads_with_plain_libraries(tiny_models, tmp_path):
    from peft import PeftModel

    run = api.train(str(_data(tmp_path, 24)), task="sft", model=str(tiny_models["gpt2"]), epochs=1,
                    batch_size=8, max_length=48, eval_generations=2, max_new_tokens=4, few_shot_k=0,
                    packing=True, gradient_checkpointing=True, out=str(tmp_path / "run"))
    assert run.recipe["strategy"] == "lora" and (run.path / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(run.path / "model").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_models["gpt2"])
    peft = PeftModel.from_pretrained(base, run.path / "adapter").eval()
    x = torch.tensor([[101, 2000, 2001, 2002]])
    with torch.no_grad():
        torch.testing.assert_close(peft(x).logits, merged(x).logits, rtol=1e-4, atol=1e-4)
    assert run.metrics["data"]["packed_rows"] < run.metrics["before"]["tokens"]  # packing merged rows
    with pytest.raises(TunesmithError, match="already exists"):
        api.train(str(_data(tmp_path, 24)), task="sft", model=str(tiny_models["gpt2"]), out=str(run.path))


@pytest.mark.slow
def test_sft_smollm2_lora_lowers_heldout_response_loss(shared_data, tmp_path):
    import pandas as pd

    rows = pd.read_json(shared_data / "instructions" / "dolly_3k.jsonl", lines=True)
    short = (rows["context"] == "") & (rows["response"].str.len() < 200)
    rows = rows[short].head(30)  # 24 train rows = 3 steps: a 135M model on 2 shared cores is slow
    p = tmp_path / "dolly.jsonl"
    rows.to_json(p, orient="records", lines=True)
    run = api.train(str(p), task="sft", model="smollm2", epochs=1, batch_size=8, lr=1e-3, max_length=128,
                    val_fraction=0, test_fraction=0.2, eval_generations=0, few_shot_k=0, bf16="off",
                    out=str(tmp_path / "run"))
    m = run.metrics
    assert m["format"] == "dolly" and run.recipe["strategy"] == "lora"
    assert m["after"]["loss"] < m["before"]["loss"]
    assert (run.path / "adapter" / "adapter_model.safetensors").exists()


def test_sft_interrupted_run_resumes_to_identical_losses(tiny_models, tmp_path):
    from conftest import StopAfter

    from tunesmith.train.loop import Interrupted

    data = _data(tmp_path, 40)
    kw = dict(task="sft", model=str(tiny_models["llama"]), strategy="lora", epochs=2, lr=5e-3, bf16="off",
              batch_size=8, max_length=48, patience=0, eval_generations=0, few_shot_k=0, max_new_tokens=4)
    full = api.train(str(data), out=str(tmp_path / "full"), **kw)

    flag = StopAfter(1, 2)  # Ctrl-C during the second epoch's second step
    with pytest.raises(Interrupted):
        api.train(str(data), out=str(tmp_path / "part"), on_event=flag.on_event, stop=flag, **kw)
    assert not (tmp_path / "part" / "metrics.json").exists()
    resumed = api.train(resume=True, out=str(tmp_path / "part"))
    assert [h["train_loss"] for h in resumed.metrics["history"]] == pytest.approx(
        [h["train_loss"] for h in full.metrics["history"]], rel=1e-6)
    assert resumed.metrics["after"]["loss"] == pytest.approx(full.metrics["after"]["loss"], rel=1e-6)


def test_sft_task_detected_from_instruction_columns(tiny_models, tmp_path):
    events = []
    run = api.train(str(_data(tmp_path, 16)), model=str(tiny_models["gpt2"]), epochs=1, batch_size=8, max_length=48,
                    eval_generations=0, few_shot_k=0, bf16="off", out=str(tmp_path / "run"),
                    on_event=lambda kind, **e: events.append(e.get("message", "")))
    assert run.recipe["task"] == "sft" and run.recipe["strategy"] == "lora"
    assert any("task: sft (alpaca format" in m for m in events)


def test_sft_two_processes_match_one(tiny_models, tmp_path, monkeypatch):
    """--nproc 2 (gloo on CPU) through the same loop as classification: the same losses and weights as one
    process on the same global batches. Dropout off in the model: its draws differ per process."""
    import subprocess
    import sys

    from conftest import assert_trained_alike, no_dropout_copy

    model = no_dropout_copy(tiny_models["llama"], tmp_path / "llama", attention_dropout=0, hidden_dropout=0)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    data = _data(tmp_path, 40)
    common = dict(task="sft", model=str(model), strategy="full", epochs=2, lr=1e-3, bf16="off", batch_size=6,
                  max_length=48, seed=3, max_new_tokens=4, eval_generations=2, few_shot_k=0)
    one = api.train(str(data), out=str(tmp_path / "one"), **common)
    args = ["train", str(data), "--task", "sft", "--model", str(model), "--strategy", "full", "--epochs", "2",
            "--lr", "1e-3", "--bf16", "off", "--batch-size", "6", "--max-length", "48", "--seed", "3",
            "--max-new-tokens", "4", "--eval-generations", "2", "--few-shot-k", "0"]
    res = subprocess.run([sys.executable, "-m", "tunesmith.cli", *args, "--nproc", "2", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert len(two["history"]) == len(one.metrics["history"]) == 2
    assert_trained_alike(tmp_path / "one", tmp_path / "two")
