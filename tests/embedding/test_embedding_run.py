"""Embedding runs end to end: a tiny BERT learns toy pairs and beats the untouched model; every data form
trains and measures; the run's model/ is a sentence-transformers folder giving tunesmith's own vectors."""
from __future__ import annotations

import numpy as np
import pytest

import tunesmith
from tunesmith.predictor import Predictor

from conftest import toy_rows
from emb_runs import pairs_run, toy_pairs, write_csv  # noqa: F401  (pairs_run: a fixture)


def test_run_beats_the_untouched_model_with_intervals(pairs_run):
    m = pairs_run.metrics
    t, base = m["test"], m["baselines"]
    assert m["task"] == "embedding" and m["form"] == "pairs" and set(base) == {"untouched", "bm25"}
    assert t["mrr@10"] > base["untouched"]["mrr@10"] + 0.2 and t["ci95"]["mrr@10"][0] <= t["mrr@10"]
    c = m["comparisons"]["untouched"]
    assert c["ci95"][0] > 0 and "beat the untouched baseline" in m["verdict"]
    assert m["history"][-1]["train_accuracy"] > m["history"][0]["train_accuracy"]
    assert "Fine-tuned vs baselines" in (pairs_run.path / "report.html").read_text()
    assert "library_name: sentence-transformers" in (pairs_run.path / "MODEL_CARD.md").read_text()


def test_predictor_gives_unit_vectors_that_match_related_texts(pairs_run):
    p = Predictor.load(pairs_run.path)
    recs = p.records(["tiger", "a short note on tiger today", "a short note on piano today"])
    v = np.array([r["vector"] for r in recs])
    assert v.shape == (3, 32) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    frame = tunesmith.predict(pairs_run.path, ["tiger", "piano"])
    assert list(frame.columns) == ["text", "vector"] and len(frame["vector"][0]) == 32


def test_evaluate_a_pairs_file(pairs_run, tmp_path):
    f = write_csv(tmp_path / "more.csv", toy_pairs(40, seed=9))
    m = tunesmith.evaluate(pairs_run.path, f)
    assert m["mrr@10"] > 0.8 and m["queries"] == len({r["anchor"] for r in toy_pairs(40, seed=9)})


def _parity(run_path, texts):
    from sentence_transformers import SentenceTransformer

    ours = Predictor.load(run_path, device="cpu").outputs(texts)
    theirs = SentenceTransformer(str(run_path / "model"), device="cpu").encode(texts, batch_size=4)
    return (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)


def test_model_folder_is_a_sentence_transformer_with_our_vectors(pairs_run):
    long = " ".join(["tiger"] * 80)  # past the run's 32 tokens: both truncate alike
    assert _parity(pairs_run.path, ["tiger", "a short note on piano today", long]).min() >= 0.9999


@pytest.mark.parametrize("form", ["triplets", "scored", "labelled"])
def test_each_form_trains_and_measures(form, tiny_models, shared_data, tmp_path):
    if form == "triplets":
        rows = [{**r, "negative": toy_pairs(1, seed=i + 100)[0]["positive"]} for i, r in enumerate(toy_pairs(60))]
        data, extra, key = write_csv(tmp_path / "t.csv", rows), {}, "mrr@10"
    elif form == "scored":
        data, extra, key = str(shared_data / "sts" / "dev.csv"), {}, "spearman"
        import pandas as pd

        data = write_csv(tmp_path / "sts.csv", pd.read_csv(data).head(80).to_dict("records"))
    else:
        data, extra, key = write_csv(tmp_path / "l.csv", toy_rows()[:60]), {"task": "embedding"}, "knn_accuracy"
    run = tunesmith.train(data, model=str(tiny_models["bert"]), epochs=1, lr=1e-3, batch_size=16, seed=0,
                          bf16="off", max_length=32, out=str(tmp_path / "run"), **extra)
    m = run.metrics
    assert m["form"] == form and key in m["test"] and key in m["baselines"]["bm25"]
    assert -1 <= m["test"][key] <= 1 and m["verdict"].endswith(".")


@pytest.mark.slow
def test_minilm_run_on_sts_saves_a_sentence_transformer(shared_data, tmp_path):
    import pandas as pd

    sts = shared_data / "sts"
    train = write_csv(tmp_path / "train.csv", pd.read_csv(sts / "train.csv").head(64).to_dict("records"))
    test = write_csv(tmp_path / "test.csv", pd.read_csv(sts / "test.csv").head(48).to_dict("records"))
    run = tunesmith.train(train, test=test, epochs=1, batch_size=16, seed=0, bf16="off", max_length=64,
                          val_fraction=0.0, out=str(tmp_path / "run"))
    assert run.metrics["baselines"]["untouched"]["spearman"] > 0.6  # all-MiniLM knows similarity already
    texts = list(pd.read_csv(sts / "test.csv")["sentence1"].head(6)) + ["word " * 100]
    assert _parity(run.path, texts).min() >= 0.9999
