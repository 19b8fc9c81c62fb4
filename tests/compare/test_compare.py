"""`tunesmith runs` and `tunesmith compare` on tiny real runs (tiny BERT, toy data, seconds each)."""
import json
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import tunesmith
from tunesmith.compare.pairwise import compare_runs, verdict_line
from tunesmith.errors import TunesmithError

from conftest import one_line_error, run_cli, toy_rows, write_csv

# report.html's browser check (headless Chromium found or installed, CSP-instrumented copy): the same helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from test_report_page import check_page, chromium  # noqa: E402,F401  (chromium: a fixture)


@pytest.fixture(scope="module")
def runs_root(tiny_models, tmp_path_factory):
    """runs/a and runs/b: the same data, seeds 0 and 1, trained until they learned the toy task; runs/c: other
    test rows; runs/d: a copy of a left unfinished; runs/e: one epoch, which learns nearly nothing. Tiny BERT."""
    root = tmp_path_factory.mktemp("compare")
    rows = toy_rows()
    random.Random(0).shuffle(rows)
    for r in rows:
        r["region"] = ["eu", "us"][len(r["text"]) % 2]
    write_csv(root / "train.csv", rows[:84])
    write_csv(root / "test.csv", rows[84:])
    write_csv(root / "test2.csv", rows[78:])
    common = dict(model=str(tiny_models["bert"]), lr=3e-3, batch_size=16, audit=False, slice_column="region")
    for name, seed, test, baselines, epochs in (("a", 0, "test.csv", True, 10), ("b", 1, "test.csv", False, 10),
                                                ("c", 0, "test2.csv", False, 10), ("e", 0, "test.csv", False, 1)):
        tunesmith.train(str(root / "train.csv"), test=str(root / test), seed=seed, baselines=baselines,
                        epochs=epochs, out=str(root / "runs" / name), **common)
    shutil.copytree(root / "runs" / "a", root / "runs" / "d")
    marker = root / "runs" / "d" / ".tunesmith-run.json"
    doc = json.loads(marker.read_text())
    marker.write_text(json.dumps({**doc, "state": "training"}))
    return root


def test_runs_keep_test_targets_beside_the_logits(runs_root):
    ckpt = runs_root / "runs" / "a" / "checkpoint"
    y, logits = np.load(ckpt / "test_targets.npy"), np.load(ckpt / "test_logits.npy")
    assert len(y) == len(logits) == 36 and not (ckpt / "last.pt").exists()  # survives drop_checkpoints


def test_compare_two_seeds(runs_root, capsys, monkeypatch):
    runs = runs_root / "runs"
    code, out, err = run_cli(["compare", runs / "a", runs / "b"], capsys, monkeypatch)
    assert code == 0, err
    verdict = next(l for l in out.splitlines() if "95% CI" in l and ("difference" in l or "better" in l))
    assert re.fullmatch(r"no significant difference between a and b: macro-F1 b − a = [-+]\d+\.\d+ points "
                        r"\(95% CI [-+]\d+\.\d+ to [-+]\d+\.\d+\)", verdict), verdict
    assert "seed: 0 | 1" in out
    page = runs / "compare-a-b.html"
    assert page.exists() and f"wrote {page}" in out

    doc = compare_runs([runs / "a", runs / "b"])
    pair = doc["pairs"][0]
    d = pair["diffs"]["macro_f1"]
    assert d["ci95"][0] <= d["diff"] <= d["ci95"][1] and pair["verdict"] == verdict
    for r in doc["runs"]:  # the scores from the saved predictions are the run's own test metrics
        m = json.loads((runs / r["name"] / "metrics.json").read_text())["test"]
        assert r["scores"]["macro_f1"] == pytest.approx(m["macro_f1"]) and r["scores"]["accuracy"] == pytest.approx(m["accuracy"])
    assert doc["n"] == 36 and {c["label"] for c in doc["per_class"]} == {"billing", "shipping", "login"}
    assert [d["setting"] for d in doc["recipe_differences"]] == ["seed", "baselines"]
    assert doc["runs"][0]["scores"]["macro_f1"] > 0.8  # a learned the task: the verdict is no accident
    assert doc["slices"]["column"] == "region" and {r["slice"] for r in doc["slices"]["rows"]} == {"eu", "us"}

    # never over a file without --overwrite; --out takes a folder or a file
    before = page.read_text()
    code, _, err = run_cli(["compare", runs / "a", runs / "b"], capsys, monkeypatch)
    assert "already exists" in one_line_error(code, err) and page.read_text() == before
    code, _, err = run_cli(["compare", runs / "a", runs / "b", "--overwrite"], capsys, monkeypatch)
    assert code == 0, err
    code, _, err = run_cli(["compare", runs / "b", runs / "a", "--out", runs_root / "pages"], capsys, monkeypatch)
    assert code == 0 and (runs_root / "pages" / "compare-b-a.html").exists(), err
    code, out, err = run_cli(["compare", runs / "a", runs / "b", "--out", runs_root / "x.html", "--json"], capsys,
                             monkeypatch)
    assert code == 0 and json.loads(out)["pairs"][0]["verdict"] == verdict, err


