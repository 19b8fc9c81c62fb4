"""The embedding loss's fast paths compute what the plain ones do. --mini-batch: the cached (GradCache)
MultipleNegativesRanking loss gives the plain loss's value and gradients, replays dropout exactly, and trains
end to end; length-sorted chunks equal one forward; lazy word-embedding rows step only the rows batches used."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith.config import make_recipe
from tunesmith.tasks.embedding import steps as S

from emb_runs import toy_pairs, write_csv


def _units(tok, rows, negatives: bool = False) -> S.Units:
    cols = [[r["anchor"] for r in rows], [r["positive"] for r in rows]]
    if negatives:  # each row's negative: the next row's positive
        cols.append([rows[(i + 1) % len(rows)]["positive"] for i in range(len(rows))])
    texts = list(dict.fromkeys(t for c in cols for t in c))
    at = {t: i for i, t in enumerate(texts)}
    units = [tuple(at[c[i]] for c in cols) for i in range(len(rows))]
    return S.Units(texts, tok(texts, truncation=True, max_length=32)["input_ids"], units)


def _setup(tiny_models, mini_batch, negatives=False, dropout=0.0):
    from transformers import AutoModel, AutoTokenizer

    path = tiny_models["bert"]
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(path, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model.train()
    rows = list({r["anchor"]: r for r in toy_pairs(40, seed=3)}.values())[:12]
    units = _units(tok, rows, negatives)
    recipe = make_recipe(train="x.csv", mini_batch=mini_batch)
    return model, S.EmbeddingSteps(None, units, None, recipe, tok.pad_token_id, None)


def _grads(model, steps, weight=0.5):
    model.zero_grad(set_to_none=True)
    b = steps.batch(list(range(len(steps.train))), torch.device("cpu"))
    loss, sums = steps.loss(model, b)
    (loss * weight).backward()  # as the loop does: the hook must scale by the weight
    return float(loss.detach()), sums, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(got_run, want_run):
    """Two _grads results: the same loss, sums and gradients."""
    (got_loss, got_sums, got), (want_loss, want_sums, want) = got_run, want_run
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    torch.testing.assert_close(got_sums, want_sums, rtol=1e-5, atol=1e-6)
    assert want.keys() == got.keys() and len(want) > 10
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("negatives", [False, True])
def test_cached_loss_equals_plain_loss_and_gradients(tiny_models, negatives):
    model, plain = _setup(tiny_models, 0, negatives)
    plain.parts = 1  # one forward of the whole batch: the reference
    want_loss, want_sums, want = _grads(model, plain)
    _, cached = _setup(tiny_models, 3, negatives)
    n_texts = len(cached.batch(list(range(len(cached.train))), torch.device("cpu"))["input_ids"])
    assert n_texts > 3 * 2  # several chunks, so the cache is really exercised
    _assert_same(_grads(model, cached), (want_loss, want_sums, want))


def _reference_grads(model, steps, size, seed, weight=0.5):
    """The same chunks forwarded WITH a graph in one pass (the RNG consumed in the cached pass's order): what the
    cached gradient is when each chunk's dropout masks are replayed exactly."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    b = steps.batch(list(range(len(steps.train))), torch.device("cpu"))
    pos, text = b.pop("pos"), b.pop("text")
    parts = S.chunks(b, size)
    e = torch.empty(len(b["input_ids"]), model.config.hidden_size)
    e = e.index_put((torch.cat([c for c, _ in parts]),), torch.cat([S.embed(model, sub) for _, sub in parts]))
    loss, _ = S.EmbeddingSteps.of_embeddings(e, pos, text)
    (loss * weight).backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fast", [False, True])
def test_cached_loss_replays_dropout(tiny_models, fast):
    from tunesmith.accel import cpu_kernels, fast_dropout

    if fast and cpu_kernels.lib() is None:
        pytest.skip("no compiled CPU kernels: the fast dropout is off")
    model, steps = _setup(tiny_models, 3, dropout=0.3)
    on = fast_dropout.enabled(model, on=fast)
    with on:
        want_loss, want = _reference_grads(model, steps, 3, seed=7)
        torch.manual_seed(7)
        got_loss, _, got = _grads(model, steps)
        torch.manual_seed(8)  # another seed draws other masks: the comparison can fail
        other_loss, _, _ = _grads(model, steps)
    assert got_loss == pytest.approx(want_loss, rel=1e-5) and other_loss != pytest.approx(want_loss, rel=1e-3)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6, msg=n)


