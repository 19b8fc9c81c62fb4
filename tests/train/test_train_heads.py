"""The direct head on cached features computes what the model's own forward computes."""
import pytest
import torch
import transformers

from tunesmith.data.batching import encode
from tunesmith.evaluate.predict import predict_logits
from tunesmith.models.load import load_classifier
from tunesmith.train import feature_cache, heads, strategies
from tunesmith.tasks.classification.steps import ClassifierSteps
from tunesmith.train.loop import Split, fit
from tunesmith.tasks.classification import SingleLabel

TEXTS = ["my parcel never arrived", "refund please", "the courier lost the tracking number again today",
         "locked out", "password reset link does not work at all", "charge twice"]


@pytest.fixture(autouse=True)
def _memory_cache(monkeypatch):
    monkeypatch.setenv("TUNESMITH_FEATURE_CACHE", "memory")
    feature_cache.clear_memory()
    yield
    feature_cache.clear_memory()


@pytest.fixture(scope="module")
def distilbert(tiny_models, tmp_path_factory):
    """A tiny random DistilBERT beside the shared tiny models (same tokenizer)."""
    folder = tmp_path_factory.mktemp("distilbert")
    config = transformers.DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                           max_position_embeddings=128, pad_token_id=0)
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(tiny_models["bert"]).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch", ["bert", "bert_mean", "roberta", "gpt2", "llama", "distilbert"])
def test_direct_head_equals_model_forward(tiny_models, distilbert, tiny_mean_bert, arch):
    path = {"distilbert": distilbert, "bert_mean": tiny_mean_bert}.get(arch) or tiny_models[arch]
    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(path), ["a", "b", "c"])
    model = strategies.apply(model, "head", None).eval()
    assert heads.for_model(model) is not None
    if arch == "bert_mean":
        assert heads.for_model(model)[0] == "mean"
    ids = encode(tok, TEXTS, 32)
    ids[1] = ids[1] + [tok.pad_token_id] * 2  # a text ending in the pad id: decoders read the token before
    k = strategies.frozen_layers(model, "head")
    feats = feature_cache.features(model, k, ids, tok.pad_token_id, False, torch.device("cpu"), 32)
    replay = feature_cache.Replay(model, k, feats, ids=ids, pad_id=tok.pad_token_id)
    assert replay.direct
    fresh = predict_logits(model, ids, tok.pad_token_id, 4)
    direct = predict_logits(model, ids, tok.pad_token_id, 4, replay=replay)
    torch.testing.assert_close(torch.from_numpy(direct), torch.from_numpy(fresh), rtol=1e-4, atol=1e-5)


def test_unknown_architecture_has_no_direct_head(tiny_models, monkeypatch):
    model, tok, _ = load_classifier(str(tiny_models["bert"]), ["a", "b"])
    monkeypatch.setattr(model.config, "model_type", "not-a-known-type")
    assert heads.for_model(model) is None
    ids = encode(tok, TEXTS, 32)
    feats = feature_cache.features(model, 2, ids, tok.pad_token_id, False, torch.device("cpu"), 32)
    assert not feature_cache.Replay(model, 2, feats, ids=ids, pad_id=tok.pad_token_id).direct


def _fit_head(tiny_models, tmp_path, name):
    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(tiny_models["bert"]), ["a", "b", "c"])
    from types import SimpleNamespace as NS
    recipe = NS(seed=3, batch_size=4, grad_accum=1, epochs=3, lr=1e-2, weight_decay=0.01, scheduler="linear",
                warmup_ratio=0.0, max_length=32, metric="accuracy", patience=0, label_smoothing=0.0, grad_clip=1.0,
                strategy="head")
    strategies.apply(model, "head", recipe)
    task = SingleLabel(["a", "b", "c"])
    ids = encode(tok, TEXTS * 3, 32)
    y = task.targets(["a", "b", "c"] * 6)
    steps = ClassifierSteps(task, Split(ids, y), Split(ids[:6], y[:6]), recipe, tok.pad_token_id, False,
                            torch.device("cpu"))
    r = fit(model, steps, recipe, device=torch.device("cpu"), bf16=False, ckpt_dir=tmp_path / name)
    return r.history


def test_training_through_direct_head_matches_model_forward(tiny_models, tmp_path, monkeypatch):
    direct = _fit_head(tiny_models, tmp_path, "direct")
    feature_cache.clear_memory()
    monkeypatch.setattr(heads, "for_model", lambda model: None)  # every step through the model's forward
    forward = _fit_head(tiny_models, tmp_path, "forward")
    for a, b in zip(direct, forward):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert direct[-1]["train_loss"] < direct[0]["train_loss"]  # and it learns
