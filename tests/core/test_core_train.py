"""The main job on tiny models: run folder contents, reproducibility, resume, LoRA, multilabel, predict."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import StopAfter

import tunesmith
from tunesmith.errors import TunesmithError
from tunesmith.train.loop import Interrupted


def _train(data, model, out, **kw):
    kw = {"epochs": 2, "lr": 1e-3, "batch_size": 16, "audit": False, "baselines": False, **kw}
    return tunesmith.train(str(data), model=str(model), out=str(out), **kw)


def test_run_folder_contents_and_pipeline_label_names(toy_csv, tiny_models, tmp_path):
    from transformers import pipeline

    run = _train(toy_csv, tiny_models["bert"], tmp_path / "r")
    m = json.loads((run.path / "metrics.json").read_text())
    assert m["task"] == "single_label" and m["labels"] == ["billing", "login", "shipping"]
    for key in ("accuracy", "macro_f1", "n"):
        assert key in m["test"] and key in m["validation"]
    assert len(m["history"]) == 2 and {"train_loss", "val_loss", "val_macro_f1"} <= set(m["history"][0])
    assert m["train_seconds"] > 0 and m["train_samples_per_second"] > 0
    # where the time went, stage by stage, in the order they ran; they add up to the wall time measured
    st = m["stage_seconds"]
    assert list(st) == ["prepare", "audit", "load", "baselines", "before_fit", "fit", "save", "measure"]
    assert min(st.values()) >= 0 and st["fit"] >= m["train_seconds"] > 0
    assert abs(sum(st.values()) - m["wall_seconds"]) < 0.05  # each rounded to 1 ms
    assert "Time by stage: " in (run.path / "report.html").read_text()
    doc = yaml.safe_load((run.path / "recipe.yaml").read_text())
    assert doc["recipe"]["max_length"] == 128 and doc["recipe"]["strategy"] == "full"
    assert doc["provenance"]["data"]["train"]["sha256"].startswith("sha256:")
    assert {"python", "torch", "transformers"} <= set(doc["provenance"]["versions"])
    clf = pipeline("text-classification", model=str(run.path / "model"))
    assert clf("my invoice charge")[0]["label"] in {"billing", "login", "shipping"}


def test_same_seed_same_metrics_and_config_rerun(toy_csv, tiny_models, tmp_path):
    a = _train(toy_csv, tiny_models["bert"], tmp_path / "a")
    b = tunesmith.train(config=str(a.path / "recipe.yaml"), out=str(tmp_path / "b"))
    assert a.metrics["test"] == b.metrics["test"]
    assert [h["train_loss"] for h in a.metrics["history"]] == [h["train_loss"] for h in b.metrics["history"]]


def test_interrupted_run_resumes_to_identical_metrics(toy_csv, tiny_models, tmp_path):
    full = _train(toy_csv, tiny_models["bert"], tmp_path / "full", epochs=3, patience=0)

    flag = StopAfter(1, 3)  # Ctrl-C during step 9 (mid second epoch)

    with pytest.raises(Interrupted):
        _train(toy_csv, tiny_models["bert"], tmp_path / "part", epochs=3, patience=0, on_event=flag.on_event, stop=flag)
    assert (tmp_path / "part" / "checkpoint" / "last.pt").exists()
    assert not (tmp_path / "part" / "metrics.json").exists()
    resumed = tunesmith.train(resume=True, out=str(tmp_path / "part"))
    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.metrics["resumed"] is True and "resumed" not in full.metrics  # its stage_seconds: this process
    assert [h["train_loss"] for h in resumed.metrics["history"]] == [h["train_loss"] for h in full.metrics["history"]]


def test_lora_saves_adapter_and_merged_model(toy_csv, tiny_models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    run = _train(toy_csv, tiny_models["roberta"], tmp_path / "lora", strategy="lora", lora_r=4)
    assert (run.path / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(run.path / "model")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_models["roberta"], num_labels=3)
    peft_model = PeftModel.from_pretrained(base, run.path / "adapter")
    x = {"input_ids": __import__("torch").tensor([[0, 5, 6, 7, 2]])}
    merged.eval(), peft_model.eval()
    assert np.allclose(merged(**x).logits.detach(), peft_model(**x).logits.detach(), atol=1e-4)


@pytest.mark.parametrize("strategy", ["head", "freeze:1"])
def test_frozen_strategies_leave_bottom_untouched(toy_csv, tiny_models, tmp_path, strategy):
    from safetensors.torch import load_file

    run = _train(toy_csv, tiny_models["bert"], tmp_path / strategy.replace(":", ""), strategy=strategy)
    before = load_file(tiny_models["bert"] / "model.safetensors")
    after = load_file(run.path / "model" / "model.safetensors")
    emb = next(k for k in before if "word_embeddings" in k)
    assert np.array_equal(before[emb].numpy(), after["bert." + emb if "bert." + emb in after else emb].numpy())
    top = next(k for k in before if "layer.1." in k and "weight" in k)
    top_after = after["bert." + top if "bert." + top in after else top].numpy()
    assert np.array_equal(before[top].numpy(), top_after) == (strategy == "head")


def test_multilabel_from_pipe_separated_labels(tiny_models, tmp_path):
    rows = []
    for i in range(60):
        labs = ["a"] if i % 3 == 0 else (["b"] if i % 3 == 1 else ["a", "b"])
        rows.append({"text": f"{' '.join('alpha' for _ in labs if 'a' in labs)} beta{i}" if "b" in labs else f"alpha {i}",
                     "labels": "|".join(labs)})
    p = tmp_path / "ml.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    run = _train(p, tiny_models["bert"], tmp_path / "ml")
    assert run.metrics["task"] == "multilabel" and run.metrics["labels"] == ["a", "b"]
    assert {"micro_f1", "macro_f1", "subset_accuracy"} <= set(run.metrics["test"])
    preds = tunesmith.predict(run.path, ["alpha 3", "alpha beta9"])
    assert set(preds.columns) >= {"text", "prediction", "score"}


def test_integer_labels_and_jsonl(tiny_models, tmp_path):
    p = tmp_path / "d.jsonl"
    pd.DataFrame({"sentence": [f"word{i % 2} x{i}" for i in range(40)], "class": [i % 2 for i in range(40)]}) \
        .to_json(p, orient="records", lines=True)
    run = _train(p, tiny_models["gpt2"], tmp_path / "j", epochs=1)
    assert run.metrics["labels"] == ["0", "1"]


def test_predict_and_evaluate(toy_csv, tiny_models, tmp_path):
    run = _train(toy_csv, tiny_models["bert"], tmp_path / "r", epochs=3)
    out = tmp_path / "preds.csv"
    frame = tunesmith.predict(run.path, str(toy_csv), out=str(out))
    assert len(pd.read_csv(out)) == 120 and set(frame["prediction"]) <= {"billing", "login", "shipping"}
    with pytest.raises(TunesmithError, match="already exists"):
        tunesmith.predict(run.path, str(toy_csv), out=str(out))
    m = tunesmith.evaluate(run.path, str(toy_csv))
    acc = (frame["prediction"] == pd.read_csv(toy_csv)["label"]).mean()
    assert m["n"] == 120 and abs(m["accuracy"] - acc) < 1e-9
