"""Retention for embedding runs (evaluate/retention.py, as classification and token runs have it): STS Spearman
before/after with --retention-data, linear CKA on the test texts without; in metrics, the verdict and the report."""
from __future__ import annotations

import pandas as pd

import tunesmith

from emb_runs import pairs_run, toy_pairs, write_csv  # noqa: F401  (pairs_run: a fixture)


def test_sts_retention_before_and_after(tiny_models, shared_data, tmp_path):
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    sts = tmp_path / "sts.csv"
    pd.read_csv(shared_data / "sts" / "test.csv").head(60).to_csv(sts, index=False)  # the first rows, in tmp
    data = write_csv(tmp_path / "pairs.csv", toy_pairs(80))
    run = tunesmith.train(data, model=str(tiny_models["bert"]), epochs=2, lr=5e-3, batch_size=16, seed=0,
                          bf16="off", max_length=32, retention_data=str(sts), baselines=False,
                          out=str(tmp_path / "run"))
    r = run.metrics["retention"]
    assert r["kind"] == "sts_spearman" and r["n"] == 60 and r["file"] == str(sts)
    assert -1 <= r["before"] <= 1 and -1 <= r["after"] <= 1 and r["before"] != r["after"]
    assert abs(r["change"] - (r["after"] - r["before"])) < 1e-12
    # "after" is the saved model's, as sentence-transformers reads it
    rows = pd.read_csv(sts)
    st = SentenceTransformer(str(run.path / "model"), device="cpu")
    e1, e2 = (st.encode(rows[c].astype(str).tolist(), normalize_embeddings=True) for c in ("sentence1", "sentence2"))
    assert abs(spearmanr((e1 * e2).sum(1), rows["score"]).statistic - r["after"]) < 1e-3
    assert "general similarity (Spearman)" in run.metrics["verdict"] and f"{r['after']:.2f}" in run.metrics["verdict"]
    page = (run.path / "report.html").read_text()
    assert "Knowledge retention" in page and f"{r['before']:.3f} before" in page


def test_without_retention_data_cka_on_test_texts(pairs_run):
    r = pairs_run.metrics["retention"]
    assert r["kind"] == "linear_cka" and 0 < r["cka"] < 1  # trained 6 epochs at lr 5e-3: it moved
    assert r["n"] == len(_test_texts(pairs_run))
    assert "linear CKA" in pairs_run.metrics["verdict"]
    assert "Knowledge retention" in (pairs_run.path / "report.html").read_text()


def _test_texts(run) -> list[str]:
    """The distinct anchors and positives of the run's held-out test share (what CKA is measured on)."""
    from tunesmith.config import make_recipe
    from tunesmith.pipeline import prepare_data

    rec = run.recipe
    data = prepare_data(make_recipe(train=rec["train"], seed=rec["seed"], test_fraction=rec["test_fraction"],
                                    val_fraction=rec["val_fraction"]))
    return list(dict.fromkeys([*data.test.a, *data.test.b]))
