"""Finding 1 and 2 of issue #20: --overwrite deletes only a run's own files, --resume needs a run folder."""
import json

import pytest

from safety_runs import (clone, finished_run, interrupted_run, one_line_error, run_cli,  # noqa: F401
                         safety_data, snapshot)

from tunesmith import run as runmod
from tunesmith.errors import TunesmithError


def _project(root, tiny_models):
    """A user's project folder: data, their own recipe.yaml (the README's name for a config) and notes."""
    proj = root / "proj"
    proj.mkdir()
    from conftest import toy_rows, write_csv

    write_csv(proj / "train.csv", toy_rows())
    (proj / "recipe.yaml").write_text(f"recipe:\n  model: {tiny_models['bert']}\n  epochs: 1\n  audit: false\n"
                                      f"  baselines: false\n")
    (proj / "notes").mkdir()
    (proj / "notes" / "todo.txt").write_text("ask the team about labels")
    return proj


def test_overwrite_refuses_a_project_folder_holding_the_commands_inputs(tiny_models, tmp_path, capsys, monkeypatch):
    proj = _project(tmp_path, tiny_models)
    before = snapshot(tmp_path)
    code, _, err = run_cli(["train", proj / "train.csv", "--config", proj / "recipe.yaml", "--out", proj,
                            "--overwrite"], capsys, monkeypatch)
    line = one_line_error(code, err)
    assert "train.csv" in line or "recipe.yaml" in line, line
    assert snapshot(tmp_path) == before  # nothing deleted, nothing written


def test_overwrite_refuses_a_run_folder_with_a_file_that_is_not_the_runs(finished_run, tmp_path, capsys, monkeypatch):
    run = clone(finished_run[0].path, tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(TunesmithError, match="notes.txt"):
        runmod.prepare_out(run, overwrite=True, resume=False)
    assert snapshot(tmp_path) == before
    # a data file kept inside the run folder is an input of the command: refused by the CLI too
    (run / "notes.txt").unlink()
    from conftest import toy_rows, write_csv

    data = write_csv(run / "data.csv", toy_rows())
    before = snapshot(tmp_path)
    code, _, err = run_cli(["train", data, "--out", run, "--overwrite", "--epochs", "1"], capsys, monkeypatch)
    assert "data.csv" in one_line_error(code, err)
    assert snapshot(tmp_path) == before


def test_a_run_folder_is_known_by_its_marker_not_by_recipe_yaml(finished_run, tmp_path):
    run = clone(finished_run[0].path, tmp_path / "run")
    marker = json.loads((run / runmod.MARKER).read_text())
    assert marker["run_id"] and {"model", "recipe.yaml", "metrics.json", "checkpoint"} <= set(marker["files"])
    # the same folder without the marker is someone's folder: never deleted
    (run / runmod.MARKER).unlink()
    before = snapshot(tmp_path)
    with pytest.raises(TunesmithError, match="not a tunesmith run folder"):
        runmod.prepare_out(run, overwrite=True, resume=False)
    assert snapshot(tmp_path) == before


def test_overwrite_of_a_run_folder_end_to_end(finished_run, safety_data, tiny_models, tmp_path, capsys, monkeypatch):
    run = clone(finished_run[0].path, tmp_path / "run")
    (tmp_path / "beside.txt").write_text("outside the run folder")
    old_id = json.loads((run / runmod.MARKER).read_text())["run_id"]
    code, _, err = run_cli(["train", safety_data, "--model", tiny_models["bert"], "--out", run, "--overwrite",
                            "--epochs", "1", "--batch-size", "16", "--seed", "1", "--keep-checkpoints"],
                           capsys, monkeypatch)
    assert code == 0, err
    marker = json.loads((run / runmod.MARKER).read_text())
    assert marker["run_id"] != old_id and marker["state"] == "finished"
    assert (run / "model" / "config.json").exists() and (run / "metrics.json").exists()
    assert (tmp_path / "beside.txt").read_text() == "outside the run folder"
    # finding 11: --keep-checkpoints keeps the resume state a finished run otherwise drops
    assert (run / "checkpoint" / "last.pt").exists()


@pytest.mark.parametrize("with_data", [False, True])
def test_resume_refuses_an_ordinary_folder(safety_data, tiny_models, tmp_path, capsys, monkeypatch, with_data):
    folder = tmp_path / "some" / "folder"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "recipe.yaml").write_text(f"recipe:\n  train: {safety_data}\n  model: {tiny_models['bert']}\n"
                                        f"  epochs: 1\n  audit: false\n  baselines: false\n")
    before = snapshot(tmp_path)
    args = (["train", safety_data] if with_data else ["train"]) + ["--resume", "--out", folder]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert "not a tunesmith run folder" in one_line_error(code, err)
    assert snapshot(tmp_path) == before
