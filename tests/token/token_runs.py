"""Toy tagged sentences a tiny random BERT learns in seconds, and one finished run on them (a module, not a
conftest: tests import the root conftest by name, which a second conftest.py would shadow)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank"]
PLACES = [["paris"], ["london"], ["new", "york"], ["tokyo"], ["san", "diego"]]
TEMPLATES = ["{p} flew to {c} , yesterday", "we met {p} in {c} today .", "{c} is where {p} lives now"]


def toy_sentences(n: int = 150, seed: int = 0) -> list[dict]:
    """Sentences of one to four clauses joined by 'and' (up to ~28 words: positions a 32-token window uses)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        toks, tags = [], []
        for k in range(rng.randint(1, 4)):
            if k:
                toks.append("and")
                tags.append("O")
            p, c, t = rng.choice(PEOPLE), rng.choice(PLACES), rng.choice(TEMPLATES)
            for w in t.split():
                if w == "{p}":
                    toks.append(p)
                    tags.append("B-person")
                elif w == "{c}":
                    toks += c
                    tags += ["B-location"] + ["I-location"] * (len(c) - 1)
                else:
                    toks.append(w)
                    tags.append("O")
        rows.append({"tokens": toks, "tags": tags})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def token_run(tiny_models, tmp_path_factory):
    """A tiny BERT tagger trained on the toy sentences (test F1 1.0). Tests must not modify it. 10 epochs: its
    head starts as a probe on random features (LP-FT, the default), which needs more steps than a random head
    to generalise to the unseen words the predict tests use."""
    import tunesmith

    root = tmp_path_factory.mktemp("token_run")
    data = write_jsonl(root / "toy.jsonl", toy_sentences())
    return tunesmith.train(str(data), model=str(tiny_models["bert"]), epochs=10, lr=5e-3, batch_size=16, seed=0,
                           warmup_ratio=0.0, bf16="off", max_length=32, out=str(root / "run"))
