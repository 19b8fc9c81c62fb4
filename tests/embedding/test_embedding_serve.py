"""Serving an embedding run: POST /embed gives unit vectors; with a corpus, POST /search ranks it exactly."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tunesmith.errors import TunesmithError
from tunesmith.predictor import Predictor
from tunesmith.serve.app import Limits, create_app
from tunesmith.tasks.embedding.serving import nearest

from conftest import run_cli
from emb_runs import pairs_run  # noqa: F401  (a fixture)

DOCS = ["a short note on piano today", "all about the tiger here", "people often talk of the ocean",
        "tiger is the topic of this line"]


def client(run, **options):
    return TestClient(create_app(run.path, Limits(), task_options=options), base_url="http://localhost")


def test_embed_route_gives_the_predictors_vectors(pairs_run):
    with client(pairs_run) as c:
        r = c.post("/embed", json={"texts": ["tiger", "piano"]})
        assert c.post("/search", json={"query": "tiger"}).status_code == 404  # no corpus, no /search
    assert r.status_code == 200, r.text
    v = np.array([p["vector"] for p in r.json()["predictions"]])
    assert np.allclose(v, Predictor.load(pairs_run.path).outputs(["tiger", "piano"]), atol=1e-5)


def test_search_ranks_the_corpus_by_cosine(pairs_run, tmp_path):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(DOCS) + "\n")
    with client(pairs_run, corpus=str(corpus)) as c:
        r = c.post("/search", json={"query": "tiger", "k": 3})
        too_many = c.post("/search", json={"query": "tiger", "k": 50}).json()
        bad = c.post("/search", json={"query": "", "k": 0})
        schema = c.get("/openapi.json").json()
    assert r.status_code == 200, r.text
    hits, want = r.json()["hits"], Predictor.load(pairs_run.path).outputs(["tiger", *DOCS])
    scores = want[1:] @ want[0]
    assert [h["index"] for h in hits] == list(np.argsort(-scores)[:3]) and hits[0]["text"].count("tiger")
    assert np.allclose([h["score"] for h in hits], np.sort(scores)[::-1][:3], atol=1e-5)
    assert r.json()["corpus"] == 4 and len(too_many["hits"]) == 4 and bad.status_code == 422
    assert {"/embed", "/search"} <= set(schema["paths"])


def test_cli_serve_searches_the_corpus_it_was_given(pairs_run, tmp_path, capsys, monkeypatch):
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(DOCS) + "\n")
    code, _, err = run_cli(["serve", pairs_run.path, "--corpus", corpus], capsys, monkeypatch)
    assert code in (0, None), err
    with TestClient(apps[0], base_url="http://localhost") as c:
        hits = c.post("/search", json={"query": "tiger", "k": 2}).json()["hits"]
    assert len(hits) == 2 and all("tiger" in h["text"] for h in hits)


def test_a_task_without_extra_routes_refuses_a_corpus(tiny_run, tmp_path):
    with pytest.raises(TunesmithError, match="takes no --corpus"):
        create_app(tiny_run.path, Limits(), task_options={"corpus": str(tmp_path / "docs.txt")})


def test_nearest_is_the_full_sort():
    rng = np.random.default_rng(0)
    corpus, q = rng.normal(size=(500, 8)), rng.normal(size=8)
    assert [i for i, _ in nearest(q, corpus, 7)] == list(np.argsort(-(corpus @ q))[:7])
    assert len(nearest(q, corpus[:3], 10)) == 3

