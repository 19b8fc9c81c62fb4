"""Every bad input: one clear line naming the file/row/column, exit code 2, no traceback, nothing lost."""
import sys

import pandas as pd
import pytest

from tunesmith import cli


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tunesmith", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def one_line_error(code, err):
    assert code == 2, err
    assert "Traceback" not in err
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, err  # progress/info lines may precede it; the error itself is one line
    return errors[0]


def train_error(tmp_path, name, content, capsys, monkeypatch) -> str:
    """Write `content` (text or bytes) to tmp_path/name, train on it, return the one error line."""
    p = tmp_path / name
    p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    code, _, err = run_cli(["train", p, "--out", tmp_path / "r"], capsys, monkeypatch)
    return one_line_error(code, err)


def test_missing_file(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["train", tmp_path / "nope.csv", "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "nope.csv" in one_line_error(code, err) and "not found" in err
    assert not (tmp_path / "r").exists()


def test_unknown_column_lists_columns(toy_csv, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["train", toy_csv, "--text-column", "body", "--out", tmp_path / "r"], capsys, monkeypatch)
    msg = one_line_error(code, err)
    assert "'body'" in msg and "text, label" in msg


def test_undetectable_columns(tmp_path, capsys, monkeypatch):
    p = tmp_path / "d.csv"
    pd.DataFrame({"a": ["x", "y"], "b": ["1", "2"]}).to_csv(p, index=False)
    code, _, err = run_cli(["train", p, "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "--text-column" in one_line_error(code, err)


def test_empty_file(tmp_path, capsys, monkeypatch):
    assert "empty" in train_error(tmp_path, "empty.csv", "", capsys, monkeypatch)


def test_no_rows_left_after_dropping_empty_texts(tmp_path, capsys, monkeypatch):
    msg = train_error(tmp_path, "blank.csv", "text,label\n,a\n   ,b\n", capsys, monkeypatch)
    assert "no rows left" in msg and "2 empty text" in msg


def test_single_class(tmp_path, capsys, monkeypatch):
    p = tmp_path / "one.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": ["a"] * 10}).to_csv(p, index=False)
    code, _, err = run_cli(["train", p, "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "single class" in one_line_error(code, err)


def test_unseen_test_label_names_row(toy_csv, tmp_path, capsys, monkeypatch):
    t = tmp_path / "test.csv"
    pd.DataFrame({"text": ["a refund please", "no idea"], "label": ["billing", "weather"]}).to_csv(t, index=False)
    code, _, err = run_cli(["train", toy_csv, "--test", t, "--out", tmp_path / "r"], capsys, monkeypatch)
    msg = one_line_error(code, err)
    assert "row 1" in msg and "'weather'" in msg


def test_undecodable_bytes_names_row(tmp_path, capsys, monkeypatch):
    msg = train_error(tmp_path, "latin.csv", b"text,label\nhello,a\ncaf\xe9 au lait,b\n", capsys, monkeypatch)
    assert "line 3" in msg and "data row 1" in msg and "UTF-8" in msg


def test_unknown_model_name(toy_csv, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["train", toy_csv, "--model", "minilmx", "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "unknown model 'minilmx'" in one_line_error(code, err)


def test_hub_id_offline_fails_at_once(toy_csv, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["train", toy_csv, "--model", "someorg/somemodel", "--out", tmp_path / "r"],
                           capsys, monkeypatch)
    msg = one_line_error(code, err)
    assert "someorg/somemodel" in msg and "local folder" in msg


def test_max_length_above_model_limit(toy_csv, tiny_models, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["train", toy_csv, "--model", tiny_models["bert"], "--max-length", "4096",
                            "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "--max-length 4096" in one_line_error(code, err) and "128" in err


def test_existing_run_folder_refused_and_kept(toy_csv, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    import tunesmith.audit.training as audit_training  # refused before the audit's slow work, not after it

    monkeypatch.setattr(audit_training, "audit_for_training", lambda *a, **k: pytest.fail("audit ran first"))
    code, _, err = run_cli(["train", toy_csv, "--out", out], capsys, monkeypatch)
    assert "already exists" in one_line_error(code, err)
    # --overwrite still refuses a folder that is not a tunesmith run: nothing the user had is lost
    code, _, err = run_cli(["train", toy_csv, "--out", out, "--overwrite"], capsys, monkeypatch)
    assert "not a tunesmith run folder" in one_line_error(code, err)
    assert (out / "precious.txt").read_text() == "keep me"


def test_bad_strategy_and_recipe_values(toy_csv, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["train", toy_csv, "--strategy", "freeze", "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "strategy" in one_line_error(code, err)
    code, _, err = run_cli(["train", toy_csv, "--val-fraction", "1.5", "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "val_fraction" in one_line_error(code, err)


def test_bad_jsonl_line(tmp_path, capsys, monkeypatch):
    bad = '{"text": "a", "label": "x"}\n{"text": "b", "label": \n'
    assert "line 2" in train_error(tmp_path, "d.jsonl", bad, capsys, monkeypatch)


def test_disk_full_anywhere_is_one_line_not_a_traceback(toy_csv, tmp_path, capsys, monkeypatch):
    import errno

    from tunesmith import api

    def full(*a, **k):  # e.g. safetensors writing the model when the disk fills
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / "model" / "model.safetensors"))

    monkeypatch.setattr(api, "train", full)
    code, _, err = run_cli(["train", toy_csv, "--out", tmp_path / "r"], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in err
    line = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and "no space left" in line[0] and "model.safetensors" in line[0]
