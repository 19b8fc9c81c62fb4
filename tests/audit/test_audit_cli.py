"""`tunesmith audit`: JSON schema, --fix removes exactly what it reports, bad input is one line + exit 2."""
import hashlib
import json

import pandas as pd
import pytest
from audit_planting import audit_cache, read, run_cli, sms_planted  # noqa: F401 (fixture)


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.slow
def test_json_html_and_fix(shared_data, tmp_path, monkeypatch, capsys, audit_cache):
    train, test, w = sms_planted(shared_data, tmp_path)
    before = sha(train), sha(test)
    out_json, out_html, fixed = tmp_path / "a.json", tmp_path / "a.html", tmp_path / "clean.csv"
    code, out, err = run_cli(["audit", train, "--test", test, "--json", out_json, "--html", out_html,
                              "--fix", fixed], monkeypatch, capsys)
    assert code == 0, err
    assert (sha(train), sha(test)) == before  # inputs untouched

    doc = json.loads(out_json.read_text())
    n_train, n_test = len(read(train)), len(read(test))
    assert doc["rows"] == n_train
    assert [c["name"] for c in doc["checks"]] == ["empty_text", "duplicates", "near_duplicates", "label_conflicts",
                                                 "leakage", "class_balance", "truncation", "label_noise",
                                                 "encoding", "pii"]
    for c in doc["checks"]:
        assert {"name", "severity", "count", "rows", "groups", "details"} <= set(c)
        assert c["severity"] in ("ok", "warning", "error")
        assert c["count"] == len(c["rows"]) and c["rows"] == sorted(set(c["rows"]))
        limit = n_test if c["name"] == "leakage" else n_train
        assert all(isinstance(r, int) and 0 <= r < limit for r in c["rows"])
    html = out_html.read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "http" not in html.split("<body>")[0]

    # --fix: drops empty rows, all but the first of each duplicate group, train rows leaking exactly into test
    checks = {c["name"]: c for c in doc["checks"]}
    removed = set(checks["empty_text"]["rows"]) | set(checks["duplicates"]["rows"]) | \
        set(checks["leakage"]["details"]["train_exact_rows"])
    for name in ("empty", "blank", "no_label", "exact_dup", "variant_dup", "leak_exact_train", "leak_variant_train"):
        assert w[name] in removed
    assert w["src_10"] not in removed and w["src_20"] not in removed and w["leak_near_train"] not in removed
    kept = read(fixed)
    expected = read(train).drop(index=sorted(removed)).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, expected)
    assert f"removed {len(removed)} of {n_train} rows" in " ".join(out.split())

    # never overwrite: an existing --fix/--json target, or an input file, is refused before any work
    code, out, err = run_cli(["audit", train, "--fix", fixed], monkeypatch, capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["audit", train, "--fix", train, "--overwrite"], monkeypatch, capsys)
    assert code == 2 and "input file" in err and sha(train) == before[0]


@pytest.mark.parametrize("args, says", [
    (["missing.csv"], "file not found"),
    (["{toy}", "--text-column", "nope"], "no column 'nope'"),
    (["{toy}", "--label-column", "nope"], "no column 'nope'"),
    (["{toy}", "--test", "missing.csv"], "file not found"),
    (["{toy}", "--model", "no-such-model"], "unknown model"),
    (["{toy}", "--model", "{bert}", "--max-length", "4096"], "above what model"),
    (["{toy}", "--json", "{toy}"], "already exists"),
    (["{toy}", "--fix", "out.xlsx"], "unknown file type"),
    (["{bad}"], "not UTF-8"),
])
def test_bad_input_one_line_exit_2(args, says, toy_csv, tiny_models, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\n\xff\xfe broken,a\n")
    monkeypatch.chdir(tmp_path)
    args = [a.format(toy=toy_csv, bert=tiny_models["bert"], bad=bad) for a in args]
    code, out, err = run_cli(["audit", *args], monkeypatch, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and says in err
    assert "Traceback" not in err


def test_strict_exit_code_and_unlabelled_file(toy_csv, tiny_models, tmp_path, monkeypatch, capsys, audit_cache):
    df = pd.read_csv(toy_csv)
    df.loc[len(df)] = {"text": df.text[0], "label": "shipping" if df.label[0] != "shipping" else "login"}
    f = tmp_path / "conflict.csv"
    df.to_csv(f, index=False)
    code, out, err = run_cli(["audit", f, "--model", tiny_models["bert"], "--strict"], monkeypatch, capsys)
    assert code == 1 and "label_conflicts" in out
    df[["text"]].to_csv(tmp_path / "texts.csv", index=False)  # no label column: text checks still run
    code, out, err = run_cli(["audit", tmp_path / "texts.csv", "--model", tiny_models["bert"]], monkeypatch, capsys)
    assert code == 0 and "no label column" in out
