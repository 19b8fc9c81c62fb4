"""Entity-level measurement: precision, recall and F1 over whole entities (type and span must both match,
seqeval's definition), micro over all entities and per type; token accuracy only as a side figure.

The headline figures come from seqeval itself. The intervals resample sentences (bootstrap), which needs
a metric costing microseconds: each sentence's (true positives, predicted, gold) per type are counted
once, and a resample's figures are sums of those rows (tests/token checks they equal seqeval's).
"""
from __future__ import annotations

import numpy as np

from tunesmith.evaluate.bootstrap import N_BOOT, _draws
from tunesmith.tasks.token.data import entities, repair


def decode(pred_ids: list[np.ndarray], labels: list[str]) -> list[list[str]]:
    """Tag ids per word → BIO tags with every entity starting at a B- (an I- after O starts one)."""
    return [repair([labels[int(i)] for i in p])[0] for p in pred_ids]


def entity_sets(tags: list[list[str]]) -> list[set]:
    return [set(entities(t)) for t in tags]


def counts(gold: list[set], pred: list[set], types: list[str]) -> np.ndarray:
    """(sentences, types, 3): true positives, predicted and gold entities of each type in each sentence."""
    index = {t: i for i, t in enumerate(types)}
    c = np.zeros((len(gold), len(types), 3), dtype=np.int64)
    for s, (g, p) in enumerate(zip(gold, pred)):
        for e in g & p:
            c[s, index[e[0]], 0] += 1
        for e in p:
            if e[0] in index:
                c[s, index[e[0]], 1] += 1
        for e in g:
            c[s, index[e[0]], 2] += 1
    return c


def prf(tp, n_pred, n_gold):
    """Precision, recall, F1 (0 where undefined, as seqeval's zero_division default gives)."""
    tp, n_pred, n_gold = (np.asarray(x, dtype=np.float64) for x in (tp, n_pred, n_gold))
    p = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    r = np.divide(tp, n_gold, out=np.zeros_like(tp), where=n_gold > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=(p + r) > 0)
    return p, r, f


def scores(c: np.ndarray) -> dict:
    """Micro precision/recall/F1 of (..., types, 3) counts summed over sentences: one value per leading index
    (a resample's), a scalar for (types, 3)."""
    tot = c.sum(axis=-2)
    p, r, f = prf(tot[..., 0], tot[..., 1], tot[..., 2])
    return {"precision": p, "recall": r, "f1": f}


def seqeval_scores(gold_tags: list[list[str]], pred_tags: list[list[str]], types: list[str]) -> dict:
    """Micro P/R/F1 and per type (support = gold entities), by seqeval (its default, conlleval-like mode:
    on repaired BIO tags it is the strict span-and-type match)."""
    from seqeval.metrics import classification_report

    rep = classification_report(gold_tags, pred_tags, output_dict=True, zero_division=0)
    micro = rep["micro avg"]
    per = {t: {"precision": float(rep[t]["precision"]) if t in rep else 0.0,
               "recall": float(rep[t]["recall"]) if t in rep else 0.0,
               "f1": float(rep[t]["f1-score"]) if t in rep else 0.0,
               "support": int(rep[t]["support"]) if t in rep else 0} for t in types}
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]), "f1": float(micro["f1-score"]),
            "per_type": per}


def measure(gold_tags, pred_tags, types, seed: int = 0, n_boot: int = N_BOOT, with_ci: bool = True) -> tuple[dict, np.ndarray]:
    """(metrics, counts): entity P/R/F1 micro and per type with bootstrap ci95 over sentences, token accuracy,
    sentences and gold entities."""
    m = seqeval_scores(gold_tags, pred_tags, types)
    c = counts(entity_sets(gold_tags), entity_sets(pred_tags), types)
    words = sum(len(g) for g in gold_tags)
    m["token_accuracy"] = float(sum(a == b for g, p in zip(gold_tags, pred_tags) for a, b in zip(g, p)) / max(words, 1))
    m["n"] = len(gold_tags)
    m["entities"] = int(c[..., 2].sum())
    m["predicted_entities"] = int(c[..., 1].sum())
    if with_ci and len(gold_tags):
        m["ci95"] = intervals(c, seed, n_boot)
        for i, lo_hi in m["ci95"].pop("per_type").items():
            m["per_type"][types[i]]["ci95"] = lo_hi
    return m, c


def resampled(c: np.ndarray, seed: int, n_boot: int) -> np.ndarray:
    """(n_boot, types, 3) counts of sentence resamples: one matrix product with the draws' multiplicities."""
    n = len(c)
    draws = _draws(n, n_boot, seed)
    w = np.zeros((n_boot, n), dtype=np.float64)
    np.add.at(w, (np.repeat(np.arange(n_boot), n), draws.ravel()), 1.0)
    return (w @ c.reshape(n, -1).astype(np.float64)).reshape(n_boot, *c.shape[1:])


