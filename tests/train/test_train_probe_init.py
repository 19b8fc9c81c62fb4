"""LP-FT: the classifier starts as a probe fitted on exactly what it reads."""
from __future__ import annotations

import pytest
import torch

from tunesmith.data.batching import encode
from tunesmith.evaluate.predict import predict_logits
from tunesmith.models.load import load_classifier
from tunesmith.tasks.classification import SingleLabel
from tunesmith.tasks.classification import MultiLabel
from tunesmith.train import probe_init

TEXTS = ["my parcel never arrived", "refund please", "the courier lost the tracking number again today",
         "locked out", "password reset link does not work at all", "charge twice", "where is my box",
         "money back now", "cannot log in"] * 2
LABELS = ["parcel", "refund", "parcel", "login", "login", "refund", "parcel", "refund", "login"] * 2


@pytest.mark.parametrize("arch", ["bert", "gpt2", "roberta"])
def test_probe_head_fits_the_training_rows(tiny_models, arch):
    torch.manual_seed(0)
    task = SingleLabel(["login", "parcel", "refund"])
    model, tok, _ = load_classifier(str(tiny_models[arch]), task.labels)
    ids = encode(tok, TEXTS, 32)
    y = task.targets(LABELS)
    before = float(task.loss(torch.from_numpy(predict_logits(model, ids, tok.pad_token_id, 4)), y))
    assert probe_init.init_head(model, task, ids, y, tok.pad_token_id, False, torch.device("cpu"))
    logits = torch.from_numpy(predict_logits(model, ids, tok.pad_token_id, 4))
    after = float(task.loss(logits, y))
    assert after < before * 0.8  # the probe fits the rows better than the random head did


def test_probe_head_for_multilabel(tiny_models):
    torch.manual_seed(0)
    task = MultiLabel(["a", "b"])
    model, tok, _ = load_classifier(str(tiny_models["bert"]), task.labels, multi_label=True)
    ids = encode(tok, TEXTS, 32)
    y = task.targets([["a"] if l == "parcel" else ["a", "b"] if l == "refund" else ["b"] for l in LABELS])
    assert probe_init.init_head(model, task, ids, y, tok.pad_token_id, False, torch.device("cpu"))
    logits = torch.from_numpy(predict_logits(model, ids, tok.pad_token_id, 4))
    assert ((logits > 0).float() == y).float().mean() >= 0.9


def test_penalty_follows_feature_scale():
    """Scaling the features scales the weights inversely: the same probe whatever the vectors' norm."""
    torch.manual_seed(0)
    X = torch.randn(60, 8)
    y = (X[:, 0] > 0).long()
    loss = lambda z, t: torch.nn.functional.cross_entropy(z, t)  # noqa: E731
    w1, b1 = probe_init.fit(X, y, loss, 2)
    w2, b2 = probe_init.fit(X * 10, y, loss, 2)
    torch.testing.assert_close(X.double() @ w1.T + b1, X.double() * 10 @ w2.T + b2, atol=1e-3, rtol=1e-3)


def test_fit_is_sklearns_logistic_regression():
    """The same objective as scikit-learn's multinomial LogisticRegression with C scaled by the spread."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    X = torch.randn(90, 6, generator=g) * 3 + 5
    y = (X[:, 0] + 0.5 * torch.randn(90, generator=g) > 5).long() + (X[:, 1] > 6).long()
    W, b = probe_init.fit(X, y, lambda z, t: torch.nn.functional.cross_entropy(z, t), 3)
    spread = float((X - X.mean(0)).pow(2).sum(1).mean())
    ref = LogisticRegression(C=probe_init.C / spread, max_iter=5000, tol=1e-10).fit(X.numpy(), y.numpy())
    ours = torch.softmax(X.double() @ W.T + b, -1).numpy()
    assert abs(ours - ref.predict_proba(X.numpy())).max() < 1e-3


def test_multilabel_fit_is_one_binary_probe_per_label():
    """Summed over labels, each label is penalised as a lone binary logistic regression would be."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    X = torch.randn(80, 5, generator=g)
    Y = torch.stack([(X[:, 0] > 0), (X[:, 1] + X[:, 2] > 0.3)], 1).float()
    task = MultiLabel(["a", "b"])
    W, b = probe_init.fit(X, Y, lambda z, t: task.loss(z, t) * 2, 2)
    spread = float((X - X.mean(0)).pow(2).sum(1).mean())
    for j in range(2):
        ref = LogisticRegression(C=probe_init.C / spread, max_iter=5000, tol=1e-10).fit(X.numpy(), Y[:, j].numpy())
        ours = torch.sigmoid(X.double() @ W[j] + b[j]).numpy()
        assert abs(ours - ref.predict_proba(X.numpy())[:, 1]).max() < 2e-3
