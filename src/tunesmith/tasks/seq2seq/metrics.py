"""Scores of generated texts against one reference each, from the reference libraries:

- chrF (sacrebleu: character 6-grams, beta 2, no word n-grams, i.e. chrF not chrF++) and BLEU (sacrebleu,
  its standard `13a` tokenisation, mixed case, exponential smoothing), both corpus-level on 0-100;
- ROUGE-L (rouge-score's LCS F-measure, per sentence, averaged) over lower-cased Unicode words: the
  package's default tokenizer keeps only [a-z0-9], which would score every non-Latin text zero;
- exact match: the same text once whitespace is collapsed (case counts).

Intervals resample test sentences (evaluate/bootstrap.py). Corpus metrics are not means of sentence
scores, so each sentence keeps sacrebleu's sufficient statistics and a resample sums them: the way
sacrebleu's own paired bootstrap computes them, 1000 resamples in milliseconds.
"""
from __future__ import annotations

import re

import numpy as np

from tunesmith.evaluate.bootstrap import bootstrap_ci, paired_bootstrap

METRICS = ("chrf", "bleu", "rouge_l", "exact_match")
NAMES = {"chrf": "chrF", "bleu": "BLEU", "rouge_l": "ROUGE-L", "exact_match": "exact match"}


class _Words:
    """rouge-score's tokenizer interface over Unicode words."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


def _metrics():
    from sacrebleu.metrics import BLEU, CHRF

    return CHRF(), BLEU(tokenize="13a")


def signatures() -> dict:
    """sacrebleu's signatures of the two corpus metrics (what a paper reports beside the number)."""
    chrf, bleu = _metrics()
    for m in (chrf, bleu):
        m.corpus_score(["a"], [["a"]])  # sacrebleu signs a metric once it has scored (it counts references)
    return {"chrf": str(chrf.get_signature()), "bleu": str(bleu.get_signature())}


def statistics(hyps: list[str], refs: list[str]) -> dict[str, np.ndarray]:
    """Per sentence: chrF's and BLEU's sufficient statistics, ROUGE-L F, exact match (0/1)."""
    from rouge_score import rouge_scorer

    chrf, bleu = _metrics()
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Words())
    norm = lambda s: " ".join(s.split())  # noqa: E731
    n = len(hyps)
    return {"chrf": np.asarray(chrf._extract_corpus_statistics(hyps, [refs]), dtype=np.int64).reshape(n, -1),
            "bleu": np.asarray(bleu._extract_corpus_statistics(hyps, [refs]), dtype=np.int64).reshape(n, -1),
            "rouge_l": np.array([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]),
            "exact_match": np.array([float(norm(h) == norm(r)) for h, r in zip(hyps, refs)])}


def scores(st: dict, idx=None) -> dict:
    """The four metrics of the sentences `idx` (all when None)."""
    chrf, bleu = _metrics()
    pick = (lambda a: a) if idx is None else (lambda a: a[idx])  # noqa: E731
    if not len(pick(st["rouge_l"])):
        return {k: 0.0 for k in METRICS}
    return {"chrf": float(chrf._compute_score_from_stats(list(pick(st["chrf"]).sum(0))).score),
            "bleu": float(bleu._compute_score_from_stats(list(pick(st["bleu"]).sum(0))).score),
            "rouge_l": float(pick(st["rouge_l"]).mean()), "exact_match": float(pick(st["exact_match"]).mean())}


def sentence_chrf(st: dict) -> np.ndarray:
    """chrF of each sentence alone (the side-by-side view and its regressions)."""
    chrf, _ = _metrics()
    return np.array([chrf._compute_score_from_stats(list(row)).score for row in st["chrf"]])


def measure(hyps: list[str], refs: list[str], seed: int = 0, with_ci: bool = True) -> tuple[dict, dict]:
    """(metrics with n and ci95, the per-sentence statistics for paired comparisons)."""
    st = statistics(hyps, refs)
    m = {**scores(st), "n": len(hyps)}
    if with_ci and hyps:
        m["ci95"] = bootstrap_ci(lambda _, idx: scores(st, idx), np.arange(len(hyps)), np.arange(len(hyps)),
                                 seed=seed)
    return m, st


def paired(st_a: dict, st_b: dict, seed: int = 0) -> dict:
    """Per metric: a − b on the same resampled sentences (bootstrap.paired_bootstrap), a's and b's
    statistics laid end to end so one index array picks either system's sentence."""
    n = len(st_a["rouge_l"])
    both = {k: np.concatenate([st_a[k], st_b[k]]) for k in st_a}
    score = lambda _, idx: scores(both, idx)  # noqa: E731
    return {k: paired_bootstrap(score, np.arange(n), np.arange(n), np.arange(n) + n, k, seed=seed) for k in METRICS}
