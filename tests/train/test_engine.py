"""accel's one door: which engine a device gets, the plain engine touching none of the CPU tricks yet
training to the same numbers, and the attention function registered only when a CPU engine is made."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import toy_rows, write_csv

import tunesmith
from tunesmith import accel
from tunesmith.accel import cpu_kernels, cpu_malloc, fast_dropout, lazy_rows, master_weights
from tunesmith.errors import TunesmithError
from tunesmith.train.loop import logged

CPU = torch.device("cpu")


def test_cpu_gets_the_cpu_engine_unless_plain_is_asked_for(monkeypatch):
    monkeypatch.delenv(accel.ENV, raising=False)
    assert accel.engine_name() == "auto"
    assert isinstance(accel.for_device(CPU, True), accel.CpuBf16Engine)
    assert type(accel.for_device("cuda", True)) is accel.PlainEngine  # CUDA's own kernels are the fast ones
    assert type(accel.for_device(CPU, True, engine="plain")) is accel.PlainEngine
    monkeypatch.setenv(accel.ENV, "plain")
    assert accel.engine_name() == "plain"
    assert type(accel.for_device(CPU, True)) is accel.PlainEngine
    assert isinstance(accel.for_device(CPU, True, engine="auto"), accel.CpuBf16Engine)  # the argument wins
    monkeypatch.setenv(accel.ENV, "fast")
    with pytest.raises(TunesmithError, match="auto, plain") as e:
        accel.for_device(CPU, True)
    assert "\n" not in str(e.value)


def test_cli_engine_option_sets_the_environment(monkeypatch):
    from tunesmith import cli

    monkeypatch.setenv(accel.ENV, "auto")
    monkeypatch.delenv(accel.ENV)  # recorded: monkeypatch removes what use_engine sets below
    cli.use_engine(None)
    assert accel.ENV not in os.environ
    cli.use_engine("PLAIN")
    assert os.environ[accel.ENV] == "plain"  # what --nproc's processes inherit
    with pytest.raises(TunesmithError):
        cli.use_engine("turbo")


@pytest.fixture(scope="module")
def no_dropout_bert(tiny_models, tmp_path_factory):
    """The tiny BERT without dropout: the engines draw their masks differently (bulk SplitMix64 against
    torch's bernoulli), so with dropout on the two runs would differ by the masks, not by arithmetic."""
    folder = tmp_path_factory.mktemp("nodrop") / "bert"
    shutil.copytree(tiny_models["bert"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _train(model, data, out, events):
    return tunesmith.train(str(data), model=str(model), epochs=2, lr=1e-3, batch_size=16, seed=0, out=str(out),
                           audit=False, baselines=False, head_init="random",
                           on_event=lambda kind, **kw: events.append(kw) if kind == "step" else None)


def _refuse(*a, **k):
    raise AssertionError("the plain engine called a CPU speed-up")


def test_plain_engine_uses_no_cpu_trick_and_trains_to_the_same_numbers(no_dropout_bert, tmp_path, monkeypatch):
    data = write_csv(tmp_path / "toy.csv", toy_rows())
    monkeypatch.delenv(accel.ENV, raising=False)
    made = []
    real = master_weights.MasterWeights
    monkeypatch.setattr(master_weights, "MasterWeights", lambda m, o: made.append(1) or real(m, o))
    auto_steps, plain_steps = [], []
    auto = _train(no_dropout_bert, data, tmp_path / "auto", auto_steps).metrics
    assert made  # the auto engine really computed with master weights

    monkeypatch.setenv(accel.ENV, "plain")
    for mod, names in ((master_weights, ["use", "MasterWeights", "applicable", "bf16_inference"]),
                       (fast_dropout, ["enabled", "register", "dropout"]), (lazy_rows, ["enabled"]),
                       (cpu_malloc, ["tune", "no_mmap"]), (cpu_kernels, ["lib"])):
        for name in names:
            monkeypatch.setattr(mod, name, _refuse)
    monkeypatch.setattr(lazy_rows.AdamW, "_sparse_rows", _refuse)
    plain = _train(no_dropout_bert, data, tmp_path / "plain", plain_steps).metrics

    # Without dropout what differs is arithmetic: bf16 compute copies over fp32 masters and the compiled
    # AdamW against autocast's per-op casts and torch's AdamW, plus lazy rows (unseen rows skip a step's
    # weight decay, 1e-5 of a weight here). Two epochs of a tiny model at lr 1e-3 leave the losses within
    # 4e-5 of each other; rel=2e-3 is one bf16 rounding (8-bit mantissa, 2^-9), which they must stay under.
    assert plain["test"]["accuracy"] == auto["test"]["accuracy"]
    assert plain["test"]["macro_f1"] == auto["test"]["macro_f1"]
    assert plain["test"]["loss"] == pytest.approx(auto["test"]["loss"], rel=2e-3)
    for a, p in zip(auto["history"], plain["history"], strict=True):
        assert p["train_loss"] == pytest.approx(a["train_loss"], rel=2e-3)
        assert p["val_loss"] == pytest.approx(a["val_loss"], rel=2e-3)

    # The step event: every batch, its loss only every LOG_EVERY batches and at an epoch's last.
    assert len(plain_steps) == len(auto_steps) > 0
    for e in plain_steps:
        n = next(s["batch"] for s in reversed(plain_steps) if s["epoch"] == e["epoch"])
        assert (e["loss"] is not None) == logged(e["batch"] - 1, n)
        assert e["loss"] is None or isinstance(e["loss"], float)


def test_attention_is_registered_by_the_cpu_engine_not_on_import():
    code = """
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
import tunesmith.accel, tunesmith.train.loop, tunesmith.evaluate.predict
from tunesmith.accel.fast_dropout import NAME
seen = lambda: (NAME in ALL_ATTENTION_FUNCTIONS, NAME in ALL_MASK_ATTENTION_FUNCTIONS)
print(seen())
tunesmith.accel.for_device("cpu", True, engine="plain")
print(seen())
tunesmith.accel.for_device("cpu", True, engine="auto")
print(seen())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:3] == ["(False, False)", "(False, False)", "(True, True)"]


@pytest.mark.skipif(cpu_kernels.lib() is None, reason="needs the compiled CPU kernels (a C compiler)")
def test_the_memory_estimate_runs_the_attention_training_runs(tiny_models):
    """The plan's saved-tensor count runs inside the engine's training attention: through SDPA's math path
    instead, it counted 3.7x what minilm's training keeps at 512 tokens."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_models["bert"]), num_labels=3,
                                                               attn_implementation="sdpa")
    seen = {}
    for engine in (accel.for_device(CPU, True), accel.for_device(CPU, True, engine="plain")):
        with engine.measuring(model):
            seen[engine.name] = model.config._attn_implementation
    assert seen == {"cpu": fast_dropout.NAME, "plain": "sdpa"}
    assert model.config._attn_implementation == "sdpa"  # put back
