"""Words → sub-token windows with aligned targets, and window logits → one prediction per word.

Alignment: the fast tokenizer's word_ids say which word each sub-token comes from; a word's tag id goes on
its first sub-token and -100 on the rest (ignored by the loss and never read back). A word the tokenizer
drops entirely (a zero-width or control character) stands as the unknown token, so that every word has a
first sub-token and gets a prediction.

Windows: a sentence whose sub-tokens do not fit max_length (with the special tokens) is cut, between words,
into windows that overlap by `overlap(max_length, stride)` sub-tokens. Each word is answered by exactly one window:
in the overlap of two windows the first half of the words belongs to the earlier window and the rest to
the later one, so every word is read with context on both sides. Training uses every word of every window.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tunesmith.errors import TunesmithError

IGNORE = -100


def overlap(max_length: int, stride: int | None = None) -> int:
    """Sub-tokens shared by consecutive windows (what HF tokenizers call the stride): --stride, or a quarter
    of the window, so the words a window answers for have at least an eighth of a window of context on either
    side, and a long document costs about 4/3 of its length. At most half the words' budget (encode)."""
    return max_length // 4 if stride is None else int(stride)


@dataclass
class Windows:
    """Windows over sentences: token ids with special tokens, per-position targets, and which words of which
    sentence each window answers for. len() counts sentences; `ids` are the training units."""
    ids: list[list[int]]
    labels: list[list[int]] | None          # tag id on each word's first sub-token, IGNORE elsewhere
    sentence: list[int]                     # the sentence of each window
    own_pos: list[np.ndarray]               # positions in ids of the first sub-tokens of the words it answers
    own_words: list[np.ndarray]             # those words' indices in the sentence
    n_words: list[int]                      # words per sentence
    gold: list[np.ndarray] | None = None    # tag ids per word of each sentence (labelled data)
    items: list = field(default_factory=list)  # what was encoded (Sentences, texts or word lists), for records

    def __len__(self):
        return len(self.n_words)

    @property
    def windowed(self) -> int:
        """Sentences cut into more than one window."""
        return int(sum(np.bincount(self.sentence, minlength=len(self.n_words)) > 1)) if self.sentence else 0


def check_tokenizer(tok, name: str) -> None:
    if not getattr(tok, "is_fast", False):
        raise TunesmithError(f"model '{name}' has no fast tokenizer; token classification needs one (its word_ids "
                             f"align tags with sub-tokens): choose a model with a tokenizer.json")


def specials(tok) -> tuple[list[int], list[int]]:
    """The special token ids put before and after one sequence ([CLS] ... [SEP], <s> ... </s>)."""
    e = tok(["x"], is_split_into_words=True, add_special_tokens=True)
    wid, ids = e.word_ids(), e["input_ids"]
    first = wid.index(0)
    last = len(wid) - 1 - wid[::-1].index(0)
    return ids[:first], ids[last + 1:]


def spaced_words(tok) -> bool:
    """Whether a word must carry its leading space to get the tokens it has in running text: byte-level BPE
    (RoBERTa, GPT-2) without add_prefix_space reads 'world' and ' world' as different tokens."""
    text = tok("a world", add_special_tokens=False)["input_ids"]
    if tok(["a", "world"], is_split_into_words=True, add_special_tokens=False)["input_ids"] == text:
        return False
    return tok(["a", " world"], is_split_into_words=True, add_special_tokens=False)["input_ids"] == text


def word_pieces(tok, words: list[list[str]], budget: int) -> list[list[list[int]]]:
    """Per sentence, per word: its sub-token ids (at least one: the unknown token; at most `budget`), as the
    words are tokenized in running text."""
    if not words:
        return []
    if spaced_words(tok):
        words = [[w if j == 0 else " " + w for j, w in enumerate(ws)] for ws in words]
    enc = tok(words, is_split_into_words=True, add_special_tokens=False)
    unk = tok.unk_token_id if tok.unk_token_id is not None else tok.pad_token_id
    out = []
    for i, ws in enumerate(words):
        pieces = [[] for _ in ws]
        for t, w in zip(enc["input_ids"][i], enc.word_ids(i)):
            if w is not None:
                pieces[w].append(t)
        out.append([(p or [unk])[:budget] for p in pieces])
    return out


