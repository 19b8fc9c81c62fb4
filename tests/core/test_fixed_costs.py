"""The work around training that `tunesmith train` no longer redoes (issue #23), each against the slow path
it replaced: same outputs, or the same metric within the rounding of the precision it now runs in."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SHARED, write_csv


def _texts() -> list[str]:
    words = "refund card top up pending transfer cash atm pin declined exchange rate fee".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 12, size=37)]
    return texts + texts[:3]  # repeated rows get the vectors of their first copy


# ---- retention's "after" vectors from the test scoring pass (evaluate/retention.py Pooled) ----------------------
@pytest.mark.parametrize("arch", ["bert", "gpt2"])  # right padding, and a decoder's
def test_pooled_capture_equals_embed_with(tiny_models, arch):
    """The vectors captured from the classifier's scoring forward == embed_with's own pass over the encoder,
    whatever the scorer's batching (rows matched by token ids), in input order."""
    from tunesmith.evaluate.predict import predict_logits
    from tunesmith.evaluate.retention import Pooled, encoder_of
    from tunesmith.data.batching import encode
    from tunesmith.models.embed import embed_with
    from tunesmith.models.load import load_classifier

    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(tiny_models[arch]), ["a", "b", "c"])
    texts = _texts()
    ids = encode(tok, texts, 16)
    with Pooled(encoder_of(model)) as pooled:
        predict_logits(model, ids, tok.pad_token_id, batch_size=5)  # batches unlike embed_with's 64
    got = pooled.vectors(ids)
    want = embed_with(encoder_of(model), tok, texts, 16)
    assert got.shape == want.shape == (len(texts), model.config.hidden_size)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_array_equal(got[-3:], got[:3])  # repeated texts: the same vectors
    assert np.ptp(got, axis=0).max() > 1e-3  # not one vector for every row
    assert pooled.vectors(ids + [[101, 5, 102]]) is None  # a row the pass never saw: the caller re-embeds


def test_pooled_is_removed_after_the_block(tiny_models):
    from tunesmith.evaluate.predict import predict_logits
    from tunesmith.evaluate.retention import Pooled, encoder_of
    from tunesmith.data.batching import encode
    from tunesmith.models.load import load_classifier

    model, tok, _ = load_classifier(str(tiny_models["bert"]), ["a", "b"])
    ids = encode(tok, ["one text", "another text here"], 16)
    with Pooled(encoder_of(model)) as pooled:
        pass
    predict_logits(model, ids, tok.pad_token_id)
    assert pooled.seen == {}


@pytest.mark.slow
def test_measure_retention_from_the_scoring_pass_matches_the_extra_pass(tmp_path, monkeypatch):
    """Classification.measure on the real model: with the captured vectors (bf16 scoring pass) every metric is
    the one of the old extra fp32 pass, linear CKA within 0.005 (measured: equal to 5 decimals)."""
    from tunesmith.evaluate import retention
    from tunesmith.pipeline import choose_task, load_and_encode, task_for_data
    from tunesmith.config import make_recipe

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    df = pd.read_csv(SHARED / "intents" / "test.csv")
    keep = sorted(df["label"].unique())[:6]
    df = df[df["label"].isin(keep)]
    tr = write_csv(tmp_path / "train.csv", df.groupby("label").head(10).to_dict("records"))
    te = write_csv(tmp_path / "test.csv", df.groupby("label").tail(20).to_dict("records"))
    cls, recipe = choose_task(make_recipe(train=str(tr), test=str(te), val_fraction=0.0, seed=0), lambda *a, **k: None)
    task, recipe, data = task_for_data(cls, recipe, lambda *a, **k: None)
    recipe, model, tok, path, device, bf16, enc = load_and_encode(task, recipe, data, lambda *a, **k: None)
    with torch.no_grad():  # stands in for fine-tuning: the top layers drift from the base
        g = torch.Generator().manual_seed(0)
        for p in model.base_model.encoder.layer[-2:].parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    model = task.finalize_model(model)  # what the pipeline measures: the folded model

    calls = []
    slow_embed = retention.embed_with
    monkeypatch.setattr(retention, "embed_with", lambda *a, **k: calls.append(1) or slow_embed(*a, **k))

    def run(fast: bool) -> dict:
        if not fast:
            monkeypatch.setattr(retention.Pooled, "vectors", lambda self, ids: None)
        m = {"history": []}
        task.measure(m, model, tok, enc, data, recipe, {}, device, bf16, lambda *a, **k: None)
        return m

    fast = run(True)
    assert calls == []  # no pass over the test texts beside the scoring one
    slow = run(False)
    assert calls == [1]
    assert fast["test"] == slow["test"] and fast["calibration"] == slow["calibration"]
    assert fast["retention"]["n"] == slow["retention"]["n"] == len(data.test.texts)
    print(f"linear CKA: fast {fast['retention']['cka']:.5f}, slow {slow['retention']['cka']:.5f}")
    assert slow["retention"]["cka"] < 0.99  # the drift is there to be measured
    assert abs(fast["retention"]["cka"] - slow["retention"]["cka"]) < 0.005


