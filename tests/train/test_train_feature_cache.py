"""The frozen-layer feature cache: replayed features equal fresh ones, and any change recomputes."""
import json

import pytest
import torch

import tunesmith
from tunesmith.data.batching import encode
from tunesmith.evaluate.predict import predict_logits
from tunesmith.models.load import load_classifier
from tunesmith.train import feature_cache, strategies
from tunesmith.train.strategies.layers import layer_stack

TEXTS = ["my parcel never arrived", "refund please", "the courier lost the tracking number again today",
         "locked out", "password reset link does not work at all", "charge twice"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TUNESMITH_FEATURE_CACHE", "on")
    feature_cache.clear_memory()
    yield
    feature_cache.clear_memory()


def _model(path, strategy="head"):
    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(path), ["a", "b", "c"])
    model = strategies.apply(model, strategy, None)
    return model.eval(), tok


@pytest.mark.parametrize("arch,strategy", [("bert", "head"), ("bert", "freeze:1"), ("gpt2", "head"),
                                           ("llama", "freeze:1"), ("llama", "head")])
def test_cached_features_equal_fresh(tiny_models, arch, strategy):
    model, tok = _model(tiny_models[arch], strategy)
    k = strategies.frozen_layers(model, strategy)
    ids = encode(tok, TEXTS, 32)
    feats = feature_cache.features(model, k, ids, tok.pad_token_id, False, torch.device("cpu"), 32)
    # Fresh: each text alone (no padding at all), output of layer K-1 recorded by a hook.
    seen = []
    handle = layer_stack(model)[1][k - 1].register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        for x in ids:
            model(input_ids=torch.tensor([x]), attention_mask=torch.ones(1, len(x), dtype=torch.long))
    handle.remove()
    for i, x in enumerate(ids):
        cached = feats.flat[feats.offsets[i]:feats.offsets[i + 1]]
        torch.testing.assert_close(cached, seen[i][0], rtol=1e-4, atol=1e-5)
    # And the whole model with replayed layers gives the same logits as the real thing.
    fresh = predict_logits(model, ids, tok.pad_token_id, 4)
    replayed = predict_logits(model, ids, tok.pad_token_id, 4, replay=feature_cache.Replay(model, k, feats))
    torch.testing.assert_close(torch.from_numpy(replayed), torch.from_numpy(fresh), rtol=1e-4, atol=1e-5)
    assert all("forward" not in layer.__dict__ for layer in layer_stack(model)[1])  # patches undone


def test_cache_hits_and_invalidation(tiny_models):
    cpu = torch.device("cpu")
    model, tok = _model(tiny_models["bert"], "freeze:2")
    ids = encode(tok, TEXTS, 32)
    get = lambda m, k, i, n=32: feature_cache.features(m, k, i, tok.pad_token_id, False, cpu, n)  # noqa: E731
    feature_cache.STATS.clear()
    first = get(model, 2, ids)
    assert feature_cache.STATS["computed"] == 1
    assert get(model, 2, ids) is first and feature_cache.STATS["memory_hits"] == 1
    feature_cache.clear_memory()  # another process: the disk copy is used
    torch.testing.assert_close(get(model, 2, ids).flat, first.flat)
    assert feature_cache.STATS["disk_hits"] == 1 and feature_cache.STATS["computed"] == 1
    get(model, 1, ids)                                   # K changed
    get(model, 2, ids, 16)                               # max length changed
    get(model, 2, ids[:-1] + [ids[-1][:-2] + ids[-1][-1:]])  # data changed
    other, _ = _model(tiny_models["roberta"], "freeze:2")  # another model
    get(other, 2, encode(tok, TEXTS, 32))
    assert feature_cache.STATS["computed"] == 5
    with torch.no_grad():  # same path, changed frozen weights (e.g. a merged earlier fine-tune)
        model.bert.encoder.layer[0].output.dense.weight.add_(0.01)
    get(model, 2, ids)
    assert feature_cache.STATS["computed"] == 6


def test_head_training_same_with_and_without_cache(tiny_models, toy_csv, tmp_path, monkeypatch):
    runs = {}
    for mode in ("off", "on"):
        monkeypatch.setenv("TUNESMITH_FEATURE_CACHE", mode)
        feature_cache.STATS.clear()
        run = tunesmith.train(str(toy_csv), model=str(tiny_models["bert"]), strategy="head", epochs=3, lr=1e-2,
                              batch_size=16, out=str(tmp_path / mode), bf16="off", baselines=False, audit=False)
        runs[mode] = json.loads((run.path / "metrics.json").read_text())
        # on: training and validation features computed once each, reused by epochs 2 and 3
        assert feature_cache.STATS["computed"] == (2 if mode == "on" else 0)
    off, on = runs["off"], runs["on"]
    for a, b in zip(off["history"], on["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_macro_f1"] == pytest.approx(a["val_macro_f1"], abs=1e-9)
    assert on["test"]["accuracy"] == off["test"]["accuracy"]
    assert on["test"]["macro_f1"] == pytest.approx(off["test"]["macro_f1"], abs=1e-9)


def test_frozen_weights_hashed_once_per_model_until_changed(tiny_models, monkeypatch):
    model, tok = _model(tiny_models["bert"], "freeze:2")
    made = []
    real = feature_cache.hashlib.blake2b
    monkeypatch.setattr(feature_cache.hashlib, "blake2b", lambda **kw: made.append(1) or real(**kw))
    a = feature_cache.key(model, 2, encode(tok, TEXTS, 32), 32, False)
    b = feature_cache.key(model, 2, encode(tok, TEXTS[:3], 32), 32, False)  # validation split: same weights
    assert a != b and len(made) == 3  # two keys, one weight digest
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.bias.add_(1.0)  # changed in place: hashed again
    c = feature_cache.key(model, 2, encode(tok, TEXTS, 32), 32, False)
    assert c != a and len(made) == 5
