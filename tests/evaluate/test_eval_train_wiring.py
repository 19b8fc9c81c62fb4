"""api.train on tiny models: every evaluation piece lands in metrics.json and the run folder."""
import json

import pandas as pd
import pytest

import tunesmith
from tunesmith.errors import TunesmithError


@pytest.fixture
def region_csv(toy_csv, tmp_path):
    df = pd.read_csv(toy_csv)
    df["region"] = ["eu", "us", "apac"] * (len(df) // 3)
    df.to_csv(tmp_path / "toy_region.csv", index=False)
    return tmp_path / "toy_region.csv"


def test_train_writes_evaluation_for_encoder(tiny_models, region_csv, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    sts = tmp_path / "sts.csv"
    sts.write_text("".join(open(shared_data / "sts" / "test.csv").readlines()[:41]))
    run = tunesmith.train(str(region_csv), model=str(tiny_models["bert"]), epochs=2, lr=1e-3, batch_size=16,
                          val_fraction=0.35, slice_column="region", retention_data=str(sts), out=str(tmp_path / "r"))
    m = json.loads((run.path / "metrics.json").read_text())
    assert set(m["baselines"]) == {"majority", "zero_shot", "few_shot_8", "few_shot_all"}
    for b in m["baselines"].values():
        assert set(b) >= set(m["test"]) - {"loss"} | {"ci95"}
    lo, hi = m["test"]["ci95"]["macro_f1"]
    assert lo <= m["test"]["macro_f1"] <= hi
    assert set(m["per_class"]) == set(m["labels"]) and len(m["confusion"]) == 3
    assert sum(map(sum, m["confusion"])) == m["test"]["n"]
    assert m["comparison"]["baseline"] in m["baselines"] and len(m["comparison"]["ci95"]) == 2
    assert m["calibration"]["fitted_on"] == "validation" and m["calibration"]["ece_after"] <= m["calibration"]["ece_before"] + 1e-9
    assert json.loads((run.path / "model" / "tunesmith.json").read_text())["temperature"] == m["calibration"]["temperature"]
    assert set(m["slices"]["slices"]) == {"eu", "us", "apac"} and "gap" in m["slices"]
    assert m["retention"]["kind"] == "sts_spearman" and m["retention"]["n"] == 40
    assert "overfitting" in m and isinstance(m["overfitting"]["flag"], bool)
    assert "baseline" in m["verdict"] and "similarity" in m["verdict"]
    assert (run.path / "report.html").exists() and (run.path / "MODEL_CARD.md").exists()


def test_train_decoder_skips_zero_shot_and_reports_drift(tiny_models, toy_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    run = tunesmith.train(str(toy_csv), model=str(tiny_models["gpt2"]), epochs=1, lr=1e-3, batch_size=16,
                          out=str(tmp_path / "g"))
    m = run.metrics
    assert "decoder" in m["baselines"]["zero_shot"]["skipped"]
    assert m["baselines"]["few_shot_all"]["n"] == m["test"]["n"]
    assert m["retention"]["kind"] == "linear_cka" and 0.0 < m["retention"]["cka"] <= 1.0 + 1e-6
    assert "not fitted" in m["calibration"]["note"]  # 10 validation rows are too few to fit a temperature


def test_unknown_slice_column_fails_before_training(tiny_models, toy_csv, tmp_path):
    with pytest.raises(TunesmithError, match="no column 'region'"):
        tunesmith.train(str(toy_csv), model=str(tiny_models["bert"]), slice_column="region", out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
