"""Sequence-to-sequence under --nproc 2 (gloo on CPU): the same losses and weights as one process."""
import json
import subprocess
import sys

import tunesmith

from conftest import assert_trained_alike, no_dropout_copy
from s2s_runs import tiny_t5, toy_pairs, write_pairs  # noqa: F401  (tiny_t5: a fixture)


def test_seq2seq_two_processes_match_one(tiny_t5, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    data = write_pairs(tmp_path / "pairs.csv", toy_pairs(40))
    model = no_dropout_copy(tiny_t5, tmp_path / "t5", dropout_rate=0)
    one = tunesmith.train(str(data), task="seq2seq", model=str(model), epochs=2, lr=3e-3, batch_size=8,
                          max_length=16, max_new_tokens=4, num_beams=1, seed=3, bf16="off", out=str(tmp_path / "one"))
    args = ["train", str(data), "--task", "seq2seq", "--model", str(model), "--epochs", "2", "--lr", "3e-3",
            "--batch-size", "8", "--max-length", "16", "--max-new-tokens", "4", "--num-beams", "1", "--seed", "3",
            "--bf16", "off", "--nproc", "2", "--out", str(tmp_path / "two")]
    res = subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["task"] == "seq2seq" and len(two["history"]) == 2
    assert_trained_alike(tmp_path / "one", tmp_path / "two")
