"""Knowledge retention: did fine-tuning break what the encoder already knew?

With sentence pairs scored for similarity (STS-B style): Spearman of cosine similarity before vs after.
Without them: linear CKA between base and tuned embeddings of the user's own texts (1 = no drift).
"""
from __future__ import annotations

import numpy as np

from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError
from tunesmith.models.embed import embed, embed_with

MAX_ROWS = 2000  # retention is a health check; 2000 pairs give a Spearman within ~0.02


def load_pairs(path, max_rows: int = MAX_ROWS):
    df = read_table(path)
    missing = [c for c in ("sentence1", "sentence2", "score") if c not in df.columns]
    if missing:
        raise TunesmithError(f"{path}: retention data needs columns sentence1, sentence2, score; "
                             f"missing {', '.join(missing)} (the columns are: {', '.join(map(str, df.columns))})")
    df = df.dropna(subset=["sentence1", "sentence2", "score"]).head(max_rows)
    score = df["score"].astype(float).to_numpy()
    return df["sentence1"].astype(str).tolist(), df["sentence2"].astype(str).tolist(), score


def sts_spearman(emb1: np.ndarray, emb2: np.ndarray, score: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr((emb1 * emb2).sum(1), score).statistic)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019: similarity of two representations of the same rows, invariant to rotation."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    hsic = np.linalg.norm(x.T @ y) ** 2
    return float(hsic / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def encoder_of(model):
    """The transformer body of a *ForSequenceClassification model (BertModel, GPT2Model, ...)."""
    return model.base_model


def sts_retention(base_name: str, tuned_encoder, tok, path, max_length: int) -> dict:
    s1, s2, score = load_pairs(path)
    before = sts_spearman(embed(base_name, s1, max_length), embed(base_name, s2, max_length), score)
    after = sts_spearman(embed_with(tuned_encoder, tok, s1, max_length), embed_with(tuned_encoder, tok, s2, max_length),
                         score)
    return {"kind": "sts_spearman", "file": str(path), "n": len(score), "before": before, "after": after,
            "change": after - before}


def cka_drift(base_name: str, tuned_encoder, tok, texts: list[str], max_length: int, sample: int = 1000,
              seed: int = 0, after: np.ndarray | None = None) -> dict:
    """`after`: the tuned encoder's vectors of `texts` when the caller has them already (Pooled, from the test
    scoring pass); otherwise one more pass over the texts."""
    if len(texts) > sample:
        keep = sorted(np.random.default_rng(seed).choice(len(texts), sample, replace=False))
        texts = [texts[i] for i in keep]
        after = after[keep] if after is not None else None
    before = embed(base_name, texts, max_length)
    if after is None:
        after = embed_with(tuned_encoder, tok, texts, max_length)
    return {"kind": "linear_cka", "n": len(texts), "cka": linear_cka(before.astype(np.float64), after.astype(np.float64))}


def for_run(recipe, model, tok, texts: list[str], max_length: int, after: np.ndarray | None = None) -> dict:
    """STS retention when the recipe names pair data, otherwise representation drift on the test texts
    (`after`: the tuned vectors of `texts`, Pooled's, when the caller captured them)."""
    enc = encoder_of(model)
    if recipe.retention_data:
        return sts_retention(recipe.model, enc, tok, recipe.retention_data, max_length)
    return cka_drift(recipe.model, enc, tok, texts, max_length, seed=recipe.seed, after=after)


class Pooled:
    """Captures what embed_with computes (masked mean of the last hidden states, L2-normalised) from the
    encoder's forward passes while active, so the test scoring pass also gives retention's "after" vectors.

    Why: cka_drift re-ran the tuned encoder over every test text, in fp32: 13.9 s of a 305 s run on 600 rows
    of 20 intents (429 test texts, 2 loaded cores), as long as the test scoring pass itself. Rows are matched
    by their token ids (not by the scorer's batch order), so any batching gives the same rows; the vectors
    come from the scorer's bf16 pass (linear CKA the same to 5 decimals on 120 intents test rows, 0.97201:
    tests/core/test_fixed_costs.py)."""

    def __init__(self, encoder):
        self.encoder, self.seen, self.handle = encoder, {}, None

    def __enter__(self):
        self.handle = self.encoder.register_forward_hook(self._grab, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def _grab(self, module, args, kwargs, out):
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        h = out[0] if isinstance(out, tuple) else out.last_hidden_state
        if ids is None or mask is None or h is None:
            return
        h = h.float()
        m = mask.to(h.dtype).unsqueeze(-1)
        v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1).cpu().numpy()
        for row, keep, vec in zip(ids.tolist(), mask.bool().tolist(), v):  # the row's own ids, either padding side
            self.seen.setdefault(tuple(t for t, k in zip(row, keep) if k), vec)

    def vectors(self, ids: list[list[int]]) -> np.ndarray | None:
        """One vector per row of `ids` (token ids as encode() gives them); None when a row was not seen."""
        try:
            return np.stack([self.seen[tuple(x)] for x in ids]) if ids else None
        except KeyError:
            return None
