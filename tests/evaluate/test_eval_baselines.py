import numpy as np
import pandas as pd
import pytest

from tunesmith.evaluate.baselines import BaselineInput, best_baseline, run_baselines
from tunesmith.tasks import get_task


def fake_embed(texts):
    """Class-revealing vectors: the word after 'about' picks an axis, plus noise."""
    rng = np.random.default_rng(len(texts))
    axes = {"billing": 0, "shipping": 1, "login": 2}
    v = np.array([np.eye(8)[axes.get(t.split()[-1], 3)] for t in texts]) + 0.3 * rng.normal(size=(len(texts), 8))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def toy(n_per_class, counts=(1, 1, 1)):
    texts, labels = [], []
    for label, c in zip(["billing", "login", "shipping"], counts):
        for i in range(n_per_class * c):
            texts.append(f"question {i} about {label}")
            labels.append(label)
    return texts, labels


def test_single_label_baselines_and_skip_for_decoders():
    task = get_task("single_label", ["billing", "login", "shipping"])
    tr_t, tr_l = toy(30, counts=(3, 1, 1))
    te_t, te_l = toy(10)
    inp = BaselineInput(task, tr_t, task.targets(tr_l).numpy(), te_t, fake_embed)
    m, preds = run_baselines(inp, task.targets(te_l).numpy())
    assert set(m) == {"majority", "zero_shot", "few_shot_8", "few_shot_all"}
    assert (preds["majority"] == 0).all()                  # billing is 3x as frequent
    assert m["few_shot_8"]["macro_f1"] > m["majority"]["macro_f1"] + 0.5
    for b in m.values():
        assert set(b) >= {"accuracy", "macro_f1", "n", "ci95"} and b["n"] == 30
    assert best_baseline(m) in ("few_shot_8", "few_shot_all", "zero_shot")
    dec = BaselineInput(task, tr_t, task.targets(tr_l).numpy(), te_t, fake_embed, is_decoder=True)
    m2, _ = run_baselines(dec, task.targets(te_l).numpy())
    assert "decoder" in m2["zero_shot"]["skipped"] and "macro_f1" not in m2["zero_shot"]


def test_multilabel_baselines_return_indicator_rows():
    task = get_task("multilabel", ["billing", "login", "shipping"])
    tr_t, tr_l = toy(20)
    te_t, te_l = toy(5)
    inp = BaselineInput(task, tr_t, task.targets([[l] for l in tr_l]).numpy().astype(int), te_t, fake_embed)
    m, preds = run_baselines(inp, task.targets([[l] for l in te_l]).numpy().astype(int))
    assert preds["few_shot_8"].shape == (15, 3)
    assert m["few_shot_all"]["micro_f1"] > m["majority"]["micro_f1"] + 0.5


@pytest.mark.slow
def test_intents_few_shot_far_above_majority(shared_data, tmp_path, monkeypatch):
    """Real BANKING77 sample with the built-in model: frozen embeddings already know the intents."""
    from tunesmith.config import make_recipe
    from tunesmith.data.dataset import load_examples
    from tunesmith.evaluate.baselines import for_run
    from transformers import AutoConfig

    from tunesmith.models.registry import resolve

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    sample = lambda ex, k: ex.subset(pd.DataFrame({"l": ex.labels}).groupby("l").head(k).index)
    train = sample(load_examples(shared_data / "intents" / "train.csv").examples, 10)
    test = sample(load_examples(shared_data / "intents" / "test.csv").examples, 4)
    labels = sorted(set(train.labels))
    task = get_task("single_label", labels)
    m, _ = for_run(make_recipe(train="x"), task, train, test, AutoConfig.from_pretrained(resolve("minilm")), 64)
    assert m["few_shot_8"]["macro_f1"] > m["majority"]["macro_f1"] + 0.4
    assert m["few_shot_all"]["ci95"]["macro_f1"][0] > 0.5
    assert m["zero_shot"]["macro_f1"] > 5 * m["majority"]["macro_f1"]  # label names carry meaning
