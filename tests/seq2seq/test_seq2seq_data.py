"""Reading pairs: the column names a seq2seq file may use, --task auto taking only what no other task could
mean, and one-line errors naming file, row and column."""
from __future__ import annotations

import pandas as pd
import pytest

from tunesmith.config import make_recipe
from tunesmith.errors import TunesmithError
from tunesmith.pipeline import choose_task
from tunesmith.tasks.seq2seq import data as s2s_data

from conftest import SHARED


def _csv(tmp_path, rows, name="d.csv"):
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def _auto(path, **kw):
    cls, recipe = choose_task(make_recipe(train=str(path), **kw), lambda *a, **k: None)
    return cls.name if recipe.task == "auto" else recipe.task


@pytest.mark.parametrize("src,tgt", s2s_data.PAIRS)
def test_every_known_column_pair_is_read_and_detected(tmp_path, src, tgt):
    p = _csv(tmp_path, [{src.upper() if src == "src" else src: f"a {i}", tgt: f"b {i}"} for i in range(3)])
    loaded = s2s_data.read(p)
    assert loaded.pairs.sources == ["a 0", "a 1", "a 2"] and loaded.pairs.targets[2] == "b 2"
    assert loaded.pairs.rows == [1, 2, 3]
    assert _auto(p) == "seq2seq"


def test_auto_leaves_other_tasks_their_data(tmp_path):
    # alpaca (instruction, input, output) is sft's; a text and a label column are the classifier's
    alpaca = _csv(tmp_path, [{"instruction": "x", "input": "y", "output": "z"}] * 3, "a.csv")
    assert _auto(alpaca) == "sft"
    labelled = _csv(tmp_path, [{"document": "x", "summary": "y", "label": "l"}] * 3, "b.csv")
    assert s2s_data.detect(labelled) is None and _auto(labelled) != "seq2seq"
    named = _csv(tmp_path, [{"source": "x", "target": "y"}] * 3, "c.csv")
    assert s2s_data.detect(named, text_column="source") is None  # --text-column: a classifier is meant


def test_explicit_columns(tmp_path):
    p = _csv(tmp_path, [{"de": "hallo", "en": "hello", "x": 1}])
    loaded = s2s_data.read(p, "de", "en")
    assert loaded.pairs.targets == ["hello"] and loaded.columns == {"source": "de", "target": "en"}
    with pytest.raises(TunesmithError, match="no column 'fr'"):
        s2s_data.read(p, "de", "fr")


@pytest.mark.parametrize("rows,where", [
    ([{"source": "a", "target": "b"}, {"source": "c", "target": ""}], "row 2, column 'target' is empty"),
    ([{"source": "  ", "target": "b"}], "row 1, column 'source' is empty"),
    ([{"text": "a", "summary_x": "b"}], "no source/target columns; columns are text, summary_x"),
])
def test_bad_input_is_one_line_naming_file_row_and_column(tmp_path, rows, where):
    p = _csv(tmp_path, rows)
    with pytest.raises(TunesmithError) as e:
        s2s_data.read(p)
    msg = str(e.value)
    assert where in msg and str(p) in msg and "\n" not in msg


def test_split_holds_out_a_share_and_keeps_every_pair(tmp_path):
    pairs = s2s_data.read(_csv(tmp_path, [{"source": f"s{i}", "target": f"t{i}"} for i in range(50)])).pairs
    a, b = s2s_data.split(pairs, 0.2, seed=3)
    assert len(b) == 10 and sorted(a.rows + b.rows) == list(range(1, 51))
    assert s2s_data.split(pairs, 0.2, seed=3)[1].rows == b.rows  # a pure function of the seed


def test_the_real_tatoeba_pairs_read():
    loaded = s2s_data.read(SHARED / "pairs" / "deu_eng_train.csv")
    assert len(loaded.pairs) == 800 and loaded.columns == {"source": "source", "target": "target"}
    assert any("ä" in s or "ü" in s or "ö" in s for s in loaded.pairs.sources)
