"""`tunesmith embed` (texts → vectors file) and `tunesmith search` (a corpus ranked by a query)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from conftest import one_line_error, run_cli
from emb_runs import pairs_run  # noqa: F401  (a fixture)


def test_embed_writes_unit_vectors(pairs_run, tmp_path, capsys, monkeypatch):
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["tiger", "piano", "a short note on tiger today"]}).to_csv(texts, index=False)
    out = tmp_path / "vectors.parquet"
    code, stdout, err = run_cli(["embed", pairs_run.path, texts, "--out", out], capsys, monkeypatch)
    assert code in (0, None) and "wrote 3 vectors of 32 dimensions" in stdout
    v = np.stack(pd.read_parquet(out)["vector"].to_list())
    assert v.shape == (3, 32) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_search_ranks_the_matching_text_first(pairs_run, tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("a short note on piano today\nall about the tiger here\npeople often talk of the ocean\n")
    code, stdout, _ = run_cli(["search", pairs_run.path, "--corpus", corpus, "--query", "tiger", "--k", "2"],
                              capsys, monkeypatch)
    rows = [[c.strip() for c in l.split("│")[1:-1]] for l in stdout.splitlines() if l.startswith("│")]
    ranked = [r for r in rows if r[0].isdigit()]
    assert code in (0, None) and [r[0] for r in ranked] == ["1", "2"] and ranked[0][2] == "all about the tiger here"
    assert float(ranked[0][1]) > float(ranked[1][1])


def test_embed_refuses_a_run_of_another_task(tiny_run, tmp_path, capsys, monkeypatch):
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n")
    code, _, err = run_cli(["embed", tiny_run.path, texts, "--out", tmp_path / "v.parquet"], capsys, monkeypatch)
    assert "gives no vectors; train one with --task embedding" in one_line_error(code, err)
