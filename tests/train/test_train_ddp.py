"""DDP: two CPU processes (gloo) on the same global batch train to what one process trains to."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import tunesmith

from conftest import no_dropout_copy


def test_two_processes_match_one(tiny_models, toy_csv, tmp_path, monkeypatch):
    model = no_dropout_copy(tiny_models["bert"], tmp_path / "bert", hidden_dropout_prob=0,
                            attention_probs_dropout_prob=0, classifier_dropout=0)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    args = ["train", str(toy_csv), "--model", str(model), "--epochs", "2", "--lr", "1e-3", "--batch-size", "15",
            "--bf16", "off", "--seed", "3", "--contrastive", "off"]
    one = tunesmith.train(str(toy_csv), model=str(model), epochs=2, lr=1e-3, batch_size=15, bf16="off", seed=3, contrastive="off",
                          out=str(tmp_path / "one"))
    # The real command: --nproc 2 relaunches itself under torch.distributed.run with gloo.
    res = subprocess.run([sys.executable, "-m", "tunesmith.cli", *args, "--nproc", "2", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for a, b in zip(one.metrics["history"], two["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4, abs=1e-6)
    assert two["test"]["accuracy"] == one.metrics["test"]["accuracy"]
    w1 = load_file(tmp_path / "one" / "model" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    base = load_file(model / "model.safetensors")  # the encoder alone: keys without the "bert." prefix
    moved = max(float((w1["bert." + n] - t).abs().max()) for n, t in base.items() if "bert." + n in w1)
    assert moved > 1e-3  # training did change the weights
    for n in w1:
        torch.testing.assert_close(w2[n], w1[n], rtol=1e-4, atol=2e-5)


def test_accelerate_launch_runs_the_same_ddp(tiny_models, toy_csv, tmp_path, monkeypatch):
    """`accelerate launch --multi_gpu` (gloo here, no GPU) starts the processes; tunesmith joins them as DDP."""
    from conftest import assert_trained_alike

    model = no_dropout_copy(tiny_models["bert"], tmp_path / "bert", hidden_dropout_prob=0,
                            attention_probs_dropout_prob=0, classifier_dropout=0)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TUNESMITH_ENGINE", "plain")
    tunesmith.train(str(toy_csv), model=str(model), epochs=1, lr=1e-3, batch_size=15, bf16="off", seed=3, contrastive="off",
                    out=str(tmp_path / "one"))
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    res = subprocess.run([*launcher, "-m", "tunesmith.cli", "train", str(toy_csv), "--model", str(model), "--epochs",
                          "1", "--lr", "1e-3", "--batch-size", "15", "--bf16", "off", "--seed", "3", "--contrastive", "off", "--out",
                          str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert_trained_alike(tmp_path / "one", tmp_path / "two")


def test_contrastive_stage_under_ddp_matches_one_process(tiny_models, toy_csv, tmp_path, monkeypatch):
    """The few-shot contrastive stage (--contrastive on: this toy's ~30 rows a class are past auto's bound)
    trains the body through the embedding task's steps, which gather every process's negatives: the same stage
    losses as one process.
    (The classifier after it is compared with --contrastive off above: the toy's separable probe turns the
    stage's last-bit differences into visibly different heads.)"""
    model = no_dropout_copy(tiny_models["bert"], tmp_path / "bert", hidden_dropout_prob=0,
                            attention_probs_dropout_prob=0, classifier_dropout=0)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    one = tunesmith.train(str(toy_csv), model=str(model), epochs=1, lr=1e-3, batch_size=15, bf16="off", seed=3,
                          contrastive="on", out=str(tmp_path / "one"))
    res = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", str(toy_csv), "--model", str(model),
                          "--epochs", "1", "--lr", "1e-3", "--batch-size", "15", "--bf16", "off", "--seed", "3",
                          "--contrastive", "on", "--nproc", "2", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one.recipe["contrastive"] == two_recipe(tmp_path / "two") == "on"
    a, b = one.metrics["contrastive"], two["contrastive"]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4) and a["train_loss"][-1] < a["train_loss"][0]
    assert b["in_batch_accuracy"] == pytest.approx(a["in_batch_accuracy"], abs=1e-9)


def two_recipe(run):
    import yaml

    return yaml.safe_load((run / "recipe.yaml").read_text())["recipe"]["contrastive"]
