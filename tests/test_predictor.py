"""One inference path (issue 16): the Predictor loads a run folder once and gives the records that
`tunesmith predict`, `evaluate`, serve and export parity give; its settings come from model/tunesmith.json,
and a run written before that file held them still loads."""
import json
import shutil

import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.errors import TunesmithError
from tunesmith.predictor import BATCH_SIZE, Predictor
from tunesmith.run import INFERENCE, inference_settings, open_run

TEXTS = ["my invoice is wrong", "where is the courier", "password locked", "refund " * 200, "ok"]


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(tiny_run.path, path)
    return path


def _before(run_path, texts, temperature=None, max_length=None, bf16=None):
    """Records as api._logits / serve's Classifier computed them before the Predictor (the reference)."""
    from transformers import AutoModelForSequenceClassification

    from tunesmith.data.batching import encode
    from tunesmith.evaluate.predict import predict_logits
    from tunesmith.models.load import load_tokenizer
    from tunesmith.tasks import get_task
    from tunesmith.accel.precision import use_bf16

    run = open_run(run_path)
    model = AutoModelForSequenceClassification.from_pretrained(run.model_dir)
    tok = load_tokenizer(str(run.model_dir))
    task = get_task(run.metrics["task"], [model.config.id2label[i] for i in range(model.config.num_labels)])
    device = torch.device("cpu")
    logits = predict_logits(model, encode(tok, texts, max_length or run.recipe["max_length"]), tok.pad_token_id,
                            128, use_bf16(run.recipe.get("bf16", "auto"), device) if bf16 is None else bf16, device)
    t = run.metrics.get("calibration", {}).get("temperature", 1.0) if temperature is None else temperature
    probs = task.probabilities(logits, t)
    return task, probs, task.decide(probs)


def test_the_finished_run_records_its_inference_settings(tiny_run):
    doc = json.loads((tiny_run.path / "model" / INFERENCE).read_text())
    assert doc["task"] == "single_label" and doc["max_length"] == tiny_run.recipe["max_length"]
    assert doc["temperature"] == tiny_run.metrics["calibration"]["temperature"]
    s = inference_settings(open_run(tiny_run.path))
    keys = ("task", "max_length", "temperature")
    assert {k: s[k] for k in keys} == {k: doc[k] for k in keys}
    assert s["bf16"] == tiny_run.recipe["bf16"]


def test_records_are_what_predict_serve_and_parity_gave_before(tiny_run):
    p = Predictor.load(tiny_run.path, device="cpu")
    recs = p.records(TEXTS)
    task, probs, decided = _before(tiny_run.path, TEXTS)
    assert [r["label"] for r in recs] == [task.labels[d] for d in decided]
    np.testing.assert_allclose([[r["scores"][l] for l in task.labels] for r in recs], probs, atol=1e-6)
    np.testing.assert_allclose([r["score"] for r in recs], probs.max(axis=1), atol=1e-6)
    assert [r["truncated"] for r in recs] == [False, False, False, True, False]
    # tunesmith.predict: the same labels and scores as columns
    frame = tunesmith.predict(tiny_run.path, TEXTS)
    assert list(frame["prediction"]) == [r["label"] for r in recs]
    np.testing.assert_allclose(frame["score"], [r["score"] for r in recs], atol=1e-6)
    # serve: the same records, the truncated flag included
    from tunesmith.serve import predictor as served

    s = served.load(tiny_run.path)
    assert s.kind == "classifier" and s(TEXTS) == recs
    info = s.info()
    assert info["labels"] == task.labels and info["temperature"] == p.temperature and info["max_length"] == p.max_length
    # export parity's reference: the same path in fp32 on the CPU
    from tunesmith.export.parity import Reference

    ref = Reference(open_run(tiny_run.path))
    assert not ref.predictor.bf16 and ref.predictor.device.type == "cpu"
    _, fp32, _ = _before(tiny_run.path, TEXTS, bf16=False)  # parity's reference was fp32 before too
    np.testing.assert_allclose(ref.probabilities(TEXTS), fp32, atol=1e-6)


