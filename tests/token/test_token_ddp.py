"""Token classification under --nproc 2 (gloo on CPU): the same losses and weights as one process."""
import json
import subprocess
import sys

import tunesmith

from conftest import assert_trained_alike, no_dropout_copy
from token_runs import toy_sentences, write_jsonl


def test_token_two_processes_match_one(tiny_models, tmp_path, monkeypatch):
    model = no_dropout_copy(tiny_models["bert"], tmp_path / "bert", hidden_dropout_prob=0, attention_probs_dropout_prob=0,
                            classifier_dropout=0)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "toy.jsonl", toy_sentences(40))
    one = tunesmith.train(str(data), model=str(model), epochs=2, lr=5e-3, batch_size=8, seed=3, bf16="off",
                          max_length=32, out=str(tmp_path / "one"))
    args = ["train", str(data), "--model", str(model), "--epochs", "2", "--lr", "5e-3", "--batch-size", "8",
            "--seed", "3", "--bf16", "off", "--max-length", "32", "--nproc", "2", "--out", str(tmp_path / "two")]
    res = subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["task"] == "token" and len(two["history"]) == 2
    assert_trained_alike(tmp_path / "one", tmp_path / "two")
