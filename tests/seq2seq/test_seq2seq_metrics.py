"""The metrics are sacrebleu's and rouge-score's own numbers; intervals and paired differences resample
sentences with their sufficient statistics."""
from __future__ import annotations

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF

from tunesmith.tasks.seq2seq import metrics as M
from tunesmith.tasks.seq2seq.task import samples
from tunesmith.tasks.seq2seq.data import Pairs

REFS = ["I am crazy about you.", "Yes! I won twice in a row!", "The cat sleeps on the warm mat.",
        "We will meet again tomorrow morning.", "Das Mädchen läuft über die Straße."] * 8
GOOD = ["I am crazy about you.", "Yes! I won two times in a row!", "The cat sleeps on the mat.",
        "We meet again tomorrow morning.", "Das Mädchen läuft über die Strasse."] * 8
BAD = ["you crazy", "won", "a cat", "tomorrow", "Mädchen"] * 8


def test_corpus_scores_equal_sacrebleus():
    m, _ = M.measure(GOOD, REFS, with_ci=False)
    assert m["chrf"] == pytest.approx(CHRF().corpus_score(GOOD, [REFS]).score)
    assert m["bleu"] == pytest.approx(BLEU(tokenize="13a").corpus_score(GOOD, [REFS]).score)
    assert m["exact_match"] == pytest.approx(0.2) and m["n"] == 40
    assert "nc:6|nw:0" in M.signatures()["chrf"] and "tok:13a" in M.signatures()["bleu"]


def test_rouge_l_reads_unicode_words():
    # rouge-score's default tokenizer drops ä/ü/ß: "Mädchen" would match nothing
    st = M.statistics(["Mädchen läuft"], ["Das Mädchen läuft"])
    assert st["rouge_l"][0] == pytest.approx(0.8)
    assert M.statistics(["same text"], ["same text"])["rouge_l"][0] == 1.0


def test_interval_holds_the_point_and_paired_difference_is_signed():
    m, good = M.measure(GOOD, REFS, seed=1)
    lo, hi = m["ci95"]["chrf"]
    assert lo <= m["chrf"] <= hi and hi - lo > 0
    _, bad = M.measure(BAD, REFS, seed=1)
    d = M.paired(good, bad, seed=1)
    assert d["chrf"]["significant"] and d["chrf"]["ci95"][0] > 0 and d["bleu"]["diff"] > 0
    same = M.paired(good, good, seed=1)
    assert same["chrf"]["diff"] == 0.0 and not same["chrf"]["significant"]


def test_the_largest_regressions_are_marked():
    n = 30
    pairs = Pairs([f"s{i}" for i in range(n)], [f"t{i}" for i in range(n)], list(range(1, n + 1)))
    before = np.full(n, 50.0)
    after = before + np.arange(n)  # better everywhere ...
    after[[25, 27, 29]] = [10.0, 30.0, 40.0]  # ... but three pairs past the first 20 fell
    rows = samples(pairs, [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)], after, before)
    marked = {r["row"]: r["regression"] for r in rows if r["regression"]}
    assert marked == {26: 1, 28: 2, 30: 3}  # 1 = the largest drop; rows are 1-based
    assert len(rows) == 23 and rows[0]["source"] == "s0" and rows[0]["regression"] is None
