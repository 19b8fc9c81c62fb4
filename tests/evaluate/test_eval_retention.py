import numpy as np
import pytest

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.retention import linear_cka, load_pairs, sts_retention


def test_linear_cka_is_one_for_rotations_and_lower_for_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert abs(linear_cka(x, x @ q * 3.0) - 1.0) < 1e-9
    assert linear_cka(x, rng.normal(size=(200, 16))) < 0.3


def test_retention_file_needs_sts_columns(tmp_path):
    f = tmp_path / "pairs.csv"
    f.write_text("a,b,score\nx,y,1\n")
    with pytest.raises(TunesmithError, match="pairs.csv: retention data needs columns sentence1, sentence2, score"):
        load_pairs(f)


@pytest.mark.slow
def test_sts_retention_before_after_with_builtin_model(shared_data, tmp_path, monkeypatch):
    """Untouched encoder: after == before; a damaged encoder loses general similarity."""
    import torch

    from tunesmith.models.embed import load_encoder
    from tunesmith.models.registry import resolve

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    sample = tmp_path / "sts.csv"
    sample.write_text("".join(open(shared_data / "sts" / "test.csv").readlines()[:121]))
    enc, tok = load_encoder(resolve("minilm"))
    r = sts_retention("minilm", enc, tok, sample, 64)
    assert r["n"] == 120 and r["before"] > 0.6 and abs(r["after"] - r["before"]) < 0.02
    import copy

    broken = copy.deepcopy(enc)
    with torch.no_grad():
        for p in broken.encoder.layer[-1].parameters():
            p.add_(torch.randn_like(p) * 0.5)
    r2 = sts_retention("minilm", broken, tok, sample, 64)
    assert r2["after"] < r2["before"] - 0.05
