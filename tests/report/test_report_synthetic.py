"""Report and card from analysis of synthetic logits: multilabel runs and runs without extras render too."""
import numpy as np
import yaml

from tunesmith.evaluate.analysis import analyse
from tunesmith.evaluate.verdict import verdict
from tunesmith.tasks import get_task


def test_multilabel_analysis_renders_report_and_card():
    task = get_task("multilabel", ["a", "b", "c"])
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) > 0.5).astype(int)
    logits = np.where(rng.random((200, 3)) < 0.85, 2 * y - 1, 1 - 2 * y) * 5.0
    base = {"majority": {"micro_f1": 0.3, "macro_f1": 0.2, "subset_accuracy": 0.1, "accuracy": 0.1, "n": 100}}
    history = [{"epoch": 1, "train_loss": 0.6, "val_loss": 0.5}, {"epoch": 2, "train_loss": 0.3, "val_loss": 0.7}]
    extra = analyse(task, y[100:], logits[100:], y_val=y[:100], val_logits=logits[:100], baseline_metrics=base,
                    baseline_preds={"majority": np.zeros((100, 3), dtype=int)},
                    history=history)
    assert "confusion" not in extra and set(extra["per_class"]) == {"a", "b", "c"}
    assert extra["comparison"]["significant"] and extra["overfitting"]["flag"]
    m = {"task": "multilabel", "labels": task.labels, "test": {**task.metrics(y[100:], task.decide(task.probabilities(logits[100:]))),
         "ci95": extra.pop("ci95")}, "baselines": base, "history": history, **extra}
    m["verdict"] = verdict(m)
    assert "beat the majority baseline" in m["verdict"] and "overfitting" in m["verdict"]
    doc = {"recipe": {"model": "minilm", "strategy": "lora", "train": "data/x/train.csv"},
           "provenance": {"data": {"train": {"path": "train.csv", "sha256": "ab" * 32}}, "rows": {"train": 1}}}
    page, text = task.report("ml", m, doc, None)  # what pipeline.write_report writes for a multilabel run
    assert page.count("data:image/svg+xml;base64,") >= 4 and "micro-F1" in page and "Confusion" not in page
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert {x["type"] for x in meta["model-index"][0]["results"][0]["metrics"]} == {"accuracy", "macro_f1", "micro_f1"}


def test_verdict_words_for_noise_and_worse():
    base = {"test": {"macro_f1": 0.8, "n": 10}, "comparison": {"baseline": "few_shot_8", "metric": "macro_f1",
                                                               "diff": 0.01, "ci95": [-0.02, 0.04]}}
    assert "did not beat the 8-shot baseline by more than the noise" in verdict(base)
    base["comparison"].update(diff=-0.1, ci95=[-0.15, -0.05])
    assert "WORSE than the 8-shot baseline by 10.0" in verdict(base)
    base["retention"] = {"kind": "sts_spearman", "before": 0.82, "after": 0.79}
    assert "general similarity (Spearman) fell from 0.82 to 0.79" in verdict(base)
