"""A tiny BERT tagger end to end: train, measure, report, predict spans on raw text (short and 5x the model's
length), `predict --out entities.jsonl`, serve, and the run's model/ in transformers' own pipeline."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

import tunesmith
from tunesmith.predictor import Predictor
from tunesmith.serve.app import Limits, create_app

from token_runs import token_run, toy_sentences, write_jsonl  # noqa: F401  (token_run: a fixture)


def test_run_measures_entities_against_baselines(token_run):
    m = token_run.metrics
    t = m["test"]
    assert m["task"] == "token" and m["labels"][0] == "O" and set(m["types"]) == {"location", "person"}
    assert t["f1"] > 0.9 and t["ci95"]["f1"][0] <= t["f1"] <= t["ci95"]["f1"][1]
    assert set(t["per_type"]) == {"location", "person"} and "token_accuracy" in t
    assert set(m["baselines"]) == {"majority", "dictionary", "probe"} and m["baselines"]["majority"]["f1"] == 0.0
    assert m["baselines"]["dictionary"]["f1"] > 0.5  # closed vocabulary: memorisation goes far here
    best = max(m["baselines"].values(), key=lambda b: b["f1"])["f1"]
    assert m["baselines"][m["comparison"]["baseline"]]["f1"] == best and "entity-F1" in m["verdict"]
    assert m["seen_unseen"]["share_seen"] == 1.0 and m["confusion"]["rows"][-1] == "spurious"
    assert {c["name"] for c in m["audit"]} >= {"invalid_transitions", "entity_leakage", "windowed"}
    page = (token_run.path / "report.html").read_text()
    assert "Per entity type" in page and "seen vs unseen" in page and "spurious" in page
    card = (token_run.path / "MODEL_CARD.md").read_text()
    assert "pipeline_tag: token-classification" in card


def test_predict_spans_with_character_offsets(token_run):
    p = Predictor.load(token_run.path)
    text = "Yesterday alice flew to New York, then bob went to Paris."
    (r,) = p.records([text])
    got = [(e["text"], e["label"]) for e in r["entities"]]
    assert got == [("alice", "person"), ("New York", "location"), ("bob", "person"), ("Paris", "location")]
    assert all(text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in r["entities"])
    assert r["truncated"] is False


def test_a_long_document_is_read_whole(token_run):
    p = Predictor.load(token_run.path)
    parts = [f"we met {n} in tokyo today" for n in ["alice", "bob", "carol", "dave", "erin", "frank"] * 6]
    text = " and ".join(parts)  # 251 words: 8x the run's max_length of 32 tokens
    enc, _ = p.encode([text])
    assert enc.windowed == 1 and len(enc.ids) >= 8
    (r,) = p.records([text])
    people = [e for e in r["entities"] if e["label"] == "person"]
    places = [e for e in r["entities"] if e["label"] == "location"]
    assert len(people) == len(places) == len(parts)  # none lost at window edges, none twice
    assert all(text[e["start"]:e["end"]] == e["text"] for e in r["entities"])


def test_predict_cli_file_to_entities_jsonl(token_run, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("alice flew to london yesterday\n\nwe met carol in san diego today\n")
    out = tmp_path / "entities.jsonl"
    frame = tunesmith.predict(token_run.path, str(texts), out=str(out))
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(frame) == len(rows) == 2
    assert [e["text"] for e in rows[1]["entities"]] == ["carol", "san diego"]


def test_evaluate_a_labelled_file(token_run, tmp_path):
    f = write_jsonl(tmp_path / "more.jsonl", toy_sentences(20, seed=5))
    m = tunesmith.evaluate(token_run.path, str(f))
    assert m["f1"] > 0.9 and m["n"] == 20 and "loss" in m


def test_serve_answers_entities(token_run):
    with TestClient(create_app(token_run.path, Limits()), base_url="http://localhost") as client:
        r = client.post("/predict", json={"texts": ["bob flew to paris yesterday", "yesterday today"]})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [e["label"] for e in preds[0]["entities"]] == ["person", "location"] and preds[1]["entities"] == []
        assert client.get("/info").json()["task"] == "token"


def test_transformers_pipeline_loads_model_with_entity_names(token_run):
    from transformers import pipeline

    ner = pipeline("token-classification", model=str(token_run.path / "model"), aggregation_strategy="simple")
    got = [(e["entity_group"], e["word"]) for e in ner("bob flew to paris yesterday")]
    assert got == [("person", "bob"), ("location", "paris")]


@pytest.mark.parametrize("strategy", ["lora", "freeze:1"])
def test_strategies(strategy, tiny_models, tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", toy_sentences(40))
    run = tunesmith.train(str(data), model=str(tiny_models["bert"]), epochs=1, batch_size=64, strategy=strategy,
                          bf16="off", out=str(tmp_path / "run"), audit=False, baselines=False, max_length=24,
                          stride=3)
    assert run.metrics["task"] == "token" and (run.path / "model" / "config.json").exists()
    if strategy == "lora":
        assert (run.path / "adapter").exists()
    p = Predictor.load(run.path)
    assert p.records(["alice flew to paris"])[0]["truncated"] is False
    # the run's --stride is what prediction windows with (the default, 24 // 4, would need more windows)
    from tunesmith.tasks.token import encoding as E

    assert json.loads((run.path / "model" / "tunesmith.json").read_text())["stride"] == 3
    text = " ".join(f"word{i}" for i in range(100))
    assert len(p.encode([text])[0].ids) == len(E.encode(p.tok, [text], 24, stride=3).ids) < len(
        E.encode(p.tok, [text], 24).ids)


def test_onnx_export_of_a_tagger_checks_parity_word_by_word(token_run, tmp_path):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from tunesmith.export import export_run, parity

    res = export_run(token_run.path, "onnx", out=tmp_path / "onnx")
    assert res["task"] == "token" and res["parity"]["n"] > 10
    assert res["parity"]["max_abs_prob_diff"] <= parity.TOLERANCE["fp32"]["max_abs_prob_diff"]
    assert res["parity"]["label_agreement"] == 1.0
    q = export_run(token_run.path, "onnx", quantize="int8", out=tmp_path / "int8")
    assert q["parity"]["label_agreement"] >= parity.TOLERANCE["int8"]["min_label_agreement"]
    # the graph alone: per-token logits over a dynamic length, entity names in its config
    tok = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    enc = tok(["bob flew to paris yesterday", "hi"], padding=True, return_tensors="np")
    s = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    z = s.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    assert z.shape == (*enc["input_ids"].shape, len(res["labels"]))
    config = json.loads((tmp_path / "onnx" / "config.json").read_text())
    first = enc.word_ids(0).index(0), enc.word_ids(0).index(3)  # bob, paris
    assert [config["id2label"][str(i)] for i in z[0, list(first)].argmax(1)] == ["B-person", "B-location"]


def test_tune_a_tagger_on_entity_f1(tiny_models, tmp_path):
    import yaml
    from rich.console import Console

    from tunesmith.tune import search

    train = write_jsonl(tmp_path / "train.jsonl", toy_sentences(80))
    test = write_jsonl(tmp_path / "test.jsonl", toy_sentences(20, seed=7))
    cfg = tmp_path / "space.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": {"baselines": False, "audit": False, "bf16": "off"},
                                   "tune": {"strategies": ["full"], "lr": {"full": [1e-3, 5e-3]}, "epochs": [2, 2],
                                            "batch_size": [16], "startup_trials": 0, "pruner": "none"}}))
    args = search.TuneArgs(train=str(train), test=str(test), models=[str(tiny_models["bert"])], trials=2,
                           out=str(tmp_path / "t"), config=str(cfg))
    doc = search.tune(args, Console(stderr=True))
    assert doc["metric"] == "f1" and len(doc["trials"]) == 2  # the task's objective: validation entity F1
    assert all(0 <= r["metric"] <= 1 for r in doc["trials"])
    best = max(doc["trials"], key=lambda r: r["metric"])
    assert doc["winner"]["trial"] == best["trial"] and doc["winner"]["test"]["n"] == 20
    assert "f1" in doc["winner"]["test"]
    assert Predictor.load(tmp_path / "t" / "best").records(["bob flew to paris"])[0]["entities"] is not None


def test_lp_ft_starts_the_tag_classifier_as_a_probe(tiny_models, tmp_path):
    """--head-init probe (the default): the first epoch starts from a probe fitted on the frozen encoder's word
    vectors, so with the weights barely moving its loss is well below a random head's."""
    data = write_jsonl(tmp_path / "toy.jsonl", toy_sentences(60))
    loss = {}
    for init in ("probe", "random"):
        run = tunesmith.train(str(data), model=str(tiny_models["bert"]), epochs=1, lr=1e-9, batch_size=16, seed=0,
                              bf16="off", head_init=init, baselines=False, audit=False, out=str(tmp_path / init))
        loss[init] = run.metrics["history"][0]["train_loss"]
    assert loss["probe"] < 0.7 * loss["random"], loss
