"""--track mlflow against a real `mlflow server` (SQLite backend, artifacts in a temporary folder), read back
through MlflowClient: a training run, a tune with nested trials, and a server killed while a run trains."""
from __future__ import annotations

import json
import shutil
import signal
import sys

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

import tunesmith
from tunesmith.run import read_marker
from tunesmith.tracking.mlflow_client import TrackingError, upload_run

from conftest import make_tiny_model, toy_rows, write_csv
from mlflow_server import free_port, mlflow_server  # noqa: F401 (fixture)

URI = "MLFLOW_TRACKING_URI"


def _train(model, data, out, **kw):
    lines = []

    def on_event(kind, **k):
        if kind == "info":
            lines.append(k["message"])
        if kw.get("hook"):
            kw["hook"](kind, **k)

    run = tunesmith.train(str(data), model=str(model), epochs=2, lr=1e-3, batch_size=16, seed=0, out=str(out),
                          head_init="random", audit=False, track="mlflow", on_event=on_event,
                          **{k: v for k, v in kw.items() if k != "hook"})
    return run, lines


def _cli(*args):
    from tunesmith import cli

    return CliRunner().invoke(cli.app, list(args))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Only the tiny BERT (tests/conftest.py's fixture of the same name makes four architectures)."""
    return {"bert": make_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")}


@pytest.fixture(scope="module")
def logged(mlflow_server, tiny_models, tmp_path_factory):  # noqa: F811
    """One tiny run trained with --track mlflow against the module's server."""
    root = tmp_path_factory.mktemp("logged")
    mp = pytest.MonkeyPatch()
    mp.setenv(URI, mlflow_server.url)
    mp.setenv("MLFLOW_EXPERIMENT_NAME", "train-test")
    try:
        # a recipe value far over MLflow's param limit (6000 characters): cut, never a failed upload
        long = [f"encoder.layer.{i}.attention.self.query" for i in range(300)]
        run, lines = _train(tiny_models["bert"], write_csv(root / "toy.csv", toy_rows()), root / "runs" / "r1",
                            lora_target_modules=long)
        yield run, lines, MlflowClient(mlflow_server.url)
    finally:
        mp.undo()


def test_a_training_run_is_logged_with_params_metrics_tags_and_artifacts(logged, tiny_models, tmp_path):
    run, lines, client = logged
    m = json.loads((run.path / "metrics.json").read_text())
    rec = json.loads((run.path / "tracking.json").read_text())
    assert rec["state"] == "tracked" and rec["url"].endswith(f"/runs/{rec['run_id']}")
    said = [x for x in lines if "MLflow" in x]
    assert len(said) == 1 and rec["run_id"] in said[0], lines
    r = client.get_run(rec["run_id"])
    assert r.info.status == "FINISHED" and r.info.run_name == "r1"

    p = r.data.params
    assert p["epochs"] == "2" and p["lr"] == "0.001" and p["model"] == str(tiny_models["bert"])
    assert p["task"] == "single_label" and p["track"] == "mlflow"
    assert p["provenance.data.train.sha256"].startswith("sha256:")
    assert len(p["lora_target_modules"]) == 6000 and p["lora_target_modules"].endswith("…[cut]")

    for key in ("train_loss", "val_loss", "val_macro_f1"):
        hist = client.get_metric_history(r.info.run_id, key)
        assert [h.step for h in hist] == [1, 2], key
        assert [h.value for h in hist] == pytest.approx([e[key] for e in m["history"]])
    got = r.data.metrics
    assert got["test.macro_f1"] == pytest.approx(m["test"]["macro_f1"])
    assert got["test.ci95.macro_f1.low"] == pytest.approx(m["test"]["ci95"]["macro_f1"][0])
    assert got["baseline.majority.macro_f1"] == pytest.approx(m["baselines"]["majority"]["macro_f1"])
    assert got["retention.cka"] == pytest.approx(m["retention"]["cka"])

    t = r.data.tags
    assert t["tunesmith.task"] == "single_label" and t["tunesmith.base_model"] == str(tiny_models["bert"])
    assert t["tunesmith.verdict"] == m["verdict"] and t["tunesmith.outcome"] in ("better", "worse",
                                                                                "no significant difference")
    assert t["tunesmith.run_id"] == read_marker(run.path)["run_id"]

    top = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"report.html", "MODEL_CARD.md", "recipe.yaml", "metrics.json", "model"} <= top
    assert {"model/config.json", "model/tunesmith.json"} <= {a.path for a in client.list_artifacts(r.info.run_id, "model")}

    # the artifacts load back as the run does: label names from config.json, tunesmith's own predictions
    from transformers import AutoConfig

    from tunesmith import api

    back = client.download_artifacts(r.info.run_id, "", str(tmp_path))
    labels = m["labels"]
    assert sorted(AutoConfig.from_pretrained(f"{back}/model").id2label.values()) == sorted(labels)
    texts = [row["text"] for row in toy_rows()[:12]]
    mine, theirs = api.predict(run.path, texts), api.predict(back, texts)
    assert list(theirs["prediction"]) == list(mine["prediction"]) and set(mine["prediction"]) <= set(labels)
    assert list(theirs["score"]) == pytest.approx(list(mine["score"]))

    # once only: `tunesmith track` on a tracked run uploads nothing
    res = _cli("track", str(run.path))
    assert res.exit_code == 0 and "already tracked" in res.output, res.output
    assert len(client.search_runs([r.info.experiment_id], "tags.`tunesmith.run_id` = '%s'"
                                  % t["tunesmith.run_id"])) == 1


def test_an_unreachable_tracker_is_one_line_without_the_password(logged, tmp_path, monkeypatch):
    run, _, _ = logged
    copy = tmp_path / "r1"
    shutil.copytree(run.path, copy)
    (copy / "tracking.json").unlink()
    monkeypatch.setenv(URI, f"http://alice:s3cret@127.0.0.1:{free_port()}")
    with pytest.raises(TrackingError) as e:
        upload_run(copy)
    line = str(e.value)
    assert "\n" not in line and "s3cret" not in line and "alice:***@127.0.0.1" in line, line
    rec = (copy / "tracking.json").read_text()
    assert "s3cret" not in rec and json.loads(rec)["state"] == "failed"


def _split(tmp_path):
    import pandas as pd

    df = pd.DataFrame(toy_rows())
    test = df.iloc[::4]
    df.drop(test.index).to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    return str(tmp_path / "train.csv"), str(tmp_path / "test.csv")


def test_a_tune_is_a_parent_run_with_nested_trials(mlflow_server, tiny_models, tmp_path, monkeypatch):  # noqa: F811
    from rich.console import Console

    from tunesmith.tune import search

    monkeypatch.setenv(URI, mlflow_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tune-test")
    train, test = _split(tmp_path)
    cfg = tmp_path / "space.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": {"baselines": False, "audit": False, "patience": 0},
                                   "tune": {"strategies": ["head"], "lr": {"head": [1e-7, 2.0]}, "epochs": [2, 2],
                                            "batch_size": [16], "pruner": "halving", "reduction_factor": 2,
                                            "startup_trials": 0}}))
    # trial 0 barely moves, trial 1 blows up (halving prunes it after epoch 1), trial 2 fails, trial 3 learns
    monkeypatch.setattr(search, "first_guesses", lambda space: [{"lr_head": 1e-7}, {"lr_head": 2.0},
                                                                {"lr_head": 1e-3}, {"lr_head": 1e-3}])
    real_call = search.Objective.__call__

    def call(self, trial):
        if trial.number == 2:
            raise ValueError("planted failure")
        return real_call(self, trial)

    monkeypatch.setattr(search.Objective, "__call__", call)
    from tunesmith.tracking import study as tracking_study

    real_log, loggers = tracking_study.log_trial, []

    def log_trial(*a, **k):
        loggers.append(sys._getframe(1).f_code.co_name)  # TrialLogger.__call__ (live) or finish_study (catch-up)
        return real_log(*a, **k)

    monkeypatch.setattr(tracking_study, "log_trial", log_trial)
    out = tmp_path / "t"
    args = search.TuneArgs(train=train, test=test, models=[str(tiny_models["bert"])], trials=3, out=str(out),
                           config=str(cfg), track="mlflow", metric="loss")
    doc = search.tune(args, Console(stderr=True))

    client = MlflowClient(mlflow_server.url)
    rec = json.loads((out / "tracking.json").read_text())
    assert rec["state"] == "tracked"
    parent = client.get_run(rec["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["tunesmith.kind"] == "tune"
    assert parent.data.params["metric"] == "loss" and parent.data.params["trials"] == "3"
    assert {"tune.json", "tune_report.html"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trials = {int(k.data.tags["tunesmith.trial"]): k for k in kids if k.data.tags["tunesmith.kind"] == "trial"}
    by_number = {r["trial"]: r for r in doc["trials"]}
    assert sorted(trials) == sorted(by_number), "each trial exactly once"
    assert loggers == ["__call__"] * len(trials), "each trial logged as it ended, none left to the end"
    states = {n: k.data.tags["tunesmith.state"] for n, k in trials.items()}
    assert states[0] == "complete" and states[1] == "pruned" and states[2] == "failed", states
    status = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
    for n, k in trials.items():
        want = {"fail": "failed"}.get(by_number[n]["state"], by_number[n]["state"])
        assert states[n] == want and k.info.status == status[want]
        if want != "failed":
            assert k.data.params["strategy"] == "head" and float(k.data.params["lr"]) > 0
            hist = client.get_metric_history(k.info.run_id, "val_loss")
            assert [h.step for h in hist] == ([1] if want == "pruned" else [1, 2])
    assert float(trials[1].data.params["lr"]) == pytest.approx(2.0)

    # the winner: its run folder as a child run, linked from the parent and from its trial
    w = doc["winner"]
    winner = client.get_run(parent.data.tags["tunesmith.winner_run_id"])
    assert parent.data.tags["tunesmith.winner_trial"] == str(w["trial"])
    assert winner.data.tags["mlflow.parentRunId"] == parent.info.run_id and winner.data.tags["tunesmith.winner"] == "true"
    assert winner.data.metrics["test.n"] == w["test"]["n"]
    assert "model" in {a.path for a in client.list_artifacts(winner.info.run_id)}
    assert trials[w["trial"]].data.tags["tunesmith.winner_run_id"] == winner.info.run_id

    # `tunesmith track TUNE` again adds nothing
    res = _cli("track", str(out))
    assert res.exit_code == 0, res.output
    again = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(again) == len(kids)


def test_a_server_killed_mid_run_loses_nothing_and_track_uploads_later(mlflow_server, tiny_models, toy_csv,  # noqa: F811
                                                                         tmp_path, monkeypatch):
    server = mlflow_server  # killed during the run, then started again on its port and database: the last test
    try:
        monkeypatch.setenv(URI, server.url)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "killed")

        def kill_after_epoch_1(kind, **kw):
            if kind == "epoch_end" and kw["epoch"] == 1:
                server.stop(signal.SIGKILL)

        out = tmp_path / "runs" / "r"
        run, lines = _train(tiny_models["bert"], toy_csv, out, hook=kill_after_epoch_1)
        # the run is complete
        assert read_marker(out)["state"] == "finished"
        assert (out / "model" / "config.json").exists() and (out / "report.html").exists()
        assert json.loads((out / "metrics.json").read_text())["test"]["n"] > 0
        said = [x for x in lines if "mlflow" in x.lower()]
        assert len(said) == 1 and f"tunesmith track {out}" in said[0] and "\n" not in said[0], lines
        assert json.loads((out / "tracking.json").read_text())["state"] == "failed"

        server.start()  # back, same port and database
        # an upload cut short (the server fails again during the artifacts): an MLflow run is left half-made
        import mlflow

        real = mlflow.MlflowClient.log_artifacts
        monkeypatch.setattr(mlflow.MlflowClient, "log_artifacts", lambda *a, **k: (_ for _ in ()).throw(
            ConnectionError("server went away")))
        with pytest.raises(TrackingError, match="server went away"):
            upload_run(out)
        half = json.loads((out / "tracking.json").read_text())["run_id"]
        monkeypatch.setattr(mlflow.MlflowClient, "log_artifacts", real)

        res = _cli("track", str(out))
        assert res.exit_code == 0 and "logged" in res.output, res.output
        rec = json.loads((out / "tracking.json").read_text())
        client = MlflowClient(server.url)
        r = client.get_run(rec["run_id"])
        assert rec["state"] == "tracked" and rec["run_id"] != half and r.info.status == "FINISHED"
        assert client.get_run(half).info.lifecycle_stage == "deleted"  # the half-made one went to the trash
        assert [h.step for h in client.get_metric_history(r.info.run_id, "val_macro_f1")] == [1, 2]
        assert "model" in {a.path for a in client.list_artifacts(r.info.run_id)}
        res = _cli("track", str(out))
        assert res.exit_code == 0 and "already tracked" in res.output
        assert len(client.search_runs([r.info.experiment_id])) == 1
    finally:
        if server.proc is None:
            server.start()
