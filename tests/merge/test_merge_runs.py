"""Merging real (tiny) run folders end to end: run folder out, sweep table + plot, heads, errors, LoRA."""
import json
import shutil

import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, pipeline

import tunesmith
from tunesmith.errors import TunesmithError
from tunesmith.merge.run import merge
from tunesmith.merge.spec import from_flags, from_yaml


def weights(path):
    return AutoModelForSequenceClassification.from_pretrained(path).state_dict()


@pytest.fixture(scope="module")
def sts(tmp_path_factory):
    p = tmp_path_factory.mktemp("sts") / "sts.csv"
    pairs = [("a cat sits on the mat", "a cat sat on a mat", 4.6), ("my invoice is wrong", "the invoice is wrong", 4.0),
             ("a parcel was delivered", "the courier brought a parcel", 3.2), ("I forgot my password", "sunny weather", 0.2),
             ("my account is locked", "cannot sign in to my account", 3.5), ("refund please", "a dog runs", 0.0)]
    pd.DataFrame(pairs * 2, columns=["sentence1", "sentence2", "score"]).to_csv(p, index=False)
    return p


def test_linear_sweep_writes_a_run_folder(tiny_run, tiny_models, sts, tmp_path):
    eval_csv = tiny_run.recipe["train"]
    spec = from_flags("linear", str(tiny_models["bert"]), [str(tiny_run.path)])
    run = merge(spec, tmp_path / "m", weights=[0.0, 0.5, 1.0], eval_data=eval_csv, retention_data=str(sts))
    rows = pd.read_csv(run.path / "sweep.csv")
    assert list(rows["weight"]) == [0.0, 0.5, 1.0] and rows["chosen"].sum() == 1
    assert {"macro_f1", "accuracy", "retention"} <= set(rows.columns)
    assert (run.path / "sweep.png").stat().st_size > 1000
    m = json.loads((run.path / "metrics.json").read_text())
    chosen = rows[rows["chosen"]].iloc[0]
    best = rows["macro_f1"].max()
    assert chosen["macro_f1"] >= best - 0.01
    assert chosen["retention"] == rows[rows["macro_f1"] >= best - 0.01]["retention"].max()
    assert m["merge"]["method"] == "linear" and m["sweep"]["chosen_weight"] == chosen["weight"]
    assert m["test"]["macro_f1"] == pytest.approx(chosen["macro_f1"])
    # the merged folder is a normal run: tunesmith and a transformers pipeline both load it
    clf = pipeline("text-classification", model=str(run.path / "model"), tokenizer=str(run.path / "model"))
    assert clf("my invoice is wrong")[0]["label"] in {"billing", "shipping", "login"}
    assert len(tunesmith.predict(run.path, ["my parcel"])) == 1
    assert "provenance" in (run.path / "recipe.yaml").read_text()


def test_weight_one_is_the_tuned_model_and_zero_keeps_the_base_body(tiny_run, tiny_models, tmp_path):
    base = str(tiny_models["bert"])
    tuned = weights(tiny_run.path / "model")
    one = weights(merge(from_flags("linear", base, [str(tiny_run.path)], 1.0), tmp_path / "one").path / "model")
    assert all(torch.allclose(one[k], tuned[k]) for k in tuned)
    zero = weights(merge(from_flags("task_arithmetic", base, [str(tiny_run.path)], 0.0), tmp_path / "zero").path / "model")
    body = AutoModelForSequenceClassification.from_pretrained(tiny_run.path / "model").state_dict()
    base_sd = __import__("transformers").AutoModel.from_pretrained(base).state_dict()
    k = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(zero[k], base_sd[k.removeprefix("bert.")]) and not torch.allclose(zero[k], body[k])
    # the head the base lacks comes from the tuned model, whatever the weight
    assert torch.allclose(zero["classifier.weight"], tuned["classifier.weight"])


def test_ties_of_two_runs_and_yaml(tiny_run, tiny_models, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run.path, other)
    sd = weights(other / "model")
    m = AutoModelForSequenceClassification.from_pretrained(other / "model")
    torch.manual_seed(1)
    m.load_state_dict({k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in sd.items()})
    m.save_pretrained(other / "model")
    cfg = tmp_path / "ties.yaml"
    cfg.write_text(f"merge_method: ties\nbase_model: {tiny_models['bert']}\nmodels:\n"
                   f"  - model: {tiny_run.path}\n    parameters: {{weight: 1.0, density: 0.5}}\n"
                   f"  - model: {other}\n    parameters: {{weight: 1.0, density: 0.5}}\n")
    run = merge(from_yaml(cfg), tmp_path / "ties")
    assert run.metrics["merge"]["method"] == "ties" and (run.path / "model" / "model.safetensors").exists()


def test_mismatched_architecture_is_a_clear_error(tiny_run, tiny_models, tmp_path):
    with pytest.raises(TunesmithError, match="roberta model but the tuned model is bert"):
        merge(from_flags("linear", str(tiny_models["roberta"]), [str(tiny_run.path)]), tmp_path / "x")
    assert not (tmp_path / "x").exists()  # a failed merge leaves no half-written folder behind
    with pytest.raises(TunesmithError, match="needs --eval"):
        merge(from_flags("linear", str(tiny_models["bert"]), [str(tiny_run.path)]), tmp_path / "y", weights=[0, 1])
    with pytest.raises(TunesmithError, match="is one of the merged models"):
        merge(from_flags("linear", str(tiny_models["bert"]), [str(tiny_run.path)]), tiny_run.path, overwrite=True)


def test_lora_adapter_is_merged_into_the_base(tiny_models, tmp_path):
    data = tmp_path / "toy.csv"
    from conftest import toy_rows

    pd.DataFrame(toy_rows()).to_csv(data, index=False)
    lora = tunesmith.train(str(data), model=str(tiny_models["bert"]), strategy="lora", epochs=1, lr=1e-2,
                           batch_size=32, out=str(tmp_path / "lora"), audit=False, baselines=False)
    assert (lora.path / "adapter" / "adapter_config.json").exists()
    run = merge(from_flags("linear", str(tiny_models["bert"]), [str(lora.path / "adapter")], 1.0), tmp_path / "m")
    got, want = weights(run.path / "model"), weights(lora.path / "model")
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert run.metrics and "lora_adapter" in (run.path / "recipe.yaml").read_text()