def test_compare_names_the_better_run(runs_root, capsys, monkeypatch):
    """a learned the toy task, e (one epoch) did not: a is better, with an interval that leaves out zero; three
    runs compare each with the first."""
    runs = runs_root / "runs"
    code, out, err = run_cli(["compare", runs / "e", runs / "a", runs / "b", "--out", runs_root / "three.html"],
                             capsys, monkeypatch)
    assert code == 0, err
    verdicts = [l for l in out.splitlines() if " is better than " in l or "significant difference" in l]
    assert len(verdicts) == 2 and all(re.fullmatch(r"[ab] is better than e: macro-F1 \+\d+\.\d+ points "
                                                   r"\(95% CI \+\d+\.\d+ to \+\d+\.\d+\)", v) for v in verdicts), out
    assert "epochs: 1 | 10 | 10" in out and (runs_root / "three.html").exists()


def test_compare_refuses_other_test_data_in_one_line(runs_root, capsys, monkeypatch):
    runs = runs_root / "runs"
    code, _, err = run_cli(["compare", runs / "a", runs / "c"], capsys, monkeypatch)
    line = one_line_error(code, err)
    assert "not comparable" in line and "test.csv" in line and "test2.csv" in line
    assert not (runs / "compare-a-c.html").exists()
    code, _, err = run_cli(["compare", runs / "a", runs / "d"], capsys, monkeypatch)  # unfinished
    assert "did not finish" in one_line_error(code, err)
    code, _, err = run_cli(["compare", runs / "a", runs / "a"], capsys, monkeypatch)
    assert "given twice" in one_line_error(code, err)


def test_compare_runs_saved_before_the_targets(runs_root, tmp_path, capsys, monkeypatch):
    """An older run without checkpoint/test_targets.npy: its test rows are read again the way it read them;
    when its data is gone, one line says so."""
    for n in ("a", "b"):
        shutil.copytree(runs_root / "runs" / n, tmp_path / n)
        (tmp_path / n / "checkpoint" / "test_targets.npy").unlink()
    fresh = compare_runs([runs_root / "runs" / "a", runs_root / "runs" / "b"])
    old = compare_runs([tmp_path / "a", tmp_path / "b"])
    assert old["pairs"][0]["diffs"] == fresh["pairs"][0]["diffs"]

    f = tmp_path / "a" / "recipe.yaml"
    doc = yaml.safe_load(f.read_text())
    doc["recipe"]["test"] = str(tmp_path / "moved.csv")
    f.write_text(yaml.safe_dump(doc))
    code, _, err = run_cli(["compare", tmp_path / "a", tmp_path / "b"], capsys, monkeypatch)
    line = one_line_error(code, err)
    assert "test_targets.npy" in line and "moved.csv" in line


