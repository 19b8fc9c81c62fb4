"""The audit inside training: summary lines, audit.json + metrics["audit"], --strict refuses errors."""
import json

import pandas as pd
import pytest
from audit_planting import audit_cache  # noqa: F401 (fixture)

import tunesmith
from tunesmith.audit.base import normalise, similar_pairs
from tunesmith.audit.checks.pii import luhn, scan
from tunesmith.errors import TunesmithError


@pytest.fixture
def conflicted(toy_csv, tmp_path):
    df = pd.read_csv(toy_csv)
    df.loc[len(df)] = {"text": df.text[0].upper() + "!", "label": "login" if df.label[0] != "login" else "billing"}
    f = tmp_path / "conflicted.csv"
    df.to_csv(f, index=False)
    return f, len(df) - 1


def test_strict_refuses_before_any_run_folder(conflicted, tiny_models, tmp_path, audit_cache):
    f, row = conflicted
    # (the tiny random model also calls every pair "near": only the exact conflict is certain)
    with pytest.raises(TunesmithError, match=r"--strict and the audit found errors: label_conflicts \(\d+ rows, e.g. 0"):
        tunesmith.train(str(f), model=str(tiny_models["bert"]), epochs=1, out=str(tmp_path / "run"), strict=True)
    assert not (tmp_path / "run").exists()


def test_train_writes_audit(conflicted, tiny_models, tmp_path, audit_cache):
    f, row = conflicted
    events = []
    run = tunesmith.train(str(f), model=str(tiny_models["bert"]), epochs=1, out=str(tmp_path / "run"), lr=1e-3,
                          batch_size=16, on_event=lambda kind, **kw: events.append((kind, kw)))
    doc = json.loads((run.path / "audit.json").read_text())
    conflicts = next(c for c in doc["checks"] if c["name"] == "label_conflicts")
    assert conflicts["severity"] == "error" and [0, row] in conflicts["groups"]
    summary = {c["name"]: c for c in run.metrics["audit"]}
    assert summary["label_conflicts"]["severity"] == "error" and summary["label_conflicts"]["count"] >= 2
    lines = [kw["message"] for kind, kw in events if kind == "info" and kw["message"].startswith("audit")]
    assert 2 <= len(lines) <= 12 and any("label_conflicts" in l for l in lines)


def test_audit_off(toy_csv, tiny_models, tmp_path):
    run = tunesmith.train(str(toy_csv), model=str(tiny_models["bert"]), epochs=1, out=str(tmp_path / "run"),
                          audit=False, baselines=False)
    assert not (run.path / "audit.json").exists() and "audit" not in run.metrics


def test_helpers():
    assert normalise("  Hello,  WORLD!! ") == normalise("hello world") == "hello world"
    assert normalise("Qué?") != normalise("que")  # accents make a different word
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert scan("call 09061701461 or mail a.b@c.org; 4111-1111-1111-1111") == {"email": 1, "card": 1, "phone": 1}
    assert scan("in 1990-1995, p < 0.001, 12,345 patients, call 87121") == {"email": 0, "card": 0, "phone": 0}
    import numpy as np

    v = np.eye(4, dtype=np.float32)[[0, 1, 0, 2]]
    i, j = similar_pairs(v, None, 0.9, block=3)  # block boundary inside the set
    assert list(zip(i.tolist(), j.tolist())) == [(0, 2)]
    i, j = similar_pairs(v[:2], v[2:], 0.9)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 0)]


def test_validation_leaks_into_test(toy_csv, tiny_models, tmp_path, audit_cache):
    from tunesmith.audit import audit

    df = pd.read_csv(toy_csv)
    df.iloc[:60].to_csv(tmp_path / "tr.csv", index=False)
    df.iloc[60:90].to_csv(tmp_path / "va.csv", index=False)
    test = df.iloc[90:].reset_index(drop=True)
    test.loc[5, "text"] = df.text[70].upper()  # validation row 10, in caps
    test.to_csv(tmp_path / "te.csv", index=False)
    r = audit(str(tmp_path / "tr.csv"), str(tmp_path / "te.csv"), validation=str(tmp_path / "va.csv"),
              model=str(tiny_models["bert"]), checks=["leakage"])
    f = r.get("leakage")
    assert {"test": 5, "validation": [10], "match": "exact"} in f.groups
    assert f.details["validation_exact_rows"] == [10] and f.details["train_exact"] == 0 and 5 in f.rows