# ---- the temperature fit (evaluate/calibration.py) ----------------------------------------------------------------
def _logit_sets():
    """(name, task, logits, targets): calibrated, over- and under-confident, all right (T -> 0, clipped), noise
    (T -> large, clipped), and multilabel."""
    from tunesmith.tasks.classification.multilabel import MultiLabel
    from tunesmith.tasks.classification.single_label import SingleLabel

    rng = np.random.default_rng(0)
    single, multi = SingleLabel([f"c{i}" for i in range(20)]), MultiLabel([f"l{i}" for i in range(5)])
    y = rng.integers(0, 20, 300)
    z = rng.normal(size=(300, 20))
    z[np.arange(300), y] += 2.0
    sharp = z * 4.0
    out = [("calibrated", single, z, y), ("overconfident", single, sharp, y), ("underconfident", single, z / 4.0, y)]
    right = rng.normal(size=(60, 20))
    yr = right.argmax(1)
    out += [("all right", single, right * 5.0, yr), ("noise", single, rng.normal(size=(200, 20)) * 3.0,
                                                     rng.integers(0, 20, 200))]
    ym = (rng.random((200, 5)) < 0.3).astype(float)
    out.append(("multilabel", multi, (ym * 2 - 1) * 3.0 + rng.normal(size=(200, 5)), ym))
    return out


@pytest.mark.parametrize("case", range(6))
def test_temperature_fit_matches_the_lbfgs_fit(case):
    from tunesmith.evaluate.calibration import T_RANGE, calibrate, fit_temperature, fit_temperature_lbfgs

    name, task, z, y = _logit_sets()[case]
    new, old = fit_temperature(task, z, y), fit_temperature_lbfgs(task, z, y)
    zt, t = torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(y)
    nll = lambda T: float(task.loss(zt / T, t.double() if task.multi_label else t.long()))  # noqa: E731
    # The task's loss is float32: near the minimum it is flat to 1e-6 over ~0.2% of T, where L-BFGS stopped.
    assert nll(new) <= nll(old) + 1e-6 and new == pytest.approx(old, rel=2e-3), name
    if name == "all right":
        assert new == old == T_RANGE[0]  # no minimum above the clip: its bound, exactly as before
    if name == "noise":
        assert new == old == T_RANGE[1]
    if name in ("overconfident", "underconfident"):
        assert (new > 1.5) if name == "overconfident" else (new < 0.7)  # the fit moves T where it should
    a = calibrate(task, z, y, z, y)
    probs = task.probabilities(np.asarray(z, dtype=np.float64), old)
    from tunesmith.evaluate.calibration import ece

    # ECE bins 300 rows: T's 0.15% (the loss's flat band) moves a few rows across a bin edge, ~0.002
    assert a["temperature"] == new and a["ece_after"] == pytest.approx(ece(task, probs, y), abs=5e-3)
