"""Toy pairs a tiny random BERT learns to match in seconds, and one finished run on them (a module, not a
conftest: tests import the root conftest by name, which a second conftest.py would shadow)."""
from __future__ import annotations

import random

import pandas as pd
import pytest

WORDS = ("apple banana cherry grape lemon mango melon peach pear plum river ocean forest desert island valley "
         "castle bridge tower garden doctor farmer pilot singer teacher writer soldier sailor hunter dancer "
         "guitar piano violin drum trumpet flute hammer ladder bucket candle mirror pillow blanket carpet window "
         "jacket shirt boots gloves scarf tiger zebra horse camel eagle rabbit turtle dolphin spider monkey").split()
FILLERS = ["all about the {w} here", "a short note on {w} today", "{w} is the topic of this line",
           "people often talk of the {w}"]


def toy_pairs(n: int = 120, seed: int = 0) -> list[dict]:
    """Anchors of one word, positives of that word among filler words shared by every positive."""
    rng = random.Random(seed)
    return [{"anchor": w, "positive": rng.choice(FILLERS).format(w=w)} for w in rng.choices(WORDS, k=n)]


def write_csv(path, rows) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def pairs_run(tiny_models, tmp_path_factory):
    """A tiny BERT embedding run on the toy pairs. Tests must not modify it."""
    import tunesmith

    root = tmp_path_factory.mktemp("emb_run")
    data = write_csv(root / "pairs.csv", toy_pairs())
    return tunesmith.train(data, model=str(tiny_models["bert"]), epochs=6, lr=5e-3, batch_size=16, seed=0,
                           warmup_ratio=0.0, bf16="off", max_length=32, out=str(root / "run"))
