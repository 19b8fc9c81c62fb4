"""A mean-pooling run (one folded averaging layer more than its base) merges with its base."""
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import tunesmith
from tunesmith.errors import TunesmithError
from tunesmith.merge.run import merge
from tunesmith.merge.spec import from_flags
from tunesmith.data.batching import collate

from conftest import toy_rows, write_csv

TEXTS = ["my invoice is wrong", "where is my parcel", "I cannot log in to my account"]


def _logits(folder):
    tok = AutoTokenizer.from_pretrained(folder)
    m = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return m(**collate(tok(TEXTS)["input_ids"], tok.pad_token_id)).logits


def test_mean_pooling_run_merges_with_its_base(tiny_mean_bert, tiny_run, tmp_path):
    data = write_csv(tmp_path / "toy.csv", toy_rows())
    run = tunesmith.train(str(data), model=str(tiny_mean_bert), epochs=1, lr=1e-3, batch_size=16, seed=0,
                          out=str(tmp_path / "run"), audit=False, baselines=False)
    cfg = AutoModelForSequenceClassification.from_pretrained(run.model_dir).config
    assert cfg.num_hidden_layers == 3 and cfg.tunesmith_pooling == "mean"  # 2 layers + the averaging one
    spec = from_flags("linear", str(tiny_mean_bert), [str(run.path)])
    merged = merge(spec, tmp_path / "m", weights=[0.0, 1.0], eval_data=str(data))
    # all of the tuned model: the tuned model itself, folded layer and pooler included
    all_tuned = merge(from_flags("linear", str(tiny_mean_bert), [str(run.path)]), tmp_path / "m1", weights=[1.0],
                      eval_data=str(data))
    torch.testing.assert_close(_logits(all_tuned.model_dir), _logits(run.model_dir), atol=1e-4, rtol=1e-4)
    assert (merged.path / "model" / "config.json").exists()
    # with a run whose head reads the first token instead: refused, nothing written
    with pytest.raises(TunesmithError, match="one pooling"):
        merge(from_flags("linear", str(tiny_mean_bert), [str(run.path), str(tiny_run.path)]), tmp_path / "mix",
              weights=[0.5], eval_data=str(data))
    assert not (tmp_path / "mix").exists()
