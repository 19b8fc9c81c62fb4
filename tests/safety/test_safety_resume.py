"""Finding 6 of issue #20: --resume checks the recorded data fingerprints and training settings first."""
import pandas as pd
import pytest

from safety_runs import clone, finished_run, interrupted_run, safety_data, snapshot  # noqa: F401

import tunesmith
from tunesmith import api
from tunesmith.errors import TunesmithError
from tunesmith.train import loop


def _other_data(safety_data, path):
    df = pd.read_csv(safety_data)
    df.loc[0, "label"] = "login" if df.loc[0, "label"] != "login" else "billing"
    df.to_csv(path, index=False)
    return path


def test_resume_with_another_data_file_is_refused_before_anything_is_written(interrupted_run, safety_data, tiny_models,
                                                                            tmp_path):
    run = clone(interrupted_run, tmp_path / "run")
    other = _other_data(safety_data, tmp_path / "other.csv")
    before = snapshot(run)
    with pytest.raises(TunesmithError, match=r"train data.*sha256") as e:
        tunesmith.train(str(other), resume=True, out=str(run), model=str(tiny_models["bert"]), epochs=2,
                        lr=1e-3, batch_size=16, seed=0, patience=0)
    assert "\n" not in str(e.value)
    assert snapshot(run) == before  # recipe.yaml not rewritten to name the new file


def test_resume_after_the_data_changed_in_place_is_refused(interrupted_run, tmp_path):
    import yaml

    run = clone(interrupted_run, tmp_path / "run")
    doc = yaml.safe_load((run / "recipe.yaml").read_text())
    data = _other_data(doc["recipe"]["train"], tmp_path / "copy.csv")
    doc["recipe"]["train"] = str(data)  # the run's own recipe names a file whose bytes have changed since
    (run / "recipe.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TunesmithError, match="train data"):
        tunesmith.train(resume=True, out=str(run))


@pytest.mark.parametrize("change", [{"strategy": "head"}, {"lr": 5e-4}, {"epochs": 3}, {"seed": 7},
                                    {"max_length": 64}, {"batch_size": 8}])
def test_resume_with_other_training_settings_is_refused(interrupted_run, tmp_path, change):
    run = clone(interrupted_run, tmp_path / "run")
    before = snapshot(run)
    name = next(iter(change))
    with pytest.raises(TunesmithError, match=name) as e:
        tunesmith.train(resume=True, out=str(run), **change)
    assert "\n" not in str(e.value)
    assert snapshot(run) == before


def test_resuming_a_finished_run_says_so_and_does_not_train(finished_run, tmp_path, monkeypatch):
    run = clone(finished_run[0].path, tmp_path / "run")
    before = snapshot(run)
    monkeypatch.setattr(loop, "fit", lambda *a, **k: pytest.fail("a finished run was trained again"))
    said = []
    res = tunesmith.train(resume=True, out=str(run), on_event=lambda kind, **kw: said.append(kw.get("message", "")))
    assert any("finished" in m for m in said), said
    assert res.metrics["test"] == finished_run[0].metrics["test"]
    assert snapshot(run) == before