def test_evaluate_goes_through_the_predictor(tiny_run):
    m = tunesmith.evaluate(tiny_run.path, tiny_run.recipe["train"])
    p = Predictor.load(tiny_run.path)
    assert m == p.evaluate(tiny_run.recipe["train"])
    assert {"accuracy", "macro_f1", "n", "loss"} <= set(m) and m["n"] == 120


def test_settings_come_from_model_tunesmith_json(run_copy):
    f = run_copy / "model" / INFERENCE
    doc = json.loads(f.read_text())
    f.write_text(json.dumps({**doc, "temperature": 0.5, "max_length": 8}))
    metrics = json.loads((run_copy / "metrics.json").read_text())
    metrics["calibration"]["temperature"] = 3.0  # metrics.json is not where a Predictor looks
    (run_copy / "metrics.json").write_text(json.dumps(metrics))
    p = Predictor.load(run_copy, device="cpu")
    assert (p.temperature, p.max_length) == (0.5, 8)
    recs = p.records(TEXTS)
    task, probs, _ = _before(run_copy, TEXTS, temperature=0.5, max_length=8)
    np.testing.assert_allclose([[r["scores"][l] for l in task.labels] for r in recs], probs, atol=1e-6)
    assert [r["truncated"] for r in recs] == [False, False, False, True, False]  # 8 tokens: only the long one


def test_an_older_run_without_the_file_still_loads(run_copy):
    (run_copy / "model" / INFERENCE).unlink()
    run = open_run(run_copy)
    s = inference_settings(run)
    assert s["task"] == run.metrics["task"] and s["max_length"] == run.recipe["max_length"]
    assert s["temperature"] == run.metrics["calibration"]["temperature"]
    recs = Predictor.load(run_copy, device="cpu").records(TEXTS[:3])
    task, probs, _ = _before(run_copy, TEXTS[:3])
    np.testing.assert_allclose([[r["scores"][l] for l in task.labels] for r in recs], probs, atol=1e-6)


def test_an_unreadable_settings_file_is_one_line(run_copy):
    (run_copy / "model" / INFERENCE).write_text("{not json")
    with pytest.raises(TunesmithError, match="unreadable"):
        Predictor.load(run_copy)


def test_multilabel_records_name_every_label_over_the_threshold():
    from tunesmith.tasks.classification import MultiLabel, SingleLabel

    ml = MultiLabel(["a", "b", "c"])
    logits = np.array([[2.0, 1.0, -3.0], [-1.0, -2.0, -4.0]], dtype=np.float32)
    r = ml.records(logits)
    p = ml.probabilities(logits)
    assert r[0]["label"] == "a|b" and r[0]["labels"] == ["a", "b"] and r[0]["score"] == pytest.approx(p[0, 1])
    assert r[1]["label"] == "" and r[1]["labels"] == [] and r[1]["score"] == pytest.approx(1 - p[1].max())
    assert list(ml.columns(r)["prediction"]) == ["a|b", ""]
    sl = SingleLabel(["a", "b", "c"])
    r = sl.records(logits, temperature=2.0)
    assert [x["label"] for x in r] == ["a", "a"]
    assert r[0]["score"] == pytest.approx(sl.probabilities(logits, 2.0)[0, 0])
    # export parity's comparison: label sets agree row by row
    assert ml.agreement(p, p) == {"mean_top_prob_diff": 0.0, "label_agreement": 1.0}
    assert ml.agreement(p, p[::-1])["label_agreement"] == 0.0


def test_one_batch_size_for_every_forward(tiny_run, monkeypatch):
    from importlib import import_module

    predict_mod = import_module("tunesmith.evaluate.predict")  # tunesmith.evaluate is also the API function

    seen = []
    real = predict_mod.predict_logits
    monkeypatch.setattr(predict_mod, "predict_logits", lambda *a, **k: (seen.append(a[3]), real(*a, **k))[1])
    Predictor.load(tiny_run.path).outputs(["a"])
    from tunesmith.export.parity import Reference

    Reference(open_run(tiny_run.path)).probabilities(["a"])
    assert seen == [BATCH_SIZE, BATCH_SIZE]
