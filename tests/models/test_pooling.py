"""The mean-pooling classifier: what trains, what is saved and what a stock pipeline loads agree."""
from __future__ import annotations

import json

import pytest
import torch

from tunesmith.models import pooling
from tunesmith.models.load import load_classifier
from tunesmith.models.registry import resolve
from tunesmith.data.batching import collate

TEXTS = ["where is my card?", "I was charged twice for one coffee, please refund it", "hi",
         "my transfer to a friend has been pending for three days now and nobody answers"]


def _batch(tok):
    ids = tok(TEXTS, truncation=True, max_length=64)["input_ids"]
    return collate(ids, tok.pad_token_id)


def test_declared_pooling_read_from_sentence_transformers_files(tmp_path):
    assert pooling.declared(resolve("minilm")) == "mean"
    assert pooling.declared(tmp_path) is None  # a plain Hugging Face folder declares nothing
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Pooling",
                                                         "path": "1_Pooling"}]))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert pooling.declared(tmp_path) == "cls"


def test_mean_pooler_reads_the_probe_sentence_vector():
    """Before any training the pooled vector is the standardised mean of the token states."""
    model, tok, path = load_classifier("minilm", ["a", "b"])
    assert pooling.install(model, path) == "mean"
    model.eval()
    b = _batch(tok)
    with torch.no_grad():
        h = model.bert(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        mean = (h * m).sum(1) / m.sum(1)
        want = torch.nn.functional.layer_norm(mean + h[:, 0] / pooling.C, mean.shape[-1:], eps=1e-12)
        got = model.bert.pooler.sentence(h, b["attention_mask"])
    torch.testing.assert_close(got, want)
    # padding does not move a text's vector: alone or in a padded batch, the same
    with torch.no_grad():
        alone = model(**collate([tok(TEXTS[2])["input_ids"]], tok.pad_token_id)).logits
        batched = model(**b).logits[2:3]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train_mode", [False])
def test_fold_gives_a_stock_model_with_the_same_logits(tmp_path, train_mode):
    from transformers import AutoModelForSequenceClassification, pipeline

    model, tok, path = load_classifier("minilm", ["neg", "pos", "other"])
    pooling.install(model, path)
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking head
        model.bert.pooler.dense.weight.add_(torch.randn_like(model.bert.pooler.dense.weight) * 0.05)
        model.classifier.weight.normal_(0, 0.5)
    model.eval()
    b = _batch(tok)
    with torch.no_grad():
        want = model(**b).logits
    folded = pooling.fold(model)
    assert type(folded).__name__ == "BertForSequenceClassification"
    assert folded.config.num_hidden_layers == model.config.num_hidden_layers + 1
    folded.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    stock = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        got = stock(**b).logits
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    pipe = pipeline("text-classification", model=str(tmp_path), tokenizer=str(tmp_path))
    labels = [r["label"] for r in pipe(TEXTS)]
    assert labels == [["neg", "pos", "other"][i] for i in want.argmax(-1).tolist()]


def test_undeclared_or_other_architectures_keep_their_head(tiny_models):
    model, tok, path = load_classifier(str(tiny_models["bert"]), ["a", "b"])
    assert pooling.install(model, path) == "native"  # no modules.json: nothing declared
    assert pooling.fold(model) is model
