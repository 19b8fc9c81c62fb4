"""The seq2seq loss's fast path: the vocabulary-sized projection runs only at labelled positions, and gives the
loss and gradients of projecting every position (BERT2BERT, T5, BART's added bias), or falls back to that."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from types import SimpleNamespace

from tunesmith.tasks.seq2seq import model as s2s_model
from tunesmith.tasks.seq2seq.steps import IGNORE, token_loss

from s2s_runs import tiny_t5  # noqa: F401  (fixture)


def _batch(vocab: int, start: int = 1):
    g = torch.Generator().manual_seed(0)
    src = torch.randint(5, vocab, (3, 7), generator=g)
    labels = torch.randint(5, vocab, (3, 6), generator=g)
    labels[0, 4:] = IGNORE
    labels[2, 2:] = IGNORE   # targets of different lengths: padding the loss ignores
    dec = torch.cat([torch.full((3, 1), start), labels[:, :-1].clamp(min=0)], 1)
    return {"input_ids": src, "attention_mask": torch.ones_like(src), "decoder_input_ids": dec, "labels": labels}


def _every_position(model, b):
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                   decoder_input_ids=b["decoder_input_ids"], use_cache=False).logits
    keep = b["labels"] != IGNORE
    return F.cross_entropy(logits[keep].float(), b["labels"][keep], reduction="sum"), keep.sum()


def _grads_of(model, fn, b):
    model.zero_grad(set_to_none=True)
    loss, n = fn(model, b)
    loss.backward()
    return loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _models(tiny_models, tiny_t5):  # noqa: F811
    from transformers import AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    bart = BartConfig(vocab_size=120, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, dropout=0.0,
                      max_position_embeddings=32)
    bart_model = BartForConditionalGeneration(bart)
    bart_model.final_logits_bias.normal_()  # the bias BART adds after the projection, not zero
    return {"bert2bert": s2s_model.load(str(tiny_models["bert"]))[0],
            "t5": AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), "bart": bart_model}


@pytest.mark.parametrize("kind", ["bert2bert", "t5", "bart"])
def test_labelled_positions_only_equal_every_position(tiny_models, tiny_t5, kind):  # noqa: F811
    model = _models(tiny_models, tiny_t5)[kind].eval()
    b = _batch(min(model.get_output_embeddings().weight.shape[0], 100))
    want = _grads_of(model, _every_position, b)
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(o.shape))
    got = _grads_of(model, token_loss, b)
    handle.remove()
    assert seen == [(int(want[1]), model.get_output_embeddings().weight.shape[0])]  # labelled rows only
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert int(got[1]) == int(want[1]) == 12
    assert set(got[2]) == set(want[2])
    for k in want[2]:
        torch.testing.assert_close(got[2][k], want[2][k], rtol=1e-4, atol=1e-6, msg=k)


class _Reshaping(torch.nn.Module):
    """A head that reshapes the projection's output: the fast path cannot serve it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.proj = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50)

    def get_output_embeddings(self):
        return self.proj

    def forward(self, input_ids, attention_mask, decoder_input_ids, use_cache):
        h = self.emb(decoder_input_ids) + self.emb(input_ids).mean(1, keepdim=True)
        n, t = decoder_input_ids.shape
        return SimpleNamespace(logits=self.proj(h).reshape(n, t, -1))


def test_a_head_that_reshapes_takes_the_plain_route():
    model, b = _Reshaping(), _batch(50)
    want = _every_position(model, b)
    got = token_loss(model, b)
    assert model._tunesmith_full_logits and torch.equal(got[0], want[0]) and int(got[1]) == int(want[1])


@pytest.mark.parametrize("kind", ["bert2bert", "t5"])
def test_training_on_master_weights_tracks_autocast_and_keeps_ties(tiny_models, tiny_t5, kind, monkeypatch):  # noqa: F811
    """The CPU engine trains seq2seq on bf16 copies over fp32 masters (one per tied weight): the same losses and
    weights as plain autocast within bf16 rounding, and BERT2BERT's encoder and decoder still share weights."""
    from tunesmith.accel import master_weights
    from tunesmith.tasks.seq2seq.steps import Encoded, Seq2SeqSteps
    from tunesmith.train.loop import fit

    recipe = SimpleNamespace(seed=3, batch_size=4, grad_accum=1, epochs=3, lr=3e-3, weight_decay=0.01,
                             scheduler="linear", warmup_ratio=0.0, max_length=16, metric="loss", patience=0,
                             label_smoothing=0.0, grad_clip=1.0, strategy="full")
    g = torch.Generator().manual_seed(0)
    enc = Encoded([torch.randint(5, 90, (int(n),), generator=g).tolist() for n in torch.randint(3, 9, (12,), generator=g)],
                  [torch.randint(5, 90, (int(n),), generator=g).tolist() + [3] for n in torch.randint(2, 6, (12,), generator=g)],
                  None, {})
    made = []
    real = master_weights.MasterWeights
    monkeypatch.setattr(master_weights, "MasterWeights", lambda m, o: made.append(real(m, o)) or made[-1])

    def run():
        model = _models(tiny_models, tiny_t5)[kind].train()
        steps = Seq2SeqSteps(None, enc, None, recipe, 0, 1, True, torch.device("cpu"))
        return fit(model, steps, recipe, device=torch.device("cpu"), bf16=True, ckpt_dir=None).history, model

    masters, m1 = run()
    assert made and made[0]  # the master-weight path ran, with some Linear weights in it
    monkeypatch.setattr(master_weights, "applicable", lambda *a: False)
    plain, m2 = run()
    for a, b in zip(masters, plain):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.02)
    assert masters[-1]["train_loss"] < masters[0]["train_loss"]
    # AdamW moves a weight whose gradient is near zero by about lr whatever its sign, so a bf16 rounding that
    # flips such a gradient's sign parts the two runs by up to 2 lr a step on that element: under 1% of them
    # (T5: 0.3%, most in rows of the 30,522-token table that only the softmax reaches).
    apart, steps = 0, recipe.epochs * len(enc) // recipe.batch_size
    for (n, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert p.dtype == torch.float32
        torch.testing.assert_close(p, q, rtol=0.05, atol=2 * steps * recipe.lr, msg=lambda m, n=n: f"{n}: {m}")
        apart += int((p - q).abs().gt(recipe.lr / 3).sum())
    assert apart < 0.01 * sum(p.numel() for p in m1.parameters())
    if kind == "bert2bert":
        assert m1.decoder.bert.encoder.layer[1].output.dense.weight is m1.encoder.encoder.layer[1].output.dense.weight
