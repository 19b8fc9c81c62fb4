"""Measuring an instruction-tuned decoder: generations, stop rate, exact match, ROUGE-L,
retrieval-augmented few-shot prompts, and retention perplexity on general text."""
from __future__ import annotations

import re
import string
from pathlib import Path

import numpy as np
import torch

from tunesmith.tasks.sft.data import IGNORE, SFTData, prompt_text, render_prompt
from tunesmith.data.batching import collate, inference_batches
from tunesmith.accel.precision import autocast

SHORT_ANSWER_WORDS = 10  # exact match is only meaningful where references are this short


@torch.no_grad()
def generate(model, tok, prompts: list[list[int]], max_new_tokens: int, bf16: bool, device,
             batch_size: int = 8) -> list[dict]:
    """Greedy continuations of prompt ids. Each: text, tokens, stopped (EOS before the limit)."""
    model.eval()
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    out: list[dict] = [None] * len(prompts)
    for idx in inference_batches([len(p) for p in prompts], batch_size):
        b = {k: v.to(device) for k, v in collate([prompts[i] for i in idx], pad, "left").items()}
        with autocast(bf16, device):
            g = model.generate(**b, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                               pad_token_id=pad)
        for r, i in enumerate(idx):
            new = g[r, b["input_ids"].shape[1]:].tolist()
            stopped = eos in new
            new = new[:new.index(eos)] if stopped else new
            out[i] = {"text": tok.decode(new, skip_special_tokens=True).strip(), "tokens": len(new),
                      "stopped": stopped}
    return out


def normalize(s: str) -> str:
    s = s.lower().translate(str.maketrans("", "", string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 on normalized words. By hand: the rouge-score package pulls nltk for 15 lines of LCS."""
    a, b = normalize(pred).split(), normalize(ref).split()
    if not a or not b:
        return float(a == b)
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def score_generations(gens: list[dict], refs: list[str]) -> dict:
    short = [i for i, r in enumerate(refs) if len(r.split()) <= SHORT_ANSWER_WORDS]
    each = [rouge_l(g["text"], r) for g, r in zip(gens, refs)]
    m = {"n": len(gens), "stop_rate": float(np.mean([g["stopped"] for g in gens])) if gens else 0.0,
         "rouge_l": float(np.mean(each)) if gens else 0.0,
         "rouge_l_each": [round(x, 4) for x in each],  # per prompt: paired comparisons in the verdict
         "mean_new_tokens": float(np.mean([g["tokens"] for g in gens])) if gens else 0.0,
         "n_short": len(short)}
    if short:
        m["exact_match"] = float(np.mean([normalize(gens[i]["text"]) == normalize(refs[i]) for i in short]))
    return m


def few_shot_prompts(tok, train_convs, test_convs, k: int, max_prompt: int, encoder: str = "minilm"):
    """Prompt ids with the k most similar training examples as earlier turns (retrieval-augmented)."""
    from tunesmith.models.embed import embed

    q = embed(encoder, [prompt_text(c.prompt) for c in test_convs])
    d = embed(encoder, [prompt_text(c.prompt) for c in train_convs])
    top = np.argsort(-(q @ d.T), axis=1)[:, :k]
    prompts, shots_used = [], []
    for c, near in zip(test_convs, top):
        for kk in range(k, -1, -1):  # fewer shots when k of them do not fit the length limit
            turns = []
            for j in near[:kk][::-1]:  # most similar last, nearest to the question
                turns += train_convs[j].prompt[-1:] + [{"role": "assistant", "content": train_convs[j].response}]
            ids = render_prompt(tok, turns + c.prompt)
            if len(ids) <= max_prompt or kk == 0:
                break
        prompts.append(ids[-max_prompt:])
        shots_used.append(kk)
    return prompts, float(np.mean(shots_used)) if shots_used else 0.0


def read_texts(path) -> list[str]:
    """General text for retention: a .txt/.md file (paragraphs), or a table's text column
    (`text`, else sentence1/sentence2 of STS-style pairs, else the first string column)."""
    from tunesmith.data.io import read_table
    from tunesmith.errors import TunesmithError

    p = Path(path)
    if p.suffix.lower() in (".txt", ".md"):
        texts = [t.strip() for t in re.split(r"\n\s*\n", p.read_text(encoding="utf-8", errors="replace"))]
    else:
        df = read_table(p)
        cols = [c for c in ("text", "sentence1", "sentence2") if c in df.columns]
        cols = cols[:1] if "text" in cols else cols
        cols = cols or [c for c in df.columns if df[c].dtype == object][:1]
        if not cols:
            raise TunesmithError(f"{p}: retention data needs a text column (text, or sentence1/sentence2)")
        texts = [str(v) for c in cols for v in df[c].dropna()]
    texts = [t for t in texts if t]
    if not texts:
        raise TunesmithError(f"{p}: no text found for retention perplexity")
    return texts


def text_data(tok, texts: list[str], max_length: int, max_texts: int = 200) -> tuple[SFTData, int]:
    """Plain text as all-target examples (language-model perplexity); returns (data, truncated count)."""
    ids, labels, cut = [], [], 0
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    for t in texts[:max_texts]:
        x = bos + tok(t, add_special_tokens=False)["input_ids"]
        if len(x) > max_length:
            x, cut = x[:max_length], cut + 1
        if len(x) >= 2:
            ids.append(x)
            labels.append([IGNORE] + x[1:])
    return SFTData(ids, labels, list(range(len(ids)))), cut
