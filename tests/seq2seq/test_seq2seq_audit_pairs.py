"""`tunesmith audit` and `tunesmith train` on source/target pairs: the pair checks (audit/pairs.py) with the
seq2seq severities (one source, several targets: a warning; the share of target == source), the length-ratio
rule, leakage counted against train + validation, and the findings in the run's report.
(Not test_audit_pairs.py: tests/embedding has that name, and test modules here share one namespace.)"""
from __future__ import annotations

import json

from conftest import run_cli
from s2s_runs import s2s_run, toy_pairs, write_pairs  # noqa: F401  (s2s_run: a fixture)


def _checks(path):
    return {c["name"]: c for c in json.loads(path.read_text())["checks"]}


def _rows(n=120):
    return [{"source": f"der satz nummer {i} ist hier", "target": f"the sentence number {i} is here"} for i in range(n)]


def test_audit_command_on_source_target_pairs(tiny_models, tmp_path, capsys, monkeypatch):
    rows = _rows()
    rows[1]["target"] = rows[1]["source"]                      # row 2: target == source
    rows[3]["source"] = rows[4]["source"]                      # rows 4, 5: one source, two targets
    rows[7]["target"] = "ok"                                   # row 8: far shorter than any other
    rows[9]["target"] = rows[9]["target"] * 20                 # row 10: far longer (and over --max-length 24)
    test = [{"source": f"ein anderer satz {i}", "target": f"another sentence {i}"} for i in range(20)]
    test[5] = dict(rows[30])                                   # test row 6: a training pair
    test[9]["source"] = rows[40]["source"]                     # test row 10: a training source, another target
    test[12]["target"] = test[12]["source"]                    # test row 13: target == source
    test[15]["target"] = "x"                                   # test row 16: far shorter than its source
    a, b = write_pairs(tmp_path / "train.csv", rows), write_pairs(tmp_path / "test.csv", test)
    code, out, err = run_cli(["audit", a, "--test", b, "--model", tiny_models["bert"], "--max-length", "24",
                              "--json", tmp_path / "audit.json"], capsys, monkeypatch)
    assert code == 0, err
    c = _checks(tmp_path / "audit.json")
    ident = c["identical_sides"]
    assert ident["rows"] == [2] and ident["details"] == {"share": round(1 / 120, 4), "test_share": 0.05}
    assert "copy_source baseline" in ident["fix"] and "0.8% of training pairs" in ident["fix"]
    assert c["one_to_many"]["severity"] == "warning" and c["one_to_many"]["rows"] == [4, 5]
    lr = c["length_ratio"]
    assert lr["severity"] == "warning" and lr["rows"] == [8, 10]  # the rule is the data's own: no other row
    lo, hi = lr["details"]["bounds"]
    assert lo < 1 < hi and c["length_ratio_test"]["rows"] == [16]
    assert c["pair_leakage"]["rows"] == [6] and c["source_leakage"]["rows"] == [6, 10]
    assert c["truncated"]["rows"] == [10] and c["truncated"]["details"]["target"]["over"] == 1
    assert "anchor_leakage" not in c and "scores" not in c
    assert "length_ratio" in out

    code, _, err = run_cli(["audit", a, "--test", b, "--model", tiny_models["bert"], "--strict"], capsys,
                           monkeypatch)
    assert code == 1, err  # the leaked pair is an error


def test_audit_without_test_counts_validation_as_train(tiny_models, tmp_path, capsys, monkeypatch):
    """The held-out test share is test, train + validation is train: a pair repeated in the file leaks when its
    copies fall on both sides, and never otherwise."""
    rows = _rows(60)
    rows += [dict(r) for r in rows]  # every pair twice: some copy pairs must straddle the random split
    a = write_pairs(tmp_path / "train.csv", rows)
    code, _, err = run_cli(["audit", a, "--model", tiny_models["bert"], "--json", tmp_path / "a.json"], capsys,
                           monkeypatch)
    assert code == 0, err
    c = _checks(tmp_path / "a.json")
    leaked = c["pair_leakage"]["rows"]
    assert leaked and c["pair_leakage"]["details"]["file"].endswith("(held-out share)")
    # every test row that leaks has its copy (60 rows away) on the training side, and no other test row does
    dups = c["duplicate_pairs"]["rows"]
    train_rows = set(range(1, 121)) - set(leaked)
    assert all(r - 60 in train_rows or r + 60 in train_rows for r in leaked)
    assert all(r > 60 for r in dups)  # the later copy of a pair is the repeat, whatever side the first went to


def test_real_pairs_audit(shared_data, tmp_path, capsys, monkeypatch):
    """Tatoeba German→English with the built-in tokenizer: clean but for one long test source."""
    d = shared_data / "pairs"
    code, _, err = run_cli(["audit", d / "deu_eng_train.csv", "--test", d / "deu_eng_test.csv", "--json",
                            tmp_path / "a.json"], capsys, monkeypatch)
    assert code == 0, err
    c = _checks(tmp_path / "a.json")
    assert c["truncated_test"]["rows"] == [144] and c["truncated_test"]["details"]["source"]["longest"] > 128
    assert {n for n, x in c.items() if x["severity"] != "ok"} == {"truncated_test"}


def test_run_report_shows_the_pair_audit(s2s_run):
    audit = {c["name"]: c for c in s2s_run.metrics["audit"]}
    assert audit["duplicate_pairs"]["count"] > 0  # toy_pairs(96) repeats 6 pairs
    page = (s2s_run.path / "report.html").read_text()
    assert "Data audit" in page and "duplicate_pairs" in page and "length_ratio" in page
