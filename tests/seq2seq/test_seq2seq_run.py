"""Runs end to end: a BERT2BERT warm-started from the tiny BERT (weights tied as Rothe et al. 2020) and a tiny
T5, trained through the shared loop, measured against copying the source and the untouched model, reported,
and answered by the Predictor, `tunesmith generate`, serve and plain transformers alike."""
from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

import tunesmith
from tunesmith.errors import TunesmithError
from tunesmith.predictor import Predictor
from tunesmith.serve.app import Limits, create_app
from tunesmith.tasks.seq2seq import model as s2s_model

from conftest import one_line_error, run_cli
from s2s_runs import s2s_run, tiny_t5, toy_pairs, write_pairs  # noqa: F401  (fixtures)


def test_warm_start_ties_encoder_and_decoder(tiny_models):
    model, tok, _ = s2s_model.load(str(tiny_models["bert"]))
    enc, dec = model.encoder, model.decoder.base_model
    assert dec.encoder.layer[1].attention.self.query.weight is enc.encoder.layer[1].attention.self.query.weight
    assert dec.embeddings.word_embeddings.weight is enc.embeddings.word_embeddings.weight
    assert model.decoder.get_output_embeddings().weight is enc.embeddings.word_embeddings.weight
    cross = dec.encoder.layer[0].crossattention.self.query.weight
    assert all(cross is not p for p in enc.parameters())  # only the cross-attention is the decoder's own
    tied = sum(p.numel() for p in model.parameters())
    assert s2s_model.shared(model.encoder, model.decoder, tie=False) > 30
    assert sum(p.numel() for p in model.parameters()) > 1.8 * tied  # untied for saving: two stacks
    assert (model.config.decoder_start_token_id, model.generation_config.eos_token_id) == (tok.cls_token_id,
                                                                                           tok.sep_token_id)


def test_run_measures_against_both_baselines(s2s_run):
    m = s2s_run.metrics
    t = m["test"]
    assert m["task"] == "seq2seq" and set(m["baselines"]) == {"copy_source", "zero_shot"}
    for k in ("chrf", "bleu", "rouge_l", "exact_match"):
        assert t["ci95"][k][0] <= t[k] <= t["ci95"][k][1]
        assert set(m["comparison"]["zero_shot"][k]) >= {"diff", "ci95", "significant"}
    assert t["chrf"] > m["baselines"]["zero_shot"]["chrf"] + 10 and t["loss"] < m["baselines"]["zero_shot"]["loss"]
    h = m["history"]
    assert len(h) == 4 and h[-1]["train_loss"] < h[0]["train_loss"] and "val_loss" in h[0]
    assert m["generation"] == {"max_new_tokens": 6, "num_beams": 2, "length_penalty": 1.0}
    assert "chrF" in m["verdict"] and "untouched model" in m["verdict"]
    s = m["samples"]
    assert s and {"source", "reference", "before", "after", "chrf_after"} <= set(s[0])
    page = (s2s_run.path / "report.html").read_text()
    assert "side by side" in page and "copy the source" in page and "nc:6|nw:0" in page
    card = (s2s_run.path / "MODEL_CARD.md").read_text()
    assert "AutoModelForSeq2SeqLM" in card


def test_model_folder_loads_and_decodes_with_plain_transformers(s2s_run):
    """transformers 5 removed the "text2text-generation" pipeline; the folder's generation_config carries the
    run's search, so a bare `generate()` decodes exactly as tunesmith does (not 20 tokens, greedy)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    folder = s2s_run.path / "model"
    g = GenerationConfig.from_pretrained(folder)
    assert (g.num_beams, g.max_new_tokens) == (2, 6)
    model, tok = AutoModelForSeq2SeqLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    texts = ["ich sehe hund", "ich sehe brot"]
    out = model.generate(**tok(texts, return_tensors="pt", padding=True, return_token_type_ids=False))
    plain = [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]
    ours = [r["text"] for r in Predictor.load(s2s_run.path).records(texts)]
    assert plain == ours and all(ours)
    assert tok.decode(tok("it's")["input_ids"], skip_special_tokens=True) == "it's"  # WordPiece cleaned up
    with pytest.raises(Exception, match="text-generation"):  # documented: gone in transformers 5
        from transformers import pipeline

        pipeline("text2text-generation", model=str(folder))


def test_predictor_serve_and_generate_share_the_run_search(s2s_run, capsys, monkeypatch):
    p = Predictor.load(s2s_run.path)
    assert p.settings["num_beams"] == 2 and p.info()["num_beams"] == 2
    (r,) = p.records(["ich sehe katze " * 20])
    assert r["truncated"] and r["tokens"] <= 6
    greedy = p.records(["ich sehe katze"], num_beams=1, max_new_tokens=2)[0]
    assert greedy["tokens"] <= 2
    with TestClient(create_app(s2s_run.path, Limits(max_new_tokens=16)), base_url="http://localhost") as c:
        a = c.post("/generate", json={"prompts": ["ich sehe hund", "ich sehe baum"], "num_beams": 1})
        assert a.status_code == 200, a.text
        assert [x["text"] for x in a.json()["generations"]] == [x["text"] for x in p.records(
            ["ich sehe hund", "ich sehe baum"], num_beams=1)]
        assert c.post("/generate", json={"prompts": ["x"], "num_beams": 99}).status_code == 422
        assert c.get("/info").json()["num_beams"] == 2
    code, out, _ = run_cli(["generate", s2s_run.path, "--prompt", "ich sehe hund"], capsys, monkeypatch)
    assert code in (0, None) and out.strip().split("[")[0].strip() == p.records(["ich sehe hund"])[0]["text"]


def test_predict_and_evaluate_a_file(s2s_run, tmp_path):
    f = write_pairs(tmp_path / "more.csv", toy_pairs(12))
    frame = tunesmith.predict(s2s_run.path, str(f))
    assert list(frame.columns) == ["source", "target", "output"] and len(frame) == 12
    m = Predictor.load(s2s_run.path).evaluate(str(f))
    assert set(m) >= {"chrf", "bleu", "rouge_l", "exact_match"} and m["n"] == 12


def test_tiny_t5_learns_through_the_same_loop(tiny_t5, tmp_path):
    data = write_pairs(tmp_path / "pairs.csv", toy_pairs(40))
    run = tunesmith.train(str(data), task="seq2seq", model=str(tiny_t5), epochs=2, lr=5e-3, batch_size=8,
                          max_length=16, max_new_tokens=5, num_beams=1, seed=0, bf16="off", baselines=False,
                          out=str(tmp_path / "run"))
    m = run.metrics
    assert set(m["baselines"]) == {"copy_source"} and m["history"][1]["train_loss"] < m["history"][0]["train_loss"]
    assert json.loads((run.path / "model" / "tunesmith.json").read_text())["num_beams"] == 1
    from transformers import AutoModelForSeq2SeqLM

    assert type(AutoModelForSeq2SeqLM.from_pretrained(run.path / "model")).__name__ == "T5ForConditionalGeneration"


def test_models_that_cannot_rewrite_text_are_one_line(tiny_models, monkeypatch, capsys, tmp_path):
    with pytest.raises(TunesmithError, match="decoder only.*--task sft"):
        s2s_model.load(str(tiny_models["llama"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunesmithError, match="not in the local cache"):
        s2s_model.load("nobody-here/t5-nothing")
    data = write_pairs(tmp_path / "p.csv", toy_pairs(20))
    code, _, err = run_cli(["train", data, "--task", "seq2seq", "--model", tiny_models["bert"], "--strategy", "head",
                            "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "takes full or lora" in one_line_error(code, err)
