"""Retrieval, Spearman and kNN figures of metrics.measure, on hand-made similarities; BM25 through bm25s."""
from __future__ import annotations

import numpy as np
import pytest

from tunesmith.tasks.embedding.data import Examples
from tunesmith.tasks.embedding.metrics import bm25_sim, compare, measure, per_query


def test_per_query_figures_by_hand():
    s = np.array([[0.9, 0.5, 0.1, 0.0],    # relevant doc 1 ranked 2nd
                  [0.1, 0.2, 0.3, 0.9]])   # relevant docs 0 and 3: ranked 4th and 1st
    pq = per_query(s, [{1}, {0, 3}])
    assert pq[0].tolist() == pytest.approx([0.0, 1.0, 1.0, 0.5, 1 / np.log2(3)])
    ndcg = (1 + 1 / np.log2(5)) / (1 + 1 / np.log2(3))
    assert pq[1].tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0, ndcg])


def _lookup(vectors):
    return lambda q, d: np.stack([vectors[t] for t in q]) @ np.stack([vectors[t] for t in d]).T


def test_pairs_query_the_pool_of_distinct_positives():
    ex = Examples("pairs", ["a", "a", "b", "c"], ["x", "y", "y", "z"])
    vec = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1], "x": [1, 0, 0], "y": [0.9, 0.1, 0], "z": [0, 1, 0]}
    m, items = measure(ex, _lookup({k: np.asarray(v, float) for k, v in vec.items()}))
    assert (m["queries"], m["docs"]) == (3, 3)
    # a: x, y both relevant and first; b: y relevant, z ranked first; c: z relevant, ranked last (all zero)
    assert items == pytest.approx([1.0, 0.5, 1 / 3])
    assert m["mrr@10"] == pytest.approx(np.mean(items)) and m["ci95"]["mrr@10"][0] <= m["mrr@10"]


def test_scored_pairs_spearman_and_paired_comparison():
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 5, 80)
    ex = Examples("scored", [f"a{i}" for i in range(80)], [f"b{i}" for i in range(80)], score=score.tolist())
    good = lambda q, d: np.diag(score + rng.normal(0, 0.1, 80))  # noqa: E731
    bad = lambda q, d: np.diag(rng.uniform(0, 5, 80))  # noqa: E731
    mg, ig = measure(ex, good)
    mb, ib = measure(ex, bad)
    assert mg["spearman"] > 0.95 > 0.5 > mb["spearman"] and mg["ci95"]["spearman"][1] <= 1.0
    c = compare("scored", ex, ig, ib)
    assert c["ci95"][0] > 0 and c["diff"] == pytest.approx(mg["spearman"] - mb["spearman"])


def test_labelled_texts_leave_one_out_and_knn():
    texts = [f"t{i}" for i in range(12)]
    labels = ["x"] * 6 + ["y"] * 6
    vec = {t: np.asarray([1.0, 0.01 * i] if l == "x" else [0.01 * i, 1.0]) for i, (t, l) in enumerate(zip(texts, labels))}
    ex = Examples("labelled", texts, label=labels)
    m, _ = measure(ex, _lookup(vec), memory=ex)
    assert m["mrr@10"] == 1.0 and m["recall@5"] == 1.0 and m["knn_accuracy"] == 1.0 and m["queries"] == 12


def test_bm25_ranks_the_doc_sharing_words_first():
    s = bm25_sim(["where is my parcel", "reset the password"], ["parcel delivery late", "password reset link",
                                                                 "opening hours"])
    assert s.argmax(1).tolist() == [0, 1] and s[:, 2].max() == 0
