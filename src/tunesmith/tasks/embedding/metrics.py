"""What an embedding model is measured by, from a similarity function `sim(queries, docs) → scores matrix`
(the encoder's cosine, or BM25's), so that the fine-tuned model and every baseline are scored alike:

- pairs and triplets: each distinct anchor queries the pool of all distinct positives of the split;
  recall@1/5/10, MRR@10 and nDCG@10 (binary relevance) per query, bootstrap intervals over queries.
  Recall@k is divided by min(k, relevant) (BEIR's capped recall): with one positive it is plain recall;
- scored pairs: Spearman between the pairs' similarities and their scores, intervals over pairs;
- labelled texts: each text queries the split's other texts, same label relevant; and kNN accuracy
  (similarity-weighted vote of the 10 nearest training texts).
"""
from __future__ import annotations

import numpy as np

from tunesmith.evaluate.bootstrap import bootstrap_ci, paired_bootstrap, paired_mean_diff

RETRIEVAL = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
MAIN = {"pairs": "mrr@10", "triplets": "mrr@10", "labelled": "mrr@10", "scored": "spearman"}
KNN = 10


def retrieval_setup(ex) -> tuple[list[str], list[str], list[set[int]], bool]:
    """(queries, docs, relevant doc ids per query, whether a query's own row is in docs and must be skipped)."""
    if ex.kind == "labelled":
        by = {}
        for i, l in enumerate(ex.label):
            by.setdefault(l, set()).add(i)
        keep = [i for i, l in enumerate(ex.label) if len(by[l]) > 1]
        return [ex.a[i] for i in keep], list(ex.a), [by[ex.label[i]] - {i} for i in keep], keep
    docs = list(dict.fromkeys(ex.b))
    d_id = {t: i for i, t in enumerate(docs)}
    rel = {}
    for a, b in zip(ex.a, ex.b):
        rel.setdefault(a, set()).add(d_id[b])
    return list(rel), docs, list(rel.values()), None


def per_query(scores: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """(queries, 5): capped recall@1/5/10, reciprocal rank within 10, nDCG@10."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    disc = 1 / np.log2(np.arange(2, 12))
    out = np.zeros((len(relevant), len(RETRIEVAL)))
    for q, rel in enumerate(relevant):
        hit = np.isin(top[q], list(rel))
        n = len(rel)
        out[q, :3] = [hit[:k].sum() / min(k, n) for k in (1, 5, 10)]
        first = np.flatnonzero(hit)
        out[q, 3] = 1 / (first[0] + 1) if len(first) else 0.0
        out[q, 4] = (hit * disc[:len(hit)]).sum() / disc[:min(n, 10)].sum()
    return out


def _means(yt, _yp) -> dict:
    return dict(zip(RETRIEVAL, yt.mean(0).tolist()))


def _spearman(yt, yp) -> dict:
    from scipy.stats import spearmanr

    return {"spearman": float(spearmanr(yp, yt).statistic)}


def _accuracy(yt, yp) -> dict:
    return {"knn_accuracy": float((yt == yp).mean())}


def measure(ex, sim, memory=None, seed: int = 0, with_ci: bool = True) -> tuple[dict, list]:
    """(metrics, per-item values the paired comparison resamples: main metric per query, or similarities).
    `memory`: the training Examples kNN votes with (labelled texts only)."""
    m, ci = {"n": len(ex)}, {}
    if ex.kind == "scored":
        qs, ds = list(dict.fromkeys(ex.a)), list(dict.fromkeys(ex.b))
        s = sim(qs, ds)
        qi, di = {t: i for i, t in enumerate(qs)}, {t: i for i, t in enumerate(ds)}
        pred = np.array([s[qi[a], di[b]] for a, b in zip(ex.a, ex.b)], dtype=np.float64)
        gold = np.asarray(ex.score, dtype=np.float64)
        m.update(_spearman(gold, pred))
        if with_ci:
            ci.update(bootstrap_ci(_spearman, gold, pred, seed=seed))
        items = pred.tolist()
    else:
        qs, ds, rel, own = retrieval_setup(ex)
        s = np.asarray(sim(qs, ds), dtype=np.float64)
        if own is not None:  # a text is not its own neighbour
            s[np.arange(len(own)), own] = -np.inf
        pq = per_query(s, rel)
        m.update(_means(pq, None))
        m["queries"], m["docs"] = len(qs), len(ds)
        if with_ci:
            ci.update(bootstrap_ci(_means, pq, pq, seed=seed))
        items = pq[:, RETRIEVAL.index("mrr@10")].tolist()
    if ex.kind == "labelled" and memory is not None:
        s = np.asarray(sim(list(ex.a), list(memory.a)), dtype=np.float64)
        gold, pred = np.asarray(ex.label), knn_vote(s, memory.label)
        m.update(_accuracy(gold, pred))
        if with_ci:
            ci.update(bootstrap_ci(_accuracy, gold, pred, seed=seed))
    if with_ci:
        m["ci95"] = ci
    return m, items


def knn_vote(scores: np.ndarray, labels: list[str], k: int = KNN) -> np.ndarray:
    """Each row's label by the similarity-weighted vote of its k nearest (scores shifted to be positive)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = []
    for q, idx in enumerate(top):
        w = scores[q, idx] - scores[q, idx].min() + 1e-6
        votes = {}
        for i, x in zip(idx, w):
            votes[labels[i]] = votes.get(labels[i], 0.0) + x
        out.append(max(votes, key=votes.get))
    return np.asarray(out)


def compare(kind: str, ex, mine: list, theirs: list, seed: int = 0) -> dict:
    """Fine-tuned minus a baseline on the same test items, with its 95% interval."""
    if kind == "scored":
        gold = np.asarray(ex.score, dtype=np.float64)
        return paired_bootstrap(_spearman, gold, np.asarray(mine), np.asarray(theirs), "spearman", seed=seed)
    return {"metric": "mrr@10", **paired_mean_diff(mine, theirs, seed=seed)}


def bm25_sim(queries: list[str], docs: list[str]) -> np.ndarray:
    """BM25 (bm25s, Lucene's variant, English stopwords) of every query against the docs."""
    import bm25s

    index = bm25s.BM25()
    index.index(bm25s.tokenize(docs, return_ids=False, show_progress=False), show_progress=False)
    toks = bm25s.tokenize(queries, return_ids=False, show_progress=False)
    return np.stack([index.get_scores(t) for t in toks]) if queries else np.zeros((0, len(docs)))
