"""--shard (FSDP2): two CPU processes (gloo) holding half the weights each train to what one process trains to,
resume exactly after an interrupt from per-rank shards, and write a model folder plain transformers loads."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import tunesmith

from conftest import assert_trained_alike, no_dropout_copy

ZEROS = dict(hidden_dropout_prob=0, attention_probs_dropout_prob=0, classifier_dropout=0)


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def plain_bert(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    return no_dropout_copy(tiny_models["bert"], tmp_path / "bert", **ZEROS)


@pytest.mark.parametrize("mode", ["full", "grad-op"])
def test_sharded_two_processes_match_one(plain_bert, toy_csv, tmp_path, mode, monkeypatch):
    monkeypatch.setenv("TUNESMITH_ENGINE", "plain")  # what sharded runs compute with (no lazy embedding rows)
    tunesmith.train(str(toy_csv), model=str(plain_bert), epochs=2, lr=1e-3, batch_size=15, bf16="off", seed=3, contrastive="off",
                    out=str(tmp_path / "one"))
    res = _cli("train", str(toy_csv), "--model", str(plain_bert), "--epochs", "2", "--lr", "1e-3", "--batch-size",
               "15", "--bf16", "off", "--seed", "3", "--contrastive", "off", "--nproc", "2", "--shard", mode, "--out", str(tmp_path / "two"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert_trained_alike(tmp_path / "one", tmp_path / "two")
    # model/ is a consolidated folder: every weight whole, loadable by plain transformers
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(tmp_path / "two" / "model")
    w = load_file(tmp_path / "two" / "model" / "model.safetensors")
    base = load_file(plain_bert / "model.safetensors")
    for n, t in base.items():
        if "bert." + n in w:
            assert w["bert." + n].shape == t.shape
    assert m.config.id2label[0] in {"billing", "shipping", "login"}


def test_sharded_resume_after_interrupt_matches_uninterrupted(plain_bert, toy_csv, tmp_path):
    args = ["train", str(toy_csv), "--model", str(plain_bert), "--epochs", "3", "--lr", "1e-3", "--batch-size", "8",
            "--bf16", "off", "--seed", "3", "--contrastive", "off", "--nproc", "2", "--shard", "full", "--val-fraction", "0"]
    whole = _cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-2000:]
    # Interrupt: Ctrl-C to the launcher's process group once the first checkpoint exists
    out = tmp_path / "cut"
    p = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", *args, "--out", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in p.stdout:  # mid-training once the first epoch's line is out (last.pt is not written every epoch)
        seen.append(line)
        if line.startswith("epoch 1:"):
            break
    assert p.poll() is None, "".join(seen)
    os.killpg(p.pid, signal.SIGINT)
    p.communicate(timeout=120)
    assert (out / "checkpoint" / "last.pt").exists(), "".join(seen)
    ck = torch.load(out / "checkpoint" / "last.pt", weights_only=True)
    assert ck["shards"]["world"] == 2 and ck["trainable"] == {}  # weights live in the per-rank files only
    shards = sorted(f.name for f in (out / "checkpoint").glob("shard-*.rank*.pt"))
    assert len(shards) == 2, shards  # one file a rank, older sets removed
    half = torch.load(out / "checkpoint" / shards[0], weights_only=True)["params"]
    full = load_file(plain_bert / "model.safetensors")
    name = next(n for n in half if n.endswith("word_embeddings.weight"))
    assert half[name].shape[0] < full["embeddings.word_embeddings.weight"].shape[0]  # a shard, not the whole
    resumed = _cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    h1 = json.loads((tmp_path / "whole" / "metrics.json").read_text())["history"]
    h2 = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["train_loss"] for r in h2] == pytest.approx([r["train_loss"] for r in h1], rel=1e-5)
    w1, w2 = load_file(tmp_path / "whole" / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    for n in w1:
        torch.testing.assert_close(w2[n], w1[n], rtol=1e-5, atol=1e-6)


def test_shard_refusals(toy_csv, tmp_path):
    res = _cli("train", str(toy_csv), "--shard", "full", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "add --nproc 2" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_sharded_sft_matches_one_process(tiny_models, tmp_path, monkeypatch, strategy):
    """A decoder with tied input and output embeddings (as SmolLM2): the tied matrix lives in the root group,
    which SFT's losses and generation reach around the root's forward. LoRA: frozen base, sharded adapters."""
    from sft.test_sft_train import _data

    model = no_dropout_copy(tiny_models["llama"], tmp_path / "llama", attention_dropout=0, hidden_dropout=0)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TUNESMITH_ENGINE", "plain")
    data = _data(tmp_path, 40)
    common = dict(task="sft", model=str(model), strategy=strategy, epochs=2, lr=1e-3, bf16="off", batch_size=6,
                  max_length=48, seed=3, max_new_tokens=4, eval_generations=2, few_shot_k=0, lora_dropout=0.0)
    tunesmith.train(str(data), out=str(tmp_path / "one"), **common)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in common.items()]
    res = _cli("train", str(data), *args, "--nproc", "2", "--shard", "full", "--out", str(tmp_path / "two"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert_trained_alike(tmp_path / "one", tmp_path / "two")
    if strategy == "lora":  # the adapter alone was checkpointed and saved beside the merged model
        assert (tmp_path / "two" / "adapter" / "adapter_config.json").exists()
