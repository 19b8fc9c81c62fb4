"""--nproc 2 on embeddings: each process embeds its share of the batch and scores its anchors against every
process's candidates (gathered with their gradients), so two processes train what one process trains."""
import json
import subprocess
import sys

import pytest

import tunesmith

from conftest import assert_trained_alike, no_dropout_copy
from emb_runs import WORDS, toy_pairs, write_csv

ZEROS = dict(hidden_dropout_prob=0, attention_probs_dropout_prob=0)


def _both(data, model, tmp_path, *flags, **kw):
    common = dict(model=str(model), epochs=2, lr=1e-3, batch_size=15, seed=3, warmup_ratio=0.0, bf16="off",
                  max_length=32, baselines=False, audit=False, **kw)
    tunesmith.train(data, out=str(tmp_path / "one"), **common)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in common.items() if not isinstance(v, bool)]
    res = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", data, *args, "--no-baselines",
                          "--no-audit", *flags, "--nproc", "2", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert_trained_alike(tmp_path / "one", tmp_path / "two", val_loss=False)
    return [json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two")]


@pytest.mark.parametrize("negatives", [0, 1])
def test_pairs_two_processes_match_one(tiny_models, tmp_path, monkeypatch, negatives):
    # textbook torch on both sides (no lazy embedding rows): the comparison is of the gathered loss alone
    monkeypatch.setenv("TUNESMITH_ENGINE", "plain")
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    model = no_dropout_copy(tiny_models["bert"], tmp_path / "bert", **ZEROS)
    data = write_csv(tmp_path / "pairs.csv", toy_pairs(96))
    one, two = _both(data, model, tmp_path, hard_negatives=negatives)
    # in-batch top-1 accuracy counts each anchor against every process's candidates, as one process does
    assert [h["train_accuracy"] for h in two["history"]] == pytest.approx(
        [h["train_accuracy"] for h in one["history"]], abs=1e-9)


def test_labelled_texts_two_processes_match_one(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_ENGINE", "plain")
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    model = no_dropout_copy(tiny_models["bert"], tmp_path / "bert", **ZEROS)
    rows = [{"text": f"{f.format(w=w)} {i}", "label": w} for i in range(3) for w in WORDS[:20]
            for f in ("all about the {w}", "a note on {w}")]
    data = write_csv(tmp_path / "labelled.csv", rows)
    _both(data, model, tmp_path, task="embedding")


def test_scored_pairs_two_processes_match_one(tiny_models, tmp_path, monkeypatch):
    """CoSENT: every process ranks the whole batch's pairs (gathered cosines), its gradient reaching each
    process's own pairs."""
    monkeypatch.setenv("TUNESMITH_ENGINE", "plain")
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    model = no_dropout_copy(tiny_models["bert"], tmp_path / "bert", **ZEROS)
    rows = [{"sentence1": w, "sentence2": f.format(w=x), "score": float(5 * (w == x)) + i / 10}
            for i, (w, x) in enumerate(zip(WORDS * 2, WORDS + WORDS[1:] + WORDS[:1]))
            for f in ("all about the {w}",)]
    data = write_csv(tmp_path / "sts.csv", rows)
    _both(data, model, tmp_path)
