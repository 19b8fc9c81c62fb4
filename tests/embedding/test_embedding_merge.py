"""tunesmith merge on embedding runs: WiSE-FT between the untouched and the tuned encoder, saved as a
sentence-transformers folder, a sweep chosen by the embedding metric of the --eval data."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tunesmith.merge.run import merge
from tunesmith.merge.spec import from_flags

from conftest import run_cli
from emb_runs import WORDS, pairs_run  # noqa: F401  (a fixture)

TEXTS = ["apple", "all about the river here", "a short note on piano today", "tiger"]


def _vectors(folder, texts=TEXTS) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    from tunesmith.tasks.embedding.inference import embed_texts

    import torch

    model = AutoModel.from_pretrained(folder)
    return embed_texts(model, AutoTokenizer.from_pretrained(folder), texts, 32, 8, False, torch.device("cpu"))


def test_weight_0_is_the_base_and_1_the_tuned_run(pairs_run, tiny_models, tmp_path):
    import tunesmith
    from sentence_transformers import SentenceTransformer

    base, tuned = _vectors(tiny_models["bert"]), _vectors(pairs_run.path / "model")
    assert np.abs(base - tuned).max() > 1e-2  # training moved the vectors: the comparisons below can fail
    for w, want in [(0.0, base), (1.0, tuned)]:
        run = merge(from_flags("linear", str(tiny_models["bert"]), [str(pairs_run.path)], weight=w), tmp_path / f"m{w}")
        np.testing.assert_allclose(_vectors(run.path / "model"), want, atol=1e-5)
        # the merged run answers like a trained one: tunesmith's Predictor and sentence-transformers
        np.testing.assert_allclose(np.array(tunesmith.predict(run.path, TEXTS)["vector"].tolist()), want, atol=1e-5)
        st = SentenceTransformer(str(run.path / "model"), device="cpu").encode(TEXTS)
        np.testing.assert_allclose(st, want, atol=1e-5)
    half = merge(from_flags("linear", str(tiny_models["bert"]), [str(pairs_run.path)], weight=0.5), tmp_path / "h")
    mid = _vectors(half.path / "model")
    assert np.abs(mid - base).max() > 1e-3 and np.abs(mid - tuned).max() > 1e-3


def test_sweep_is_chosen_by_the_embedding_metric(pairs_run, tiny_models, tmp_path):
    spec = from_flags("linear", str(tiny_models["bert"]), [str(pairs_run.path)])
    run = merge(spec, tmp_path / "s", weights=[0.0, 0.5, 1.0], eval_data=pairs_run.recipe["train"])
    rows = pd.read_csv(run.path / "sweep.csv")
    assert list(rows["weight"]) == [0.0, 0.5, 1.0] and rows["chosen"].sum() == 1
    m = run.metrics
    assert m["sweep"]["metric"] == "mrr@10" and m["task"] == "embedding"
    best = rows["mrr@10"].max()
    assert rows["mrr@10"].iloc[-1] > rows["mrr@10"].iloc[0]  # the tuned end beats the untouched one on its data
    chosen = rows[rows["chosen"]].iloc[0]
    assert chosen["mrr@10"] >= best - 0.01 and m["sweep"]["chosen_weight"] == chosen["weight"]
    assert m["test"]["mrr@10"] == pytest.approx(chosen["mrr@10"])
    assert json.loads((run.path / "model" / "modules.json").read_text())[1]["type"].endswith("Pooling")


def test_scored_eval_data_sweep_by_spearman(pairs_run, tiny_models, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    rows = [{"sentence1": a, "sentence2": f"all about the {b} here", "score": 5.0 if a == b else float(rng.integers(0, 3))}
            for a, b in zip(rng.choice(WORDS, 40), rng.choice(WORDS, 40))]
    rows += [{"sentence1": w, "sentence2": f"a short note on {w} today", "score": 5.0} for w in WORDS[:10]]
    sts = tmp_path / "sts.csv"
    pd.DataFrame(rows).to_csv(sts, index=False)
    code, out, err = run_cli(["merge", "--base", tiny_models["bert"], "--tuned", pairs_run.path, "--sweep", "0:1:0.5",
                              "--eval", sts, "--out", tmp_path / "cli"], capsys, monkeypatch)
    assert code == 0, err
    assert "spearman" in out and "merged run folder" in out
    m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert m["sweep"]["metric"] == "spearman" and "spearman" in m["test"]
