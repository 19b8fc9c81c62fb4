"""Embedding data: the form told by the columns, --task auto vs --task embedding, one-line errors naming the
file, row and column."""
from __future__ import annotations

import pytest

from tunesmith.config import make_recipe
from tunesmith.errors import TunesmithError
from tunesmith.pipeline import choose_task
from tunesmith.tasks.embedding import data as D

from emb_runs import write_csv


def _task(path, **kw):
    return choose_task(make_recipe(train=str(path), **kw), lambda *a, **k: None)[0].name


@pytest.mark.parametrize("cols, kind", [
    (["anchor", "positive"], "pairs"), (["query", "answer"], "pairs"), (["question", "document"], "pairs"),
    (["anchor", "positive", "negative"], "triplets"), (["sentence1", "sentence2", "score"], "scored")])
def test_columns_decide_the_form_and_auto_detects_it(tmp_path, cols, kind):
    row = {c: ("3.5" if c == "score" else f"{c} text") for c in cols}
    f = write_csv(tmp_path / "d.csv", [row, row])
    assert D.detect(f) == kind and _task(f) == "embedding"
    assert D.read(f).examples.kind == kind


def test_text_label_stays_classification_unless_forced(tmp_path):
    f = write_csv(tmp_path / "d.csv", [{"text": "a b", "label": "x"}, {"text": "c d", "label": "y"}])
    assert D.detect(f) is None and _task(f) == "single_label"
    assert _task(f, task="embedding") == "embedding"
    ex = D.read(f).examples
    assert ex.kind == "labelled" and ex.label == ["x", "y"]


def test_translation_columns_are_pairs_only_when_asked(shared_data):
    f = shared_data / "pairs" / "deu_eng_test.csv"
    assert D.detect(f) is None
    ex = D.read(f).examples
    assert ex.kind == "pairs" and len(ex) == 200 and ex.b[0] == "Damn! It's not bad!"


def test_sts_reads_as_scored_pairs(shared_data):
    ex = D.read(shared_data / "sts" / "test.csv").examples
    assert ex.kind == "scored" and len(ex) == 1379 and ex.score[0] == 2.5 and ex.rows[-1] == 1379


@pytest.mark.parametrize("rows, where", [
    ([{"anchor": "a", "positive": "b"}, {"anchor": "c", "positive": " "}], "row 2, column 'positive' is empty"),
    ([{"sentence1": "a", "sentence2": "b", "score": "high"}], "row 1, column 'score' is 'high', not a number"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": None}], "row 2, column 'label' is empty")])
def test_bad_rows_are_one_line_naming_file_row_and_column(tmp_path, rows, where):
    f = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(TunesmithError) as e:
        D.read(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: ") and where in msg and "\n" not in msg


def test_unknown_columns_say_what_is_expected(tmp_path):
    f = write_csv(tmp_path / "x.csv", [{"foo": "a", "bar": "b"}])
    with pytest.raises(TunesmithError, match="expected anchor/positive"):
        D.read(f)


def test_split_keeps_an_anchor_on_one_side():
    ex = D.Examples("pairs", [f"q{i % 10}" for i in range(50)], [f"p{i}" for i in range(50)], rows=list(range(1, 51)))
    keep, held = D.split(ex, 0.2, seed=0)
    assert len(keep) + len(held) == 50 and not set(keep.a) & set(held.a) and len(set(held.a)) == 2
