"""The task contract, for every registered task: a tiny random model trains one step through the
shared pipeline and loop, its run folder saves and loads, the Predictor predicts, the server answers
one request, and tasks that say they export, export with a parity check.

A task registered without an entry in CASES fails here: registering a task means joining this test."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from fastapi.testclient import TestClient

import tunesmith
from tunesmith.predictor import Predictor
from tunesmith.run import inference_settings, open_run, read_marker
from tunesmith.serve.app import Limits, create_app
from tunesmith.tasks import REGISTRY, get_task_class


def _classification(tmp_path, multi: bool):
    words = ["alpha", "bravo", "charlie"]
    rows = []
    for i in range(60):
        a, b = words[i % 3], words[(i + 1) % 3]
        rows.append({"text": f"{a} item number {i} about {a}", "label": f"{a}|{b}" if multi else a})
    p = tmp_path / "data.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p, ["alpha item", "bravo thing"]


def _instructions(tmp_path):
    rows = [{"instruction": f"say the colour number {i}", "input": "", "output": "red"} for i in range(24)]
    p = tmp_path / "qa.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p, ["say the colour number 99"]


def _entities(tmp_path):
    rows = [{"tokens": ["we", "met", n, "in", c], "tags": ["O", "O", "B-person", "O", "B-location"]}
            for n, c in zip(["alice", "bob", "carol"] * 20, ["paris", "tokyo", "lima", "oslo"] * 15)]
    p = tmp_path / "ner.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p, ["alice flew to paris", "a text of no entity"]


def _pairs(tmp_path):
    rows = [{"anchor": f"question {i} about {w}", "positive": f"{w} answer number {i}"}
            for i, w in enumerate(["alpha", "bravo", "charlie", "delta"] * 15)]
    p = tmp_path / "pairs.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p, ["alpha question", "bravo answer"]


def _translations(tmp_path):
    rows = [{"source": f"ich sehe {w} {i}", "target": f"i see {w} {i}"} for i, w in enumerate(["hund", "haus"] * 20)]
    p = tmp_path / "translations.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p, ["ich sehe hund", "ich sehe haus"]


# name → (tiny architecture, data writer, settings for one optimizer step)
CASES = {
    "single_label": ("bert", lambda t: _classification(t, False), dict(batch_size=64, max_length=32)),
    "multilabel": ("bert", lambda t: _classification(t, True), dict(batch_size=64, max_length=32)),
    "sft": ("llama", _instructions, dict(batch_size=32, max_length=48, max_new_tokens=4, eval_generations=2,
                                         few_shot_k=0, strategy="lora")),
    "token": ("bert", _entities, dict(batch_size=64, max_length=32)),
    "embedding": ("bert", _pairs, dict(batch_size=64, max_length=32)),
    "seq2seq": ("bert", _translations, dict(batch_size=64, max_length=32, max_new_tokens=4, num_beams=2)),
}


def test_every_registered_task_has_a_contract_case():
    assert set(CASES) == set(REGISTRY), "add the new task to CASES: a tiny data set and one-step settings"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_task_contract(name, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    arch, write, settings = CASES[name]
    data, items = write(tmp_path)
    cls = get_task_class(name)
    events = []
    run = tunesmith.train(str(data), task=name, model=str(tiny_models[arch]), epochs=1, bf16="off", seed=1,
                          warmup_ratio=0.0, out=str(tmp_path / "run"), on_event=lambda k, **kw: events.append((k, kw)),
                          **settings)
    # trained exactly one optimizer step through the shared loop, and finished its run folder
    steps = [kw for k, kw in events if k == "step"]
    assert len(steps) == 1 and run.metrics["task"] == name and len(run.metrics["history"]) == 1
    assert read_marker(run.path)["state"] == "finished" and (run.path / "report.html").exists()
    settings_file = inference_settings(open_run(run.path))
    assert settings_file["task"] == name and settings_file["max_length"] == settings["max_length"]

    # load and predict through the one inference path
    p = Predictor.load(run.path)
    assert isinstance(p.task, cls)
    recs = p.records(items)
    assert len(recs) == len(items) and all(isinstance(r, dict) and r for r in recs)
    frame = tunesmith.predict(run.path, items)
    assert len(frame) == len(items) and set(p.task.columns(recs)) <= set(frame.columns)

    # serve one request on the task's route
    body = {"texts": items} if "texts" in cls.serve_request(Limits()).model_fields else {"prompts": items}
    with TestClient(create_app(run.path, Limits()), base_url="http://localhost") as client:
        r = client.post(cls.serve_route, json=body)
        assert r.status_code == 200, r.text
        assert len(next(v for v in r.json().values() if isinstance(v, list))) == len(items)
        assert client.get("/info").json()["task"] == name

    if cls.exportable:
        from tunesmith.export import export_run

        doc = export_run(run.path, "onnx", out=tmp_path / "onnx", n_rows=8)
        assert doc["parity"]["label_agreement"] == 1.0