def spans(costs: list[int], budget: int, shared: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) of the windows of one sentence: each within `budget` sub-tokens, consecutive
    ones sharing up to `shared` sub-tokens of whole words, every word in at least one."""
    n, out, s = len(costs), [], 0
    while True:
        e, used = s, 0
        while e < n and used + costs[e] <= budget:
            used += costs[e]
            e += 1
        e = max(e, s + 1)
        out.append((s, e))
        if e >= n:
            return out
        ns, back = e, 0
        while ns - 1 > s and back + costs[ns - 1] <= shared:
            back += costs[ns - 1]
            ns -= 1
        s = ns


def owners(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The words each window answers for: the overlap of two windows is split at its middle word."""
    own = []
    start = 0
    for i, (s, e) in enumerate(windows):
        end = e if i + 1 == len(windows) else (windows[i + 1][0] + e + 1) // 2
        own.append((start, end))
        start = end
    return own


def encode(tok, items: list, max_length: int, tags: list[list[int]] | None = None,
           stride: int | None = None) -> Windows:
    """Windows of `items` (data.Sentence, raw texts or word lists; data.words_of) with targets from `tags`
    (tag ids per word, or None for unlabelled inputs)."""
    from tunesmith.tasks.token.data import words_of

    pre, post = specials(tok)
    budget = max_length - len(pre) - len(post)
    if budget < 2:
        raise TunesmithError(f"--max-length {max_length} leaves {budget} tokens for words after the special "
                             f"tokens; use a larger --max-length")
    shared = min(overlap(max_length, stride), budget // 2)
    words = [words_of(x)[0] for x in items]
    pieces = word_pieces(tok, [w for w in words if w], budget)
    it = iter(pieces)
    pieces = [next(it) if w else [] for w in words]
    w = Windows([], [] if tags is not None else None, [], [], [], [len(x) for x in words],
                [np.asarray(t, dtype=np.int64) for t in tags] if tags is not None else None, list(items))
    for si, ps in enumerate(pieces):
        if not ps:
            continue
        wins = spans([len(p) for p in ps], budget, shared)
        for (s, e), (os_, oe) in zip(wins, owners(wins)):
            ids, first = list(pre), []
            for j in range(s, e):
                first.append(len(ids))
                ids += ps[j]
            ids += post
            first = np.asarray(first, dtype=np.int64)
            w.ids.append(ids)
            w.sentence.append(si)
            w.own_pos.append(first[os_ - s:oe - s])
            w.own_words.append(np.arange(os_, oe))
            if tags is not None:
                lab = np.full(len(ids), IGNORE, dtype=np.int64)
                lab[first] = tags[si][s:e]
                w.labels.append(lab.tolist())
    return w


@torch.inference_mode()
def window_logits(model, ids: list[list[int]], gather: list[np.ndarray], pad_id: int, batch_size: int, bf16: bool,
                  device, hidden: bool = False) -> list[np.ndarray]:
    """Per window, the logits (float32) at the positions `gather` names, in input order: batched by length,
    bf16 where the run computes in bf16, through the CPU engine's inference context (accel). hidden=True:
    the encoder's last hidden states there instead (the probe baseline), under plain autocast only, so the
    model about to train is left exactly as it was."""
    from tunesmith import accel
    from tunesmith.accel.precision import autocast
    from tunesmith.data.batching import collate, inference_batches

    out: list = [None] * len(ids)
    if not ids:
        return out
    was_training = model.training
    model.eval()
    engine = accel.for_device(device, bf16 and not hidden)
    with engine.inference(model, keep=not was_training):
        for batch in inference_batches([len(x) for x in ids], batch_size):
            b = {k: v.to(device) for k, v in collate([ids[i] for i in batch], pad_id).items()}
            with autocast(bf16, device):
                x = model.base_model(**b).last_hidden_state if hidden else model(**b).logits
            x = x.float().cpu().numpy()
            for r, i in enumerate(batch):
                out[i] = x[r, gather[i]]
    model.train(was_training)
    return out


def merge(w: Windows, per_window: list[np.ndarray], n_labels: int) -> list[np.ndarray]:
    """Word logits per sentence: each word from the one window that answers for it."""
    out = [np.zeros((n, n_labels), dtype=np.float32) for n in w.n_words]
    for i, x in enumerate(per_window):
        out[w.sentence[i]][w.own_words[i]] = x
    return out


def word_logits(model, w: Windows, pad_id: int, batch_size: int, bf16: bool, device, n_labels: int):
    return merge(w, window_logits(model, w.ids, w.own_pos, pad_id, batch_size, bf16, device), n_labels)


def word_features(model, w: Windows, pad_id: int, batch_size: int, bf16: bool, device) -> list[np.ndarray]:
    """The untouched encoder's last hidden state at each word's first sub-token, per sentence."""
    return merge(w, window_logits(model, w.ids, w.own_pos, pad_id, batch_size, bf16, device, hidden=True),
                 model.config.hidden_size)
