"""Entity metrics: the fast per-sentence counts behind the intervals equal seqeval; baselines; seen/unseen."""
from __future__ import annotations

import random

import numpy as np
from seqeval.metrics import f1_score, precision_score, recall_score

from tunesmith.tasks.token import metrics as M
from tunesmith.tasks.token.data import Sentence

TYPES = ["LOC", "ORG", "PER"]
LABELS = ["O"] + [f"{p}-{t}" for t in TYPES for p in "BI"]


def random_tags(rng, n):
    return [[rng.choice(LABELS) if rng.random() < 0.3 else "O" for _ in range(rng.randint(1, 12))] for _ in range(n)]


def test_counts_equal_seqeval_on_messy_predictions():
    rng = random.Random(0)
    gold = [M.decode([np.array([LABELS.index(t) for t in g])], LABELS)[0] for g in random_tags(rng, 300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(LABELS) for t in g] for g in gold]
    pred = M.decode([np.array([LABELS.index(t) for t in p]) for p in pred], LABELS)  # I- after O: repaired
    m, c = M.measure(gold, pred, TYPES, seed=1, n_boot=200)
    s = M.scores(c.sum(0))
    for k, f in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert abs(m[k] - f(gold, pred)) < 1e-12 and abs(float(s[k]) - m[k]) < 1e-12
    lo, hi = m["ci95"]["f1"]
    assert lo < m["f1"] < hi and all(len(v["ci95"]) == 2 for v in m["per_type"].values())
    assert m["entities"] == sum(v["support"] for v in m["per_type"].values())


def test_seqeval_reads_an_i_after_o_as_a_start_as_decode_does():
    raw = [["O", "I-PER", "I-PER", "O", "B-LOC", "I-ORG"]]
    fixed = M.decode([np.array([LABELS.index(t) for t in raw[0]])], LABELS)
    assert fixed == [["O", "B-PER", "I-PER", "O", "B-LOC", "B-ORG"]]
    assert f1_score(raw, raw) == f1_score(fixed, fixed) == 1.0
    assert f1_score([fixed[0]], raw) == 1.0


def test_dictionary_baseline_tags_every_training_entity_longest_first():
    train = [Sentence(["New", "York", "and", "York"], ["B-LOC", "I-LOC", "O", "B-PER"], "", [], 1)]
    lex = M.dictionary(train)
    assert M.dictionary_tags(lex, ["I", "love", "New", "York", "York"]) == ["O", "O", "B-LOC", "I-LOC", "B-PER"]


def test_seen_unseen_and_confusion():
    test = [Sentence(["Paris", "and", "Zorb"], ["B-LOC", "O", "B-ORG"], "", [], 1)]
    gold = M.entity_sets([test[0].tags])
    pred = M.entity_sets([["B-LOC", "O", "B-PER"]])
    su = M.seen_unseen(test, gold, pred, {"paris"})
    assert su["seen"]["f1"] == 1.0 and su["unseen"]["f1"] == 0.0 and su["share_seen"] == 0.5
    cm = M.confusion(gold, M.entity_sets([["B-LOC", "B-PER", "O"]]), TYPES)
    # LOC right, ORG missed, a spurious PER
    assert cm["matrix"][0][0] == 1 and cm["matrix"][1][3] == 1 and cm["matrix"][3][2] == 1


def test_paired_bootstrap_sees_a_real_difference():
    gold = [["B-PER", "O"]] * 50
    c_good = M.counts(M.entity_sets(gold), M.entity_sets(gold), TYPES)
    c_none = M.counts(M.entity_sets(gold), M.entity_sets([["O", "O"]] * 50), TYPES)
    p = M.paired(c_good, c_none, seed=0, n_boot=200)
    assert p["diff"] == 1.0 and p["significant"]
