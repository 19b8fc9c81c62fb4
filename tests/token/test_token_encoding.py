"""Subword alignment (tag on the first sub-token, -100 on the rest) and windows over long documents (every
word predicted exactly once)."""
from __future__ import annotations

import numpy as np
import pytest

from tunesmith.tasks.token import encoding as E
from tunesmith.tasks.token.data import words_of


@pytest.fixture(scope="module")
def tok(tiny_models):
    from tunesmith.tasks.token.inference import load_tokenizer

    return load_tokenizer(str(tiny_models["bert"]))


def test_label_on_first_subtoken_and_ignore_on_the_rest(tok):
    words = ["unbelievably", "tokenization", "in", "\u200b", "Paris"]  # the 4th word has no sub-token of its own
    w = E.encode(tok, [words], 32, [[1, 2, 0, 0, 3]])
    ids, lab = w.ids[0], w.labels[0]
    pieces = E.word_pieces(tok, [words], 30)[0]
    assert len(pieces[0]) > 1 and pieces[3] == [tok.unk_token_id]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    first = np.cumsum([1] + [len(p) for p in pieces[:-1]])
    want = np.full(len(ids), E.IGNORE)
    want[first] = [1, 2, 0, 0, 3]
    assert lab == want.tolist()
    assert w.own_pos[0].tolist() == first.tolist() and w.own_words[0].tolist() == list(range(5))


def test_a_document_five_times_max_length_has_every_word_predicted_exactly_once(tok):
    max_length = 32
    words = [f"w{i % 7}ord" if i % 5 else "unbelievably" for i in range(5 * max_length)]
    w = E.encode(tok, [words, ["short", "one"]], max_length, [[i % 3 for i in range(len(words))], [0, 1]])
    assert all(len(x) <= max_length for x in w.ids) and w.windowed == 1
    assert sum(s == 0 for s in w.sentence) >= 6  # 5x the length, in overlapping windows
    owned = np.concatenate([o for o, s in zip(w.own_words, w.sentence) if s == 0])
    assert sorted(owned.tolist()) == list(range(len(words)))  # each word from exactly one window
    # consecutive windows share words (context on both sides of a cut)
    spans = [(int(o.min()), int(o.max())) for o, s in zip(w.own_words, w.sentence) if s == 0]
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))
    # merged logits: every word's row comes from the window owning it (logit = its word index)
    per_window = [np.stack([o.astype(np.float32)] * 3, 1) for o in w.own_words]
    merged = E.merge(w, per_window, 3)
    assert merged[0][:, 0].tolist() == list(range(len(words))) and merged[1][:, 0].tolist() == [0, 1]
    # every window's labels sit on word starts only
    assert all(sum(l != E.IGNORE for l in lab) <= len(x) - 2 for lab, x in zip(w.labels, w.ids))


def test_windows_of_a_long_raw_text_through_the_model(tok, tiny_models):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(tiny_models["bert"], num_labels=3)
    text = " ".join(f"word{i}" for i in range(200)) + "."
    words, _, offsets = words_of(text)
    w = E.encode(tok, [text], 24)
    assert w.windowed == 1
    z = E.word_logits(model, w, tok.pad_token_id, 8, False, model.device, 3)
    assert z[0].shape == (len(words), 3) and np.isfinite(z[0]).all() and (np.abs(z[0]).sum(1) > 0).all()


def test_stride_sets_the_words_windows_share(tok):
    words = [f"w{i % 7}ord" for i in range(120)]
    few, many = (E.encode(tok, [words], 32, stride=s) for s in (2, 12))
    assert len(many.ids) > len(few.ids) > 1
    for w in (few, many):  # still each word from exactly one window
        assert sorted(np.concatenate(w.own_words).tolist()) == list(range(len(words)))


def test_window_spans_and_owners():
    wins = E.spans([1] * 20, budget=8, shared=2)
    assert wins[0] == (0, 8) and wins[-1][1] == 20 and all(b[0] < a[1] for a, b in zip(wins, wins[1:]))
    own = E.owners(wins)
    assert own[0][0] == 0 and own[-1][1] == 20 and all(a[1] == b[0] for a, b in zip(own, own[1:]))
    assert all(s <= os_ and oe <= e for (s, e), (os_, oe) in zip(wins, own))
    assert E.spans([3, 9, 1], budget=8, shared=2) == [(0, 1), (1, 2), (2, 3)]  # a word over budget still goes in


def test_byte_level_bpe_words_get_their_running_text_tokens():
    """RoBERTa/GPT-2 style tokenizers read 'world' and ' world' differently: words keep their leading space."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["hello world, the world is wide and the sea is deep"] * 20, vocab_size=300,
                            special_tokens=["<s>", "</s>", "<pad>", "<unk>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>")
    words = ["hello", "world", ",", "the", "sea"]
    assert E.spaced_words(tok)
    pieces = E.word_pieces(tok, [words], 16)[0]
    assert sum(pieces, []) == tok("hello world , the sea", add_special_tokens=False)["input_ids"]