def intervals(c: np.ndarray, seed: int, n_boot: int = N_BOOT) -> dict:
    r = resampled(c, seed, n_boot)
    s = scores(r)
    out = {k: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] for k, v in s.items()}
    _, _, f = prf(r[..., 0], r[..., 1], r[..., 2])  # (n_boot, types)
    out["per_type"] = {i: [float(np.quantile(f[:, i], 0.025)), float(np.quantile(f[:, i], 0.975))]
                       for i in range(c.shape[1])}
    return out


def paired(c_a: np.ndarray, c_b: np.ndarray, seed: int, n_boot: int = N_BOOT) -> dict:
    """Entity F1 of a minus b on the same resampled sentences."""
    fa = scores(resampled(c_a, seed, n_boot))["f1"]
    fb = scores(resampled(c_b, seed, n_boot))["f1"]
    d = fa - fb
    point = float(scores(c_a.sum(0))["f1"] - scores(c_b.sum(0))["f1"])
    lo, hi = np.quantile(d, [0.025, 0.975])
    return {"metric": "f1", "diff": point, "ci95": [float(lo), float(hi)], "p_not_better": float((d <= 0).mean()),
            "significant": bool(lo > 0)}


# ---- what generalises: entities seen in training or not, and which types are confused -----------------------------
def surface(tokens: list[str], start: int, end: int) -> str:
    return " ".join(tokens[start:end]).casefold()


def train_surfaces(sentences) -> set[str]:
    return {surface(s.tokens, a, b) for s in sentences for _, a, b in entities(s.tags)}


def seen_unseen(sentences, gold: list[set], pred: list[set], seen: set[str]) -> dict:
    """P/R/F1 on entities whose text was (not) an entity in training: a predicted entity counts on the side
    its own text falls on; `share_seen` is the share of gold entities seen (entity leakage)."""
    tally = {"seen": [0, 0, 0], "unseen": [0, 0, 0]}
    for s, g, p in zip(sentences, gold, pred):
        for e in p:
            side = "seen" if surface(s.tokens, e[1], e[2]) in seen else "unseen"
            tally[side][1] += 1
            tally[side][0] += e in g
        for e in g:
            tally["seen" if surface(s.tokens, e[1], e[2]) in seen else "unseen"][2] += 1
    out = {}
    for side, (tp, n_pred, n_gold) in tally.items():
        p, r, f = prf(tp, n_pred, n_gold)
        out[side] = {"precision": float(p), "recall": float(r), "f1": float(f), "entities": n_gold}
    total = tally["seen"][2] + tally["unseen"][2]
    out["share_seen"] = tally["seen"][2] / total if total else 0.0
    return out


def confusion(gold: list[set], pred: list[set], types: list[str]) -> dict:
    """Entities matched by span: rows the gold type or "spurious" (no gold entity with that span), columns the
    predicted type or "missed" (no predicted entity with that span)."""
    k = len(types)
    index = {t: i for i, t in enumerate(types)}
    m = np.zeros((k + 1, k + 1), dtype=np.int64)
    for g, p in zip(gold, pred):
        gs = {(a, b): t for t, a, b in g}
        ps = {(a, b): t for t, a, b in p}
        for span, t in gs.items():
            m[index[t], index[ps[span]] if span in ps and ps[span] in index else k] += 1
        for span, t in ps.items():
            if span not in gs and t in index:
                m[k, index[t]] += 1
    return {"rows": types + ["spurious"], "columns": types + ["missed"], "matrix": m.tolist()}


# ---- baselines -----------------------------------------------------------------------------------------------
def dictionary(train_sentences) -> dict[tuple, str]:
    """Every training entity's words → its most frequent type (ties: the first seen)."""
    seen: dict[tuple, dict[str, int]] = {}
    for s in train_sentences:
        for t, a, b in entities(s.tags):
            d = seen.setdefault(tuple(s.tokens[a:b]), {})
            d[t] = d.get(t, 0) + 1
    return {k: max(v, key=v.get) for k, v in seen.items()}


def dictionary_tags(lexicon: dict[tuple, str], tokens: list[str]) -> list[str]:
    """Tags every occurrence of a training entity's words (exact words, longest first, left to right)."""
    longest = max((len(k) for k in lexicon), default=0)
    tags, i = ["O"] * len(tokens), 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            t = lexicon.get(tuple(tokens[i:i + n]))
            if t is not None:
                tags[i:i + n] = [f"B-{t}"] + [f"I-{t}"] * (n - 1)
                i += n
                break
        else:
            i += 1
    return tags
