"""`tunesmith audit` on tagged sentences: the token task's own checks, as `train` runs them."""
from __future__ import annotations

import json

from conftest import one_line_error, run_cli
from token_runs import toy_sentences, write_jsonl


def _checks(path):
    return {c["name"]: c for c in json.loads(path.read_text())["checks"]}


def test_audit_command_on_tag_files(tiny_models, tmp_path, capsys, monkeypatch):
    train = toy_sentences(40)
    train[0] = {"tokens": ["alice", "went", "home"], "tags": ["O", "I-person", "O"]}  # I- after O
    train[1] = {"tokens": ["paris", "smiled"], "tags": ["B-person", "O"]}  # paris is a location elsewhere
    test = toy_sentences(10, seed=3) + [dict(train[5])]  # one test sentence is a training sentence
    test[0] = {"tokens": ["acme", "hired", "bob"], "tags": ["B-org", "O", "B-person"]}  # a type train lacks
    a, b = write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", test)
    code, out, err = run_cli(["audit", a, "--test", b, "--model", tiny_models["bert"], "--json",
                              tmp_path / "audit.json"], capsys, monkeypatch)
    assert code == 0, err
    c = _checks(tmp_path / "audit.json")
    assert c["invalid_transitions"]["rows"] == [1]  # 1-based lines
    assert c["conflicting_types"]["count"] >= 1
    assert c["tag_sets_differ"]["severity"] == "error" and c["tag_sets_differ"]["details"]["only_in_test"] == ["org"]
    assert c["sentence_leakage"]["rows"] == [len(test)]
    assert 0 < c["entity_leakage"]["details"]["share"] <= 1
    assert "sentence_leakage" in out and "near duplicates" not in out  # no row-audit footer for tags

    code, out, err = run_cli(["audit", a, "--test", b, "--model", tiny_models["bert"], "--strict"],
                             capsys, monkeypatch)
    assert code == 1, err  # --strict: errors fail CI

    code, _, err = run_cli(["audit", a, "--model", tiny_models["bert"], "--fix", tmp_path / "fixed.jsonl"],
                           capsys, monkeypatch)
    assert "--fix" in one_line_error(code, err) and not (tmp_path / "fixed.jsonl").exists()


def test_audit_without_test_does_not_count_the_held_out_share_as_leaked(tiny_models, tmp_path, capsys,
                                                                        monkeypatch):
    rows = [{"tokens": [f"w{i}", "met", "alice"], "tags": ["O", "O", "B-person"]} for i in range(60)]
    a = write_jsonl(tmp_path / "train.jsonl", rows)
    code, _, err = run_cli(["audit", a, "--model", tiny_models["bert"], "--json", tmp_path / "a.json"],
                           capsys, monkeypatch)
    assert code == 0, err
    c = _checks(tmp_path / "a.json")
    assert c["sentence_leakage"]["count"] == 0  # every sentence is distinct: the split leaks nothing
    assert c["entity_leakage"]["details"]["share"] == 1.0  # but every test entity (alice) was seen in train
