import json

import pytest

import tunesmith


@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2", "llama"])
def test_train_tiny_architectures(tiny_models, toy_csv, tmp_path, arch):
    run = tunesmith.train(str(toy_csv), model=str(tiny_models[arch]), epochs=1, out=str(tmp_path / arch),
                          lr=1e-3, batch_size=16)
    m = json.loads((run.path / "metrics.json").read_text())
    assert m["test"]["n"] == 24 and 0.0 <= m["test"]["accuracy"] <= 1.0
    assert (run.path / "model" / "config.json").exists()