def test_runs_lists_sorts_and_filters(runs_root, capsys, monkeypatch):
    root = runs_root / "runs"
    code, out, err = run_cli(["runs", root, "--json", "--sort", "run"], capsys, monkeypatch)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["run"] for r in rows] == ["a", "b", "c", "d", "e"]
    by = {r["run"]: r for r in rows}
    assert by["d"]["state"] == "unfinished" and by["a"]["state"] == "finished"
    assert by["a"]["data"] == by["b"]["data"] != by["c"]["data"] and len(by["a"]["data"]) == 12
    assert by["a"]["task"] == "single_label" and by["a"]["strategy"] == "full" and by["a"]["metric"] == "macro_f1"
    lo, hi = by["a"]["ci95"]
    assert lo <= by["a"]["test"] <= hi and by["a"]["baseline"] and by["b"]["baseline"] is None
    assert by["a"]["wall_seconds"] > 0 and by["a"]["date"] and by["a"]["verdict"]

    code, out, _ = run_cli(["runs", root, "--json", "--sort", "test", "--reverse"], capsys, monkeypatch)
    tests = [r["test"] for r in json.loads(out)]
    assert tests == sorted(tests, reverse=True)
    for flt, want in ((["seed=1"], ["b"]), (["task=single_label", "state=unfinished"], ["d"]),
                      (["model=bert", "data=" + by["c"]["data"]], ["c"]), (["epochs=1"], ["e"]), (["model=minilm"], [])):
        args = ["runs", root, "--json", "--sort", "run"] + [x for f in flt for x in ("--filter", f)]
        code, out, err = run_cli(args, capsys, monkeypatch)
        assert code == 0 and [r["run"] for r in json.loads(out)] == want, (flt, err)

    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(["runs", root], capsys, monkeypatch)
    assert code == 0 and "5 runs under" in out and "unfinished" in out and by["a"]["data"][:8] in out
    code, _, err = run_cli(["runs", root, "--sort", "colour"], capsys, monkeypatch)
    assert "--sort colour" in one_line_error(code, err)
    code, _, err = run_cli(["runs", root, "--filter", "colour=red"], capsys, monkeypatch)
    assert "colour" in one_line_error(code, err)
    code, _, err = run_cli(["runs", runs_root / "nothing"], capsys, monkeypatch)
    assert "no such folder" in one_line_error(code, err)


def test_compare_page_in_chromium(runs_root, chromium, tmp_path, capsys, monkeypatch):
    out = tmp_path / "compare.html"
    code, _, err = run_cli(["compare", runs_root / "runs" / "a", runs_root / "runs" / "b", "--out", out], capsys,
                           monkeypatch)
    assert code == 0, err
    check = check_page(chromium, out, tmp_path)
    assert {"Test metrics", "Recipe differences", "Per class", "Recipe"} <= set(check["h2"])
    assert any(h.startswith("Slices") for h in check["h2"])


def test_verdict_names_the_better_run_with_its_interval():
    res = {"diff": 0.052, "ci95": [0.021, 0.08]}
    assert verdict_line("head", "full", res, "macro_f1") == \
        "full is better than head: macro-F1 +5.2 points (95% CI +2.1 to +8.0)"
    res = {"diff": -0.052, "ci95": [-0.08, -0.021]}
    assert verdict_line("full", "head", res, "macro_f1") == \
        "full is better than head: macro-F1 +5.2 points (95% CI +2.1 to +8.0)"
    assert verdict_line("a", "b", {"diff": 0.01, "ci95": [-0.02, 0.04]}, "accuracy").startswith(
        "no significant difference between a and b: accuracy b − a = +1.0 points (95% CI -2.0 to +4.0)")


def _fake_sft_run(path: Path, each: list[float], test_sha="sha256:" + "ab" * 32):
    """A finished run folder as the sft task writes it, with per-prompt ROUGE-L (no model weights needed)."""
    (path / "model").mkdir(parents=True)
    (path / "model" / "config.json").write_text("{}")
    (path / ".tunesmith-run.json").write_text(json.dumps({"run_id": path.name, "state": "finished", "files": [],
                                                          "created": "2026-01-02T03:04:05"}))
    (path / "recipe.yaml").write_text(yaml.safe_dump({
        "recipe": {"task": "sft", "model": "smollm2", "strategy": "lora", "seed": 0, "test": "t.jsonl"},
        "provenance": {"data": {"test": {"path": "t.jsonl", "sha256": test_sha}}}}))
    (path / "metrics.json").write_text(json.dumps({"task": "sft", "wall_seconds": 12.5, "test": {
        "loss": 1.0, "rouge_l": float(np.mean(each)), "rouge_l_each": each}, "verdict": "ok."}))
    return path


def test_compare_per_item_scores_of_a_generator(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 200)
    a = _fake_sft_run(tmp_path / "sa", [round(x, 4) for x in base])
    b = _fake_sft_run(tmp_path / "sb", [round(x + 0.1, 4) for x in base])
    doc = compare_runs([a, b])
    assert doc["kind"] == "items" and doc["metric"] == "rouge_l"
    assert doc["pairs"][0]["verdict"].startswith("sb is better than sa: rouge_l +10.0 points (95% CI")
    c = _fake_sft_run(tmp_path / "sc", list(base[:10]), test_sha="sha256:" + "cd" * 32)
    with pytest.raises(TunesmithError, match="not comparable"):
        compare_runs([a, c])
