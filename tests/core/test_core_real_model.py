"""Integration: the built-in model on real data from ../shared/data."""
import json

import pandas as pd
import pytest

import tunesmith

pytestmark = pytest.mark.slow


def test_sms_spam_1000_train_scores_095_on_500_heldout(shared_data, tmp_path):
    from transformers import pipeline

    df = pd.read_csv(shared_data / "sms_spam" / "sms_spam.csv").sample(1500, random_state=0)
    df.iloc[:1000].to_csv(tmp_path / "train.csv", index=False)
    df.iloc[1000:].to_csv(tmp_path / "test.csv", index=False)
    run = tunesmith.train(str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), out=str(tmp_path / "run"),
                          epochs=2, audit=False, baselines=False)
    assert run.metrics["test"]["n"] == 500
    assert run.metrics["test"]["accuracy"] >= 0.95
    # the saved folder works without tunesmith: plain pipeline, real label names
    clf = pipeline("text-classification", model=str(run.path / "model"))
    out = clf(["WINNER!! You have won a FREE prize, call 09061701461 now to claim", "ok see you at 5 then"])
    assert [o["label"] for o in out] == ["spam", "ham"]


def test_demo_command_runs_end_to_end(tmp_path, monkeypatch, capsys):
    import sys

    from tunesmith import cli

    monkeypatch.setattr(sys, "argv", ["tunesmith", "demo", "--out", str(tmp_path / "demo")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "before / after" in out and "fine-tuned" in out and "majority class" in out
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert len(m["labels"]) == 9 and m["test"]["n"] >= 100
    assert m["test"]["macro_f1"] > m["baselines"]["majority"]["macro_f1"]
    # what the demo is for: the fine-tune beats the linear probe on the frozen model (issue #15)
    assert m["test"]["macro_f1"] > m["baselines"]["few_shot_all"]["macro_f1"]
