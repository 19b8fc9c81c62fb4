"""Tracking without a tracker: flattening to params and metrics, the record, the tracking URI, the refusals."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.tracking import flatten
from tunesmith.tracking.record import (RECORD, default_uri, read_record, resolve_uri, runs_dir, write_record)
from tunesmith.tracking.study import check_parallel


def test_params_are_flat_strings_cut_to_the_limit():
    doc = {"recipe": {"lr": 0.001, "lora_target_modules": [f"encoder.layer.{i}.attention.self.query" for i in range(400)],
                      "test": None, "weird key/é": 1},
           "provenance": {"data": {"train": {"sha256": "sha256:ab"}}, "versions": {"torch": "2.13"}}}
    p = flatten.params_of(doc, limit=6000)
    assert p["lr"] == "0.001" and p["test"] == "None"
    assert len(p["lora_target_modules"]) == 6000 and p["lora_target_modules"].endswith(flatten.CUT)
    assert p["provenance.data.train.sha256"] == "sha256:ab" and p["provenance.versions.torch"] == "2.13"
    assert "weird key__" in p  # '/' and non-ASCII are not tracker key characters


def test_metrics_keep_numbers_intervals_and_epochs():
    m = {"test": {"accuracy": 0.5, "n": 24, "ci95": {"accuracy": [0.4, 0.6]}}, "baselines": {"majority": {"macro_f1": 0.2}},
         "comparison": {"diff": -0.1, "ci95": [-0.2, 0.05], "significant": False, "baseline": "majority"},
         "retention": {"kind": "linear_cka", "cka": 0.9}, "wall_seconds": 3.0, "best_epoch": None,
         "stage_seconds": {"audit": 0.5, "fit": 2.0},
         "history": [{"epoch": 1, "train_loss": 2.0, "val_loss": float("nan"), "epoch_seconds": 1.5},
                     {"epoch": 2, "train_loss": 1.0, "epoch_seconds": 1.5}]}
    f = flatten.final_metrics(m)
    assert f["test.ci95.accuracy.low"] == 0.4 and f["test.ci95.accuracy.high"] == 0.6 and f["test.n"] == 24
    assert f["baseline.majority.macro_f1"] == 0.2 and f["retention.cka"] == 0.9 and f["wall_seconds"] == 3.0
    assert "comparison.significant" not in f and "best_epoch" not in f
    assert f["seconds.audit"] == 0.5 and f["seconds.fit"] == 2.0
    h = flatten.history_metrics(m["history"])
    assert ("train_loss", 2.0, 1, 1.5) in h and ("train_loss", 1.0, 2, 3.0) in h
    assert not [r for r in h if r[0] == "val_loss"]  # NaN is no number to plot
    assert flatten.outcome(m) == "no significant difference"


def test_the_store_sits_beside_the_runs_and_a_password_never_reaches_the_record(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    assert default_uri(run) == f"sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db"
    tune = tmp_path / "runs" / "tune-x"
    (tune / "best").mkdir(parents=True)
    (tune / "tune_args.json").write_text("{}")
    assert runs_dir(tune / "best") == runs_dir(tune) == (tmp_path / "runs").resolve()  # one store for a tune

    secret = "http://alice:s3cr%40t@tracker.invalid:5000"
    write_record(run, state="failed", uri=secret, error="x")
    text = (run / RECORD).read_text()
    assert "s3cr" not in text and json.loads(text)["uri"] == "http://alice:***@tracker.invalid:5000"
    assert resolve_uri(run) == default_uri(run)  # a redacted URI is not reused: the environment names it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret)
    assert resolve_uri(run) == secret
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    write_record(run, state="tracked", uri="http://127.0.0.1:5000")
    assert resolve_uri(run) == "http://127.0.0.1:5000" and read_record(run)["state"] == "tracked"


def test_sqlite_with_several_workers_is_refused(tmp_path, toy_csv, monkeypatch):
    with pytest.raises(TunesmithError, match="SQLite .* locks up under parallel writers"):
        check_parallel("sqlite:////x/mlflow.db", 2)
    check_parallel("sqlite:////x/mlflow.db", 1)
    check_parallel("http://127.0.0.1:5000", 4)

    from rich.console import Console

    from tunesmith.tune import search

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = search.TuneArgs(train=str(toy_csv), out=str(tmp_path / "t"), workers=2, trials=1, track="mlflow")
    with pytest.raises(TunesmithError, match="--workers 2.*MLFLOW_TRACKING_URI"):
        search.tune(args, Console(stderr=True))
    assert not (tmp_path / "t" / "study.journal").exists(), "refused before the study started"


def test_mlflow_is_imported_only_when_tracking_is_on():
    code = ("import sys, tunesmith.tracking, tunesmith.tracking.study, tunesmith.tracking.mlflow_client, tunesmith.cli; "
            "assert 'mlflow' not in sys.modules, 'mlflow imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    # the pipeline and tune (slow to import here) reach tracking from inside functions only
    src = Path(__file__).resolve().parents[2] / "src" / "tunesmith"
    for f in (src / "pipeline.py", src / "tune" / "search.py", src / "tune" / "worker.py"):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not [n for n in names if n.startswith(("mlflow", "tunesmith.tracking"))], (f, names)
