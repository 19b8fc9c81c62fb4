"""`tunesmith audit` and `tunesmith train` on embedding pairs: the pair checks (audit/pairs.py), with planted
problems found at their 1-based data rows, --strict, and the findings in the run's report."""
from __future__ import annotations

import json

import pytest

import tunesmith
from tunesmith.errors import TunesmithError

from conftest import one_line_error, run_cli
from emb_runs import pairs_run, toy_pairs, write_csv  # noqa: F401  (pairs_run: a fixture)


def _checks(path):
    return {c["name"]: c for c in json.loads(path.read_text())["checks"]}


def _planted(tmp_path):
    rows = [{"anchor": f"query number {i}", "positive": f"the answer to question {i}"} for i in range(30)]
    rows[2]["positive"] = "\u200b\u200b"                        # row 3: zero-width spaces only (strip keeps them)
    rows[4]["positive"] = "?!"                                  # row 5: punctuation only
    rows[6] = dict(rows[5])                                     # row 7: repeats row 6
    rows[8]["positive"] = rows[8]["anchor"]                     # row 9: anchor == positive
    rows[10]["anchor"] = rows[11]["anchor"]                     # rows 11, 12: one anchor, two positives
    rows[12]["positive"] = "word " * 40                         # row 13: over --max-length 16
    test = [{"anchor": f"another query {i}", "positive": f"another answer {i}"} for i in range(10)]
    test[3] = dict(rows[20])                                    # test row 4: a training pair
    test[7]["anchor"] = rows[25]["anchor"]                      # test row 8: a training anchor, new positive
    return write_csv(tmp_path / "train.csv", rows), write_csv(tmp_path / "test.csv", test)


def test_audit_command_finds_planted_pair_problems(tiny_models, tmp_path, capsys, monkeypatch):
    a, b = _planted(tmp_path)
    code, out, err = run_cli(["audit", a, "--test", b, "--model", tiny_models["bert"], "--max-length", "16",
                              "--json", tmp_path / "audit.json"], capsys, monkeypatch)
    assert code == 0, err
    c = _checks(tmp_path / "audit.json")
    assert c["empty_sides"]["severity"] == "error" and c["empty_sides"]["rows"] == [3, 5]
    assert c["empty_sides"]["details"]["invisible"] == {"positive": [3]}
    assert c["empty_sides"]["details"]["punctuation"] == {"positive": [5]}
    assert c["duplicate_pairs"]["rows"] == [7] and c["duplicate_pairs"]["severity"] == "warning"
    assert c["identical_sides"]["rows"] == [9]
    # the repeated pair (rows 6, 7) is one anchor with one positive; rows 11 and 12 share an anchor
    assert c["one_to_many"]["rows"] == [11, 12] and c["one_to_many"]["severity"] == "ok"  # informational
    assert c["pair_leakage"]["severity"] == "error" and c["pair_leakage"]["rows"] == [4]
    assert c["anchor_leakage"]["rows"] == [4, 8] and c["anchor_leakage"]["details"]["share"] == 0.2
    t = c["truncated"]
    assert t["rows"] == [13] and t["details"]["counted"].endswith("tokenizer") and t["details"]["max_length"] == 16
    assert c["truncated_test"]["count"] == 0
    assert "length_ratio" not in c and "scores" not in c  # seq2seq's and scored pairs' checks only
    assert "pair_leakage" in out and "near duplicates" not in out  # the pair checks, not the row audit's

    code, _, err = run_cli(["audit", a, "--test", b, "--model", tiny_models["bert"], "--strict"], capsys,
                           monkeypatch)
    assert code == 1, err  # errors (the invisible positive, the leaked pair) fail CI
    code, _, err = run_cli(["audit", a, "--model", tiny_models["bert"], "--fix", tmp_path / "f.csv"], capsys,
                           monkeypatch)
    assert "--fix" in one_line_error(code, err) and not (tmp_path / "f.csv").exists()


def test_clean_pairs_pass_strict(tiny_models, tmp_path, capsys, monkeypatch):
    rows = [{"anchor": f"query number {i}", "positive": f"the answer to question {i}"} for i in range(30)]
    a = write_csv(tmp_path / "train.csv", rows)
    code, _, err = run_cli(["audit", a, "--model", tiny_models["bert"], "--strict", "--json", tmp_path / "a.json"],
                           capsys, monkeypatch)
    assert code == 0, err
    assert all(c["severity"] == "ok" for c in _checks(tmp_path / "a.json").values())


def test_scored_pairs_range_and_constant_scores(tiny_models, tmp_path, capsys, monkeypatch):
    rows = [{"sentence1": f"a cat sat on mat {i}", "sentence2": f"a dog lay on rug {i}", "score": 2.5}
            for i in range(20)]
    a = write_csv(tmp_path / "flat.csv", rows)
    code, _, err = run_cli(["audit", a, "--model", tiny_models["bert"], "--json", tmp_path / "flat.json"], capsys,
                           monkeypatch)
    assert code == 0, err
    s = _checks(tmp_path / "flat.json")["scores"]
    assert s["severity"] == "error" and s["details"]["train"] == {"min": 2.5, "max": 2.5, "distinct": 1}

    for i, r in enumerate(rows):
        r["score"] = i % 6
    a = write_csv(tmp_path / "scored.csv", rows)
    code, _, err = run_cli(["audit", a, "--model", tiny_models["bert"], "--json", tmp_path / "scored.json"], capsys,
                           monkeypatch)
    s = _checks(tmp_path / "scored.json")["scores"]
    assert code == 0 and s["severity"] == "ok" and s["details"]["train"]["max"] == 5


def test_triplet_negative_equal_to_its_positive(tiny_models, tmp_path, capsys, monkeypatch):
    rows = [{"anchor": f"query {i}", "positive": f"answer {i}", "negative": f"other {i}"} for i in range(20)]
    rows[4]["negative"] = rows[4]["positive"]
    a = write_csv(tmp_path / "trip.csv", rows)
    b = write_csv(tmp_path / "test.csv", [{"anchor": "q", "positive": "p", "negative": "n"}])
    code, _, err = run_cli(["audit", a, "--test", b, "--model", tiny_models["bert"], "--json", tmp_path / "t.json"],
                           capsys, monkeypatch)
    c = _checks(tmp_path / "t.json")["identical_sides"]
    assert code == 0 and c["rows"] == [5] and c["details"]["negative_equals_anchor_or_positive"] == 1


def test_train_strict_refuses_before_the_model_loads(tiny_models, tmp_path):
    a, b = _planted(tmp_path)
    with pytest.raises(TunesmithError, match=r"--strict and the audit found errors: empty_sides \(2 rows, e\.g\. 3, 5\)"
                                             r", pair_leakage \(1 rows, e\.g\. 4\)"):
        tunesmith.train(a, test=b, model=str(tiny_models["bert"]), strict=True, bf16="off", out=str(tmp_path / "r"))
    assert not (tmp_path / "r" / "model").exists()


def test_run_report_shows_the_pair_audit(pairs_run):
    names = {c["name"]: c for c in pairs_run.metrics["audit"]}
    # toy_pairs draws 120 of 64 words x 4 fillers: repeats are certain, and anchors with several positives
    assert names["duplicate_pairs"]["severity"] == "warning" and names["duplicate_pairs"]["count"] > 0
    assert names["one_to_many"]["count"] > 0
    full = json.loads((pairs_run.path / "audit.json").read_text())
    assert {c["name"] for c in full["checks"]} == set(names)
    page = (pairs_run.path / "report.html").read_text()
    assert "Data audit" in page and "duplicate_pairs" in page and "weighs the pair double" in page
