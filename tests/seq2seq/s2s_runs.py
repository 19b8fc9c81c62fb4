"""Toy pairs a tiny random encoder-decoder learns in seconds, a tiny T5, and one finished run (a module,
not a conftest: tests import the root conftest by name, which a second conftest.py would shadow)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

WORDS = {"hund": "dog", "katze": "cat", "haus": "house", "baum": "tree", "wasser": "water", "brot": "bread"}


def toy_pairs(n: int = 40) -> list[dict]:
    """'ich sehe X' → 'i see Y': one word to translate, the rest fixed."""
    de = list(WORDS)
    return [{"source": f"ich sehe {de[i % len(de)]}", "target": f"i see {WORDS[de[i % len(de)]]}"} for i in range(n)]


def write_pairs(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def make_tiny_t5(folder: Path) -> Path:
    """A random T5 (2+2 layers, width 32) with the built-in model's WordPiece tokenizer: decoding starts at
    [PAD] (T5's convention) and ends at [SEP]."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from tunesmith.models.registry import resolve

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    config = T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("t5") / "m")


@pytest.fixture(scope="session")
def s2s_run(tiny_models, tmp_path_factory):
    """One finished BERT2BERT run (the tiny BERT warm-started) on the toy pairs. Do not modify it."""
    import tunesmith

    root = tmp_path_factory.mktemp("s2s_run")
    # 96 pairs x 4 epochs: at 48 x 2 the tiny model still repeated "i" at some seeds (loss 10 -> 9)
    data = write_pairs(root / "pairs.csv", toy_pairs(96))
    return tunesmith.train(str(data), task="seq2seq", model=str(tiny_models["bert"]), epochs=4, lr=3e-3,
                           batch_size=8, max_length=16, max_new_tokens=6, num_beams=2, seed=0, bf16="off",
                           out=str(root / "run"))
