"""The contrastive stage before LP-FT (tasks/classification/contrastive.py): it trains the body, `auto`
decides it from rows per class, a seed repeats it, `off` skips it, and --resume does not run it again."""
from __future__ import annotations

import json

import pytest
import torch

import tunesmith
from conftest import StopAfter, toy_rows, write_csv
from tunesmith.config import make_recipe
from tunesmith.errors import TunesmithError
from tunesmith.tasks.classification import contrastive
from tunesmith.tasks.classification.contrastive import FEW_ROWS, decide, train_body
from tunesmith.train.loop import Interrupted

QUICK = {"epochs": 2, "lr": 1e-3, "batch_size": 8, "audit": False, "baselines": False, "patience": 0}


def few_shot_rows(per_class: int) -> list[dict]:
    """toy_rows' 3 classes, `per_class` rows each."""
    seen: dict[str, int] = {}
    out = []
    for r in toy_rows():
        if seen.get(r["label"], 0) < per_class:
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            out.append(r)
    return out


def test_stage_moves_the_body_not_the_head(tiny_mean_bert, tmp_path):
    from tunesmith.data.batching import encode
    from tunesmith.tasks.classification import SingleLabel

    rows = few_shot_rows(6)
    task = SingleLabel(sorted({r["label"] for r in rows}))
    recipe = make_recipe(train=str(tmp_path / "x.csv"), model=str(tiny_mean_bert), seed=0)
    model, tok, _ = task.load_model(recipe)
    body0 = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    head0 = model.classifier.weight.clone()
    ids = encode(tok, [r["text"] for r in rows], 32)
    done = train_body(model, ids, task.targets([r["label"] for r in rows]), tok.pad_token_id, recipe,
                      torch.device("cpu"), False, lambda *a, **k: None, lr=1e-3, batch_size=8)
    moved = [k for k, v in model.base_model.state_dict().items() if not torch.equal(v, body0[k])]
    assert any("encoder.layer" in k for k in moved), "the encoder layers must change"
    assert torch.equal(model.classifier.weight, head0)  # the probe start fits the head afterwards
    assert done["epochs"] == contrastive.EPOCHS and len(done["train_loss"]) == contrastive.EPOCHS
    assert all(x == x and x > 0 for x in done["train_loss"])  # finite, positive: an MNRL loss was computed


def test_auto_follows_rows_per_class(tmp_path):
    r = make_recipe(train=str(tmp_path / "x.csv"))
    few = torch.arange(10).repeat_interleave(8)                  # 8 rows a class
    many = torch.arange(10).repeat_interleave(FEW_ROWS + 1)      # past the bound
    assert decide("auto", r, few, multi_label=False) == "on"
    assert decide("auto", r, many, multi_label=False) == "off"
    assert decide("off", r, few, multi_label=False) == "off"
    assert decide("auto", r, few, multi_label=True) == "off"
    lora = r.model_copy(update={"strategy": "lora"})
    assert decide("auto", lora, few, multi_label=False) == "off"
    with pytest.raises(TunesmithError, match="--contrastive on: --strategy lora"):
        decide("on", lora, few, multi_label=False)


def timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if "second" not in k} for h in history]


def _train(data, model, out, **kw):
    return tunesmith.train(str(data), model=str(model), out=str(out), seed=0, **{**QUICK, **kw})


def test_train_records_it_and_repeats_with_the_seed(tiny_mean_bert, tmp_path, monkeypatch):
    data = write_csv(tmp_path / "few.csv", few_shot_rows(10))
    a = _train(data, tiny_mean_bert, tmp_path / "a")
    b = _train(data, tiny_mean_bert, tmp_path / "b")
    assert a.recipe["contrastive"] == "on"  # auto, resolved from 8 train rows a class
    assert a.metrics["contrastive"]["epochs"] == contrastive.EPOCHS
    assert a.metrics["test"] == b.metrics["test"]
    assert timeless(a.metrics["history"]) == timeless(b.metrics["history"])

    # off: the stage never runs and the run is the one without it
    monkeypatch.setattr(contrastive, "train_body", lambda *a, **k: pytest.fail("the stage ran"))
    off = _train(data, tiny_mean_bert, tmp_path / "off", contrastive="off")
    assert off.recipe["contrastive"] == "off" and "contrastive" not in off.metrics
    assert off.metrics["test"] != a.metrics["test"]  # the stage changed the model the fine-tune started from


def test_many_rows_per_class_leave_it_off(tiny_mean_bert, tmp_path, monkeypatch):
    rows = toy_rows() * 3  # 120 rows a class, past FEW_ROWS after the splits
    data = write_csv(tmp_path / "many.csv", rows)
    monkeypatch.setattr(contrastive, "train_body", lambda *a, **k: pytest.fail("the stage ran"))
    run = _train(data, tiny_mean_bert, tmp_path / "r", epochs=1)
    assert run.recipe["contrastive"] == "off"


def test_resume_does_not_run_it_again(tiny_mean_bert, tmp_path, monkeypatch):
    data = write_csv(tmp_path / "few.csv", few_shot_rows(10))
    whole = _train(data, tiny_mean_bert, tmp_path / "whole")
    out = tmp_path / "cut"
    flag = StopAfter(1, 1)
    with pytest.raises(Interrupted):
        _train(data, tiny_mean_bert, out, on_event=flag.on_event, stop=flag)
    calls = []
    real = contrastive.train_body

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(contrastive, "train_body", counted)
    resumed = tunesmith.train(out=str(out), resume=True)
    assert calls == []
    assert resumed.metrics["test"] == whole.metrics["test"]
    assert json.loads((out / "metrics.json").read_text())["test"]["macro_f1"] == whole.metrics["test"]["macro_f1"]
