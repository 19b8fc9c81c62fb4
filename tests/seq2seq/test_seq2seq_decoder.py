"""Decoder-only models on pairs (--task seq2seq --prompt-template): a tiny random Llama trained through SFT's
model, loss and generation, measured, reported and predicted as the seq2seq task does, with the template
applied alike in training, `predict`, `generate`, serve and a plain transformers `generate()`."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

import tunesmith
from tunesmith.config import make_recipe
from tunesmith.pipeline import choose_task
from tunesmith.predictor import Predictor
from tunesmith.serve.app import Limits, create_app
from tunesmith.tasks.seq2seq.decoder import prompt_ids
from tunesmith.tasks.seq2seq.task import Seq2Seq

from conftest import one_line_error, run_cli
from s2s_runs import toy_pairs, write_pairs

TEMPLATE = "Translate: {source}"


@pytest.fixture(scope="module")
def dec_run(tiny_models, tmp_path_factory):
    """64 toy pairs, full fine-tuning (LoRA on a random width-32 model barely moves in a test's few steps)."""
    root = tmp_path_factory.mktemp("s2s_dec")
    data = write_pairs(root / "pairs.csv", toy_pairs(64))
    return tunesmith.train(str(data), task="seq2seq", model=str(tiny_models["llama"]), prompt_template=TEMPLATE,
                           strategy="full", epochs=4, lr=1e-2, batch_size=8, max_length=48, max_new_tokens=6,
                           few_shot_k=2, seed=0, bf16="off", audit=False, out=str(root / "run"))


def test_decoder_trains_and_is_measured_against_every_baseline(dec_run):
    m, r = dec_run.metrics, dec_run.recipe
    assert r["prompt_template"] == TEMPLATE and r["num_beams"] == 1
    t = m["test"]
    for k in ("chrf", "bleu", "rouge_l", "exact_match"):
        assert t["ci95"][k][0] <= t[k] <= t["ci95"][k][1]
        for b in ("copy_source", "zero_shot", "few_shot_retrieval"):
            assert set(m["comparison"][b][k]) >= {"diff", "ci95", "significant"}
    assert set(m["baselines"]) == {"copy_source", "zero_shot", "few_shot_retrieval"}
    assert m["baselines"]["few_shot_retrieval"]["k"] == 2
    assert t["chrf"] > m["baselines"]["zero_shot"]["chrf"] + 10
    assert t["loss"] < m["baselines"]["zero_shot"]["loss"] - 3  # response-token loss, SFT's
    h = m["history"]
    assert len(h) == 4 and h[-1]["train_loss"] < h[0]["train_loss"] - 3
    assert m["generation"] == {"max_new_tokens": 6, "num_beams": 1, "length_penalty": 1.0, "prompt_template": TEMPLATE}
    assert "retrieval few-shot prompting" in m["verdict"]
    s = m["samples"]
    assert len(s) == t["n"] and all(x["before"] is not None and x["after"] for x in s)
    page = (dec_run.path / "report.html").read_text()
    assert "retrieval few-shot" in page and "greedy" in page and "Translate: {source}" in page
    card = (dec_run.path / "MODEL_CARD.md").read_text()
    assert "pipeline_tag: text-generation" in card and "A decoder fine-tuned" in card


def test_the_template_is_in_the_encoded_prompt(dec_run):
    p = Predictor.load(dec_run.path)
    assert p.task.template == TEMPLATE and p.info()["prompt_template"] == TEMPLATE
    ids, cut = p.encode(["ich sehe hund"])
    text = p.tok.decode(ids[0])
    # the tiny tokenizer has no chat template: SFT's plain headers frame the filled template, after BOS
    assert ids[0][0] == p.tok.bos_token_id and not cut[0]
    assert text.endswith("# # # instruction : translate : ich sehe hund # # # response :")  # WordPiece, uncased
    assert ids == prompt_ids(p.tok, TEMPLATE, ["ich sehe hund"], 48)[0]
    # a tokenizer with a chat template renders through it, as --task sft does
    p.tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    assert p.tok.decode(prompt_ids(p.tok, "de: {source} → en:", ["brot"], 48)[0][0]) == \
        "< user > de : brot → en : < assistant >"


def test_predict_generate_serve_answer_as_the_run_did(dec_run, tmp_path, capsys, monkeypatch):
    samples = dec_run.metrics["samples"]
    f = write_pairs(tmp_path / "test.csv", [{"source": s["source"], "target": s["reference"]} for s in samples])
    frame = tunesmith.predict(dec_run.path, str(f))
    assert frame["output"].tolist() == [s["after"] for s in samples]
    code, _, _ = run_cli(["predict", dec_run.path, f, "--out", tmp_path / "out.csv"], capsys, monkeypatch)
    import pandas as pd

    assert code in (0, None) and pd.read_csv(tmp_path / "out.csv")["output"].tolist() == [s["after"] for s in samples]
    code, out, _ = run_cli(["generate", dec_run.path, "--prompt", samples[0]["source"]], capsys, monkeypatch)
    assert code in (0, None) and out.strip().split(" [")[0] == samples[0]["after"]
    with TestClient(create_app(dec_run.path, Limits(max_new_tokens=16)), base_url="http://localhost") as c:
        a = c.post("/generate", json={"prompts": [samples[1]["source"]]})
        assert a.status_code == 200, a.text
        assert a.json()["generations"][0]["text"] == samples[1]["after"]
        assert c.post("/generate", json={"prompts": ["x"], "num_beams": 2}).status_code == 422
        assert c.get("/info").json()["prompt_template"] == TEMPLATE
    m = Predictor.load(dec_run.path).evaluate(str(f))
    assert m["chrf"] == pytest.approx(dec_run.metrics["test"]["chrf"]) and m["n"] == len(samples)


def test_model_folder_answers_plain_transformers(dec_run):
    """No chat template on the tiny tokenizer: the prompt is the rendered text (BOS, SFT's headers); a plain
    text-generation pipeline and a bare generate() continue it as tunesmith does (generation_config: greedy,
    the run's token limit)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, pipeline

    folder = dec_run.path / "model"
    assert GenerationConfig.from_pretrained(folder).max_new_tokens == 6
    assert json.loads((folder / "tunesmith.json").read_text())["prompt_template"] == TEMPLATE
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    p = Predictor.load(dec_run.path)
    for s in dec_run.metrics["samples"][:4]:
        text = f"{tok.bos_token}### Instruction:\nTranslate: {s['source']}\n\n### Response:\n"
        x = tok(text, add_special_tokens=False, return_tensors="pt", return_token_type_ids=False)
        assert x["input_ids"][0].tolist() == p.encode([s["source"]])[0][0]
        with torch.no_grad():
            out = model.generate(**x)
        assert tok.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=True).strip() == s["after"]
        gen = pipeline("text-generation", model=str(folder))
        got = gen(text, add_special_tokens=False, return_full_text=False)[0]["generated_text"]
        assert got.strip() == s["after"]


def test_decoder_defaults_are_sfts(tiny_models, tmp_path):
    data = write_pairs(tmp_path / "p.csv", toy_pairs(8))
    _, recipe = choose_task(make_recipe(train=str(data), task="seq2seq", model=str(tiny_models["llama"])),
                            lambda *a, **k: None)
    r = Seq2Seq([]).resolve(recipe, None)
    assert (r.strategy, r.lr, r.prompt_template, r.num_beams) == ("lora", 2e-4, "{source}", 1)


@pytest.mark.parametrize("args, says", [
    (["--model", "llama", "--prompt-template", "Translate to English:"], "has no {source}"),
    (["--model", "llama", "--num-beams", "4"], "generates greedily"),
    (["--model", "llama", "--strategy", "head"], "takes lora, freeze:K or full"),
    (["--model", "bert", "--prompt-template", "x {source}"], "encoder-decoder"),
])
def test_refusals_are_one_line(tiny_models, tmp_path, capsys, monkeypatch, args, says):
    data = write_pairs(tmp_path / "p.csv", toy_pairs(20))
    args = [str(tiny_models[a]) if a in tiny_models else a for a in args]
    code, _, err = run_cli(["train", data, "--task", "seq2seq", *args, "--out", tmp_path / "r"], capsys, monkeypatch)
    assert says in one_line_error(code, err)
    assert not (tmp_path / "r" / "model").exists()