def test_cached_loss_leaves_the_rng_as_the_first_forward_left_it(tiny_models):
    model, steps = _setup(tiny_models, 3, dropout=0.3)
    torch.manual_seed(1)
    b = steps.batch(list(range(len(steps.train))), torch.device("cpu"))
    loss, _ = steps.loss(model, b)
    after_forward = torch.get_rng_state()
    loss.backward()
    assert torch.equal(torch.get_rng_state(), after_forward)  # the replay draws on a forked RNG


def test_a_run_with_mini_batch_trains_end_to_end(tiny_models, tmp_path):
    import tunesmith

    data = write_csv(tmp_path / "pairs.csv", toy_pairs(120))
    run = tunesmith.train(data, model=str(tiny_models["bert"]), epochs=2, lr=5e-3, batch_size=16, seed=0,
                          warmup_ratio=0.0, bf16="off", max_length=32, mini_batch=4, out=str(tmp_path / "run"),
                          baselines=False)
    hist = run.metrics["history"]
    assert len(hist) == 2 and hist[1]["train_loss"] < hist[0]["train_loss"]
    assert json.loads((Path(run.path) / "model" / "modules.json").read_text())  # a sentence-transformers folder


@pytest.mark.parametrize("negatives", [False, True])
def test_length_sorted_chunks_equal_one_forward(tiny_models, negatives):
    """The fast path (`embed(..., parts)`: a batch's texts forwarded in length-sorted chunks, each padded to its
    own longest) gives the one-forward loss and gradients (fp32: padding is masked out of attention and mean)."""
    model, steps = _setup(tiny_models, 0, negatives)
    steps.parts = 1
    want_loss, want_sums, want = _grads(model, steps)
    b = steps.batch(list(range(len(steps.train))), torch.device("cpu"))
    lengths = b["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # chunks really are cut shorter than the batch
    steps.parts = 4
    _assert_same(_grads(model, steps), (want_loss, want_sums, want))


@pytest.mark.skipif(torch.cuda.is_available(), reason="lazy rows are the CPU engine's; CUDA steps the table dense")
def test_the_cpu_engine_steps_only_the_word_embedding_rows_batches_used(tiny_models, tmp_path, monkeypatch):
    """Lazy embedding rows (accel/lazy_rows.py) for the embedding task: with weight decay, dense AdamW would move
    every row of the word-embedding table each step; the CPU engine updates only the rows the batches held."""
    import tunesmith
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.delenv("TUNESMITH_ENGINE", raising=False)
    rows = toy_pairs(64)
    data = write_csv(tmp_path / "pairs.csv", rows)
    run = tunesmith.train(data, model=str(tiny_models["bert"]), epochs=1, lr=5e-3, batch_size=16, seed=0,
                          warmup_ratio=0.0, weight_decay=0.1, bf16="off", max_length=32, out=str(tmp_path / "run"),
                          baselines=False, audit=False)
    tok = AutoTokenizer.from_pretrained(tiny_models["bert"])
    used = {i for r in rows for t in r.values() for i in tok(t, truncation=True, max_length=32)["input_ids"]}
    used.add(tok.pad_token_id)
    before = AutoModel.from_pretrained(tiny_models["bert"]).get_input_embeddings().weight.detach()
    after = AutoModel.from_pretrained(Path(run.path) / "model").get_input_embeddings().weight.detach()
    unused = sorted(set(range(len(before))) - used)
    assert unused and torch.equal(after[unused], before[unused])
    assert not torch.equal(after[sorted(used)], before[sorted(used)])
