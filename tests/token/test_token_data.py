"""Reading tagged sentences: three formats, three tag schemes normalised to BIO, one line per bad input."""
from __future__ import annotations

import json
import sys

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.tasks.token import data as D


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tokens_jsonl_keeps_words_and_offsets(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", [{"tokens": ["Jane", "lives", "in", "New", "York"],
                                      "tags": ["B-PER", "O", "O", "B-LOC", "I-LOC"]}])
    s = D.read(f).sentences[0]
    assert s.tags == ["B-PER", "O", "O", "B-LOC", "I-LOC"] and s.row == 1
    assert [s.text[a:b] for a, b in s.offsets] == s.tokens
    assert D.detect(f) == "tokens"


def test_conll_skips_docstart_reads_last_column_and_blank_lines(tmp_path):
    f = tmp_path / "a.conll"
    f.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n"
                 "Blackburn NNP I-NP I-PER\n")
    loaded = D.read(f)
    assert [s.tokens for s in loaded.sentences] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert [s.tags for s in loaded.sentences] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert [s.row for s in loaded.sentences] == [3, 7] and loaded.format == "conll" and D.detect(f) == "conll"


def test_spans_become_words_with_bio_tags_and_char_offsets(tmp_path):
    text = "Aspirin 100mg for Jane Doe, in Boston."
    rows = [{"text": text, "entities": [{"start": 0, "end": 7, "label": "DRUG"},
                                        {"start": 8, "end": 11, "label": "DOSE"},  # inside the word 100mg
                                        {"start": 17, "end": 26, "label": "PER"},  # a leading space taken along
                                        {"start": 31, "end": 37, "label": "LOC"}]}]
    s = D.read(jsonl(tmp_path / "a.jsonl", rows)).sentences[0]
    got = [(s.text[s.offsets[a][0]:s.offsets[b - 1][1]], t) for t, a, b in D.entities(s.tags)]
    assert got == [("Aspirin", "DRUG"), ("100", "DOSE"), ("Jane Doe", "PER"), ("Boston", "LOC")]
    assert s.tokens[:4] == ["Aspirin", "100", "mg", "for"] and s.tags[2] == "O"


@pytest.mark.parametrize("row", [
    {"text": "Jane in Boston", "spans": [{"start": 0, "end": 4, "label": "PER"}, {"start": 8, "end": 14, "label": "LOC"}]},
    {"text": "Jane in Boston", "label": [[0, 4, "PER"], [8, 14, "LOC"]]},  # doccano
    {"data": {"text": "Jane in Boston"}, "annotations": [{"result": [  # Label Studio
        {"value": {"start": 0, "end": 4, "labels": ["PER"]}}, {"value": {"start": 8, "end": 14, "labels": ["LOC"]}}]}]},
])
def test_annotation_tool_exports(tmp_path, row):
    f = jsonl(tmp_path / "a.jsonl", [row])
    assert D.detect(f) == "spans"
    assert D.read(f).sentences[0].tags == ["B-PER", "O", "B-LOC"]


def test_detect_leaves_classification_tables_alone(tmp_path):
    assert D.detect(jsonl(tmp_path / "m.jsonl", [{"text": "a b", "label": ["x", "y"]}])) is None
    assert D.detect(jsonl(tmp_path / "s.jsonl", [{"text": "a b", "label": "x"}])) is None
    (tmp_path / "c.csv").write_text("text,label\na,b\n")
    assert D.detect(tmp_path / "c.csv") is None


@pytest.mark.parametrize("tags,scheme,want", [
    (["I-PER", "I-PER", "O", "I-LOC", "B-LOC"], "IOB1", ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]),
    (["S-PER", "O", "B-LOC", "I-LOC", "E-LOC"], "BIOES", ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC"]),
    (["U-PER", "O", "B-LOC", "L-LOC", "O"], "BIOES", ["B-PER", "O", "B-LOC", "I-LOC", "O"]),
    (["B-PER", "O", "I-LOC", "O", "B-LOC"], "BIO", ["B-PER", "O", "B-LOC", "O", "B-LOC"]),  # a BIO slip
    (["B_PER", "I_PER", "O", "O", "O"], "BIO", ["B-PER", "I-PER", "O", "O", "O"]),
])
def test_schemes_normalise_to_bio(tmp_path, tags, scheme, want):
    f = jsonl(tmp_path / "a.jsonl", [{"tokens": list("abcde"), "tags": tags}])
    loaded = D.read(f)
    assert loaded.scheme == scheme and loaded.sentences[0].tags == want


def one_line_error(path, fragment):
    with pytest.raises(TunesmithError) as e:
        D.read(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and fragment in msg, msg
    return msg


def test_bad_inputs_are_one_line_naming_file_and_line(tmp_path):
    ok = {"tokens": ["a"], "tags": ["O"]}
    msg = one_line_error(jsonl(tmp_path / "m.jsonl", [ok, {"tokens": ["a", "b"], "tags": ["O"]}]), "misaligned")
    assert "line 2" in msg
    msg = one_line_error(jsonl(tmp_path / "u.jsonl", [ok, ok, {"tokens": ["a"], "tags": ["PER"]}]), "unknown tag scheme")
    assert "line 3" in msg and "'PER'" in msg
    assert "line 1" in one_line_error(jsonl(tmp_path / "e.jsonl", [{"tokens": ["a", " "], "tags": ["O", "O"]}]),
                                      "token 2 is empty")
    msg = one_line_error(jsonl(tmp_path / "o.jsonl", [{"text": "New York City", "entities": [
        {"start": 0, "end": 8, "label": "LOC"}, {"start": 4, "end": 13, "label": "LOC"}]}]), "overlapping spans")
    assert "line 1" in msg and "'New York'" in msg
    c = tmp_path / "x.conll"
    c.write_text("EU B-ORG\nrejects\n")
    assert "line 2" in one_line_error(c, "no tag")
    one_line_error(jsonl(tmp_path / "r.jsonl", [{"text": "ab", "entities": [{"start": 0, "end": 9, "label": "X"}]}]),
                   "outside the text")
    one_line_error(jsonl(tmp_path / "i.jsonl", [{"tokens": ["a"], "tags": [3]}]), "not a name")


def test_cli_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from tunesmith import cli

    bad = jsonl(tmp_path / "bad.jsonl", [{"tokens": ["a", "b"], "tags": ["O"]}])
    monkeypatch.setattr(sys, "argv", ["tunesmith", "train", str(bad), "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "misaligned" in err and len(err.splitlines()) <= 2, err  # rich may wrap


def test_split_is_seeded_and_by_sentence():
    sents = [D.Sentence([str(i)], ["O"], str(i), [(0, 1)], i) for i in range(50)]
    a, b = D.split(sents, 0.2, 7)
    assert len(b) == 10 and len(a) == 40 and {s.row for s in a} | {s.row for s in b} == set(range(50))
    assert [s.row for s in D.split(sents, 0.2, 7)[1]] == [s.row for s in b]
    assert [s.row for s in D.split(sents, 0.2, 8)[1]] != [s.row for s in b]
