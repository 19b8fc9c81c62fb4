"""More bad input (issue #20, items 10 and 11): one line and a non-zero exit, never a traceback, and no
value silently turned into another (a missing label into a class, a class name into a missing value)."""
from __future__ import annotations

import sys

import pandas as pd
import pytest

from tunesmith import cli
from tunesmith.config import make_recipe
from tunesmith.data.dataset import load_examples

from conftest import make_tiny_model, one_line_error, toy_rows, write_csv


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory):
    import tunesmith

    root = tmp_path_factory.mktemp("run")
    data = write_csv(root / "toy.csv", toy_rows())
    return tunesmith.train(str(data), model=str(tiny_bert), epochs=1, batch_size=32, out=str(root / "run"),
                           audit=False, baselines=False).path


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tunesmith", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# --- item 10: tracebacks instead of one line -------------------------------------------------------

def test_two_row_file_says_how_many_rows_it_needs(tiny_bert, tmp_path, capsys, monkeypatch):
    p = tmp_path / "two.csv"
    p.write_text("text,label\nwhere is my parcel,shipping\nrefund please,billing\n")
    code, _, err = run_cli(["train", p, "--model", tiny_bert, "--out", tmp_path / "r"], capsys, monkeypatch)
    msg = one_line_error(code, err)
    assert "two.csv" in msg and "2 rows" in msg and "at least 3" in msg, msg
    assert not (tmp_path / "r").exists()


def test_three_rows_train_end_to_end(tiny_bert, tmp_path, capsys, monkeypatch):
    """The smallest file the message allows must then work: audit, baselines, calibration on 1-row parts."""
    p = tmp_path / "three.csv"
    p.write_text("text,label\nwhere is my parcel,shipping\nrefund please,billing\nparcel lost,shipping\n")
    code, out, err = run_cli(["train", p, "--model", tiny_bert, "--epochs", "1", "--out", tmp_path / "r"],
                             capsys, monkeypatch)
    assert code == 0, err[-3000:]
    assert (tmp_path / "r" / "metrics.json").exists()


def test_predict_out_into_a_missing_folder_creates_it(finished_run, tmp_path, capsys, monkeypatch):
    data = write_csv(tmp_path / "new.csv", [{"text": "where is my parcel"}, {"text": "refund my invoice"}])
    dest = tmp_path / "preds" / "today" / "p.csv"
    code, out, err = run_cli(["predict", finished_run, data, "--out", dest], capsys, monkeypatch)
    assert code == 0, err
    assert list(pd.read_csv(dest)["text"]) == ["where is my parcel", "refund my invoice"]
    assert "p.csv" in out
    assert [f.name for f in dest.parent.iterdir()] == ["p.csv"], "no temporary file left beside it"


def test_predict_out_refusals_come_before_the_model_loads(finished_run, tmp_path, capsys, monkeypatch):
    from tunesmith import api

    data = write_csv(tmp_path / "new.csv", [{"text": "where is my parcel"}])
    monkeypatch.setattr(api.Predictor, "load", lambda *a, **k: pytest.fail("loaded the model before refusing"))
    existing = tmp_path / "p.csv"
    existing.write_text("mine\n")
    msg = one_line_error(*run_cli(["predict", finished_run, data, "--out", existing], capsys, monkeypatch)[::2])
    assert "p.csv" in msg and "--overwrite" in msg and existing.read_text() == "mine\n"
    msg = one_line_error(*run_cli(["predict", finished_run, data, "--out", tmp_path], capsys, monkeypatch)[::2])
    assert str(tmp_path) in msg and "folder" in msg
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    msg = one_line_error(*run_cli(["predict", finished_run, data, "--out", blocker / "p.csv"], capsys,
                                  monkeypatch)[::2])
    assert "afile" in msg and "not a folder" in msg and blocker.read_text() == "x"
    msg = one_line_error(*run_cli(["predict", finished_run, data, "--out", tmp_path / "p.xlsx"], capsys,
                                  monkeypatch)[::2])
    assert ".xlsx" in msg


# --- item 11: a missing label is not a class, a class is not a missing label ------------------------

def _labelled(tmp_path, name, extra: list[tuple[str, str]]):
    rows = [(f"text {c} {i}", c) for c in ("a", "b", "NA", "None", "null", "N/A") for i in range(6)] + extra
    p = tmp_path / name
    p.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows))
    return p


def test_nan_or_empty_labels_are_dropped_and_counted_but_na_is_a_class(tmp_path):
    from tunesmith.pipeline import prepare_data

    missing = [("no label 1", ""), ("no label 2", "NaN"), ("no label 3", "nan"), ("no label 4", " NaN ")]
    p = _labelled(tmp_path, "train.csv", missing)
    loaded = load_examples(p)
    assert loaded.dropped["missing_label"] == 4
    assert sorted(set(loaded.examples.labels)) == ["N/A", "NA", "None", "a", "b", "null"]  # real class names
    assert not any(t.startswith("no label") for t in loaded.examples.texts)

    test = _labelled(tmp_path, "test.csv", [("unlabelled", "nan")])
    lines = []
    labels = prepare_data(make_recipe(train=str(p), test=str(test)),
                          on_event=lambda kind, **kw: lines.append(kw.get("message", ""))).labels
    assert labels == ["N/A", "NA", "None", "a", "b", "null"]
    said = [l for l in lines if l.startswith("dropped")]
    assert any("4 rows" in l and "train.csv" in l and "missing label" in l and "NaN" in l for l in said), said
    assert any("1 row" in l and "test.csv" in l for l in said), said


def test_nan_label_in_jsonl_is_missing_too(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "x", "label": "a"}\n{"text": "y", "label": null}\n{"text": "z", "label": NaN}\n'
                 '{"text": "w", "label": "NaN"}\n{"text": "v", "label": "None"}\n')
    loaded = load_examples(p)
    assert loaded.dropped["missing_label"] == 3 and loaded.examples.labels == ["a", "None"]


@pytest.mark.parametrize("name, header", [("dup.csv", "text,label,label"), ("dup.tsv", "text\tlabel\tlabel")])
def test_duplicated_column_is_refused(name, header, tmp_path, capsys, monkeypatch):
    sep = "\t" if name.endswith(".tsv") else ","
    p = tmp_path / name
    p.write_text(header + "\n" + "".join(sep.join([f"t{i}", "a", "b"]) + "\n" for i in range(10)))
    msg = one_line_error(*run_cli(["train", p, "--out", tmp_path / "r"], capsys, monkeypatch)[::2])
    assert name in msg and "'label'" in msg and "2 times" in msg, msg
    assert not (tmp_path / "r").exists()


def test_duplicated_json_key_and_case_twins_are_refused(tmp_path, capsys, monkeypatch):
    from tunesmith.errors import TunesmithError

    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "x", "label": "a", "label": "b"}\n')
    with pytest.raises(TunesmithError, match=r"d\.jsonl: line 1 .*'label'"):
        load_examples(p)
    p = tmp_path / "twins.csv"
    p.write_text("text,Label,label\n" + "".join(f"t{i},a,b\n" for i in range(10)))
    with pytest.raises(TunesmithError, match=r"twins\.csv: .*'Label'.*'label'.*--label-column"):
        load_examples(p)
    assert set(load_examples(p, label_column="label").examples.labels) == {"b"}  # named: no doubt left
