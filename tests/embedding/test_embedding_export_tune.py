"""An embedding run exports to ONNX with a parity check on its vectors, and `tunesmith tune` compares trials
on validation MRR@10."""
from __future__ import annotations

import numpy as np
import pytest

from tunesmith.errors import TunesmithError
from tunesmith.export import export_run
from tunesmith.predictor import Predictor

from emb_runs import pairs_run, toy_pairs, write_csv  # noqa: F401  (pairs_run: a fixture)


def test_onnx_export_gives_the_same_vectors(pairs_run, tmp_path):
    from tunesmith.export.onnx import SessionModel, make_session

    doc = export_run(pairs_run.path, "onnx", out=tmp_path / "onnx", n_rows=16)
    p = doc["parity"]
    assert p["max_abs_prob_diff"] < 1e-4 and p["label_agreement"] == 1.0 and p["mean_top_prob_diff"] < 1e-6
    ref = Predictor.load(pairs_run.path, device="cpu")
    graph = ref.with_model(SessionModel(make_session(tmp_path / "onnx" / "model.onnx"), ref.model.config,
                                        "sentence_embedding"))
    texts = ["tiger", "a short note on piano today"]
    assert np.allclose(graph.outputs(texts), ref.outputs(texts), atol=1e-5)


def test_onnx_vectors_that_drift_fail_parity(pairs_run, tmp_path, monkeypatch):
    from tunesmith.export import onnx

    real = onnx.SessionModel.forward

    def off(self, input_ids, attention_mask, **kw):  # the graph's vectors come out shifted
        out = real(self, input_ids, attention_mask)
        out.sentence_embedding[..., 0] += 1.0
        return out

    monkeypatch.setattr(onnx.SessionModel, "forward", off)
    with pytest.raises(TunesmithError, match="parity check failed"):
        export_run(pairs_run.path, "onnx", out=tmp_path / "bad", n_rows=8)
    assert not (tmp_path / "bad").exists()


def test_tune_embeddings_on_validation_mrr(tiny_models, tmp_path):
    import yaml
    from rich.console import Console

    from tunesmith.tune import search

    train = write_csv(tmp_path / "train.csv", toy_pairs(120))
    test = write_csv(tmp_path / "test.csv", toy_pairs(30, seed=7))
    cfg = tmp_path / "space.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": {"baselines": False, "audit": False, "bf16": "off", "max_length": 32,
                                              "val_fraction": 0.25},
                                   "tune": {"strategies": ["full"], "lr": {"full": [1e-3, 5e-3]}, "epochs": [2, 2],
                                            "batch_size": [16], "startup_trials": 0, "pruner": "none"}}))
    args = search.TuneArgs(train=str(train), test=str(test), models=[str(tiny_models["bert"])], trials=2,
                           out=str(tmp_path / "t"), config=str(cfg))
    doc = search.tune(args, Console(stderr=True))
    assert doc["metric"] == "mrr@10" and len(doc["trials"]) == 2
    assert all(0 < r["metric"] <= 1 for r in doc["trials"])
    best = max(doc["trials"], key=lambda r: r["metric"])
    assert doc["winner"]["trial"] == best["trial"] and "mrr@10" in doc["winner"]["test"]
    v = Predictor.load(tmp_path / "t" / "best").outputs(["tiger"])
    assert v.shape == (1, 32)
