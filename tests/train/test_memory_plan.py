"""The plan (train/memory.py, plan.py): activations counted on the real model, the peak against the device's
memory, train's refusal in one line with settings that fit, and `tunesmith plan` / `train --dry-run`."""
from __future__ import annotations

import json

import torch

from conftest import one_line_error, run_cli
from tunesmith.train import memory


def test_saved_bytes_counts_what_autograd_keeps_not_the_weights():
    lin = torch.nn.Linear(64, 64)
    x = torch.randn(10, 64, requires_grad=True)
    total, largest = memory.saved_bytes(lambda: torch.relu(lin(x)).sum(), list(lin.parameters()))
    # linear saves its input x (10x64 fp32, the weight is a parameter: not counted); relu saves its output
    assert total == 2 * 10 * 64 * 4 and largest == 10 * 64 * 4


def test_budget_arithmetic_and_advice():
    b = memory.Budget(params=100, trainable=100, batch=32, length=128, held=1000, weights=400, gradients=400,
                      optimizer=800, compute_copies=0, act_fixed=100, act_per_row=1000, act_largest=3200,
                      available=10_000, available_from="test", device="cpu")
    assert b.activations == 100 + 32 * 1000 and b.peak == 1000 + 400 + 800 + 32_100 + 4 * 3200 and not b.fits
    small = b.at(batch=4)
    assert small.activations == 4100 and small.act_largest == 400 and small.fits
    assert memory.advice(b, layers=12)[0] == "--batch-size 4 --grad-accum 8 (same effective batch)"


def test_train_records_predicted_and_measured_peak(tiny_models, toy_csv, tmp_path):
    import tunesmith

    run = tunesmith.train(str(toy_csv), model=str(tiny_models["bert"]), epochs=1, batch_size=8, bf16="off",
                          baselines=False, audit=False, out=str(tmp_path / "run"))
    m = json.loads((run.path / "metrics.json").read_text())["memory"]
    assert m["peak_rss_mib"] > 100 and abs(m["predicted_peak_mib"] / m["peak_rss_mib"] - 1) < 0.25


def test_train_refuses_a_run_that_cannot_fit_in_one_line(tiny_models, toy_csv, tmp_path, capsys, monkeypatch):
    held = memory.rss_bytes()
    monkeypatch.setattr(memory, "device_bytes", lambda device: (held + (1 << 20), "a small test machine"))
    code, _, err = run_cli(["train", toy_csv, "--model", tiny_models["bert"], "--epochs", "1", "--batch-size",
                            "64", "--no-baselines", "--no-audit", "--out", tmp_path / "run"], capsys, monkeypatch)
    line = one_line_error(code, err)
    assert "more than the" in line and "a small test machine" in line and "--batch-size 64" in line
    assert not (tmp_path / "run" / "model").exists()


def test_plan_command_and_dry_run(tiny_models, toy_csv, tmp_path, capsys, monkeypatch):
    args = [toy_csv, "--model", tiny_models["bert"], "--batch-size", "8", "--bf16", "off"]
    code, out, err = run_cli(["plan", *args], capsys, monkeypatch)
    assert code == 0, err
    assert "predicted peak" in out and "time an epoch" in out and "fits" in out
    code, out, err = run_cli(["train", *args, "--dry-run", "--out", tmp_path / "run"], capsys, monkeypatch)
    assert code == 0 and "predicted peak" in out and not (tmp_path / "run").exists()  # nothing was written
    monkeypatch.setattr(memory, "device_bytes", lambda device: (memory.rss_bytes() + (1 << 20), "tiny"))
    code, out, _ = run_cli(["plan", *args], capsys, monkeypatch)
    assert code == 1 and "does not fit" in out


def test_plan_counts_lora_as_few_trainable_weights(tiny_models, toy_csv):
    from tunesmith.plan import plan

    full = plan(str(toy_csv), model=str(tiny_models["bert"]), batch_size=8, bf16="off", timed=False)
    lora = plan(str(toy_csv), model=str(tiny_models["bert"]), batch_size=8, bf16="off", strategy="lora",
                timed=False)
    assert lora["trainable"] < full["trainable"] / 4 and lora["optimizer"] == 8 * lora["trainable"]
    assert full["act_per_row"] > 0 and "seconds_per_step" not in full


def test_sharded_budget_and_advice_name_sharding_only_where_devices_are():
    b = memory.Budget(params=100, trainable=100, batch=32, length=128, held=10_000, weights=8000,
                      gradients=8000, optimizer=16_000, compute_copies=0, act_fixed=0, act_per_row=10,
                      act_largest=10, available=24_000, available_from="test", device="cuda")
    four = memory.sharded(b, 4)
    assert (four.held, four.gradients, four.optimizer, four.batch) == (4000, 2000, 4000, 8)
    assert four.fits and not b.fits
    assert "--nproc 2 --shard full" not in memory.advice(b, layers=2, devices=1)  # one GPU: nothing to shard over
    assert memory.advice(b, layers=2, devices=8)[-1] == "--nproc 2 --shard full"  # 2 is the fewest that fit
    cpu = memory.sharded(b.at(device="cpu"), 4)
    assert cpu.held == b.held  # processes of one CPU machine share its memory: the whole copy stays counted


def test_plan_per_process_under_nproc_and_shard(tiny_models, toy_csv, capsys, monkeypatch):
    from tunesmith.plan import plan

    one = plan(str(toy_csv), model=str(tiny_models["bert"]), batch_size=8, bf16="off", timed=False)
    two = plan(str(toy_csv), model=str(tiny_models["bert"]), batch_size=8, bf16="off", timed=False, nproc=2,
               shard="full")
    assert two["batch"] == 4 and two["optimizer"] == one["optimizer"] // 2 and two["shard"] == "full"
    code, out, err = run_cli(["plan", toy_csv, "--model", tiny_models["bert"], "--batch-size", "8", "--bf16", "off",
                              "--nproc", "2", "--shard", "full"], capsys, monkeypatch)
    assert code == 0, err
    flat = " ".join(out.split())  # rich wraps the title
    assert "per process of --nproc 2, --shard full" in flat and "time a step" in flat
