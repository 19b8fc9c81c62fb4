"""Finding 10 (run-folder part) of issue #20: one line, no traceback, nothing touched."""
import os

from safety_runs import (clone, finished_run, interrupted_run, one_line_error, run_cli,  # noqa: F401
                         safety_data, snapshot)


def test_out_pointing_at_an_existing_file(safety_data, tmp_path, capsys, monkeypatch):
    target = tmp_path / "results.csv"
    target.write_text("a,b\n1,2\n")
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"], ["--resume"]):
        code, _, err = run_cli(["train", safety_data, "--out", target, *extra], capsys, monkeypatch)
        line = one_line_error(code, err)
        assert "results.csv" in line and "file" in line, line
    assert snapshot(tmp_path) == before


def test_out_as_a_symlink_with_overwrite_is_refused_not_followed(finished_run, safety_data, tmp_path, capsys,
                                                                 monkeypatch):
    real = clone(finished_run[0].path, tmp_path / "real")
    link = tmp_path / "link"
    os.symlink(real, link)
    before = snapshot(tmp_path)
    code, _, err = run_cli(["train", safety_data, "--out", link, "--overwrite"], capsys, monkeypatch)
    assert "symbolic link" in one_line_error(code, err)
    assert snapshot(tmp_path) == before


def test_a_corrupt_checkpoint_on_resume_is_one_line_naming_the_file(interrupted_run, tmp_path, capsys, monkeypatch):
    run = clone(interrupted_run, tmp_path / "run")
    last = run / "checkpoint" / "last.pt"
    last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 3])  # cut short, as a full disk or a crash would
    code, _, err = run_cli(["train", "--resume", "--out", run], capsys, monkeypatch)
    assert str(last) in one_line_error(code, err)
