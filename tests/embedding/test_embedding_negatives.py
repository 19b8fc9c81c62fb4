"""--hard-negatives K: mined negatives are never an anchor's positive nor within the margin of it, the loss
ranks K+1 candidates of each row, refusals are one line, a run trains end to end and resume keeps the rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith.config import make_recipe
from tunesmith.errors import TunesmithError
from tunesmith.tasks.embedding import negatives as N
from tunesmith.tasks.embedding import steps as S

from conftest import one_line_error, run_cli
from emb_runs import toy_pairs, write_csv


def test_mine_skips_positives_and_the_margin_and_pads_short_rows():
    # cosines with anchor 0: its positive 1 at 0.8; 2 at 0.79 (within 5% of 0.8: a likely positive); 3 at 0.6
    # and 4 at 0.1 (a hard and an easy negative). Anchor 5 is orthogonal to all of them.
    v = torch.zeros(6, 3)
    v[0] = torch.tensor([1.0, 0, 0])
    for t, c in {1: 0.8, 2: 0.79, 3: 0.6, 4: 0.1}.items():
        v[t] = torch.tensor([c, (1 - c * c) ** 0.5, 0])
    v[5] = torch.tensor([0, 0, 1.0])
    units = [(0, 1), (5, 2), (5, 3), (5, 4)]
    rows, stats = N.mine(v, units, k=1)
    assert rows == [(0, 1, 3), (5, 2, 1), (5, 3, 1), (5, 4, 1)]  # 2 skipped (0.79 > 0.8 - 0.04); 3 the hardest
    assert stats["skipped_as_likely_positives"] == 1 and stats["mined"] == 4 and stats["rows_short"] == 0
    rows, stats = N.mine(v, units, k=3)  # fewer than K left: what was found, then PAD
    assert rows[0] == (0, 1, 3, 4, S.PAD) and rows[1] == (5, 2, 1, S.PAD, S.PAD)
    assert stats["rows_short"] == 4 and stats["mined"] == 5
    # anchor 0 with positives 1 and 4: both barred, the margin counts from the lower (0.1): 2 and 3 skipped
    rows, stats = N.mine(v, [(0, 1), (0, 4), (5, 2), (5, 3)], k=2)
    assert rows[:2] == [(0, 1, S.PAD, S.PAD), (0, 4, S.PAD, S.PAD)]
    assert sorted(rows[2][2:]) == [1, 4] and sorted(rows[3][2:]) == [1, 4]
    assert stats["skipped_as_likely_positives"] == 2
    # triplets: the row's own negative (3, the hardest) is kept and not mined again
    rows, _ = N.mine(v, [(0, 1, 3), (5, 2, 0), (5, 3, 0), (5, 4, 0)], k=1)
    assert rows == [(0, 1, 3, 4), (5, 2, 0, 1), (5, 3, 0, 1), (5, 4, 0, 1)]


def _units(tok, rows):
    texts = list(dict.fromkeys([r["anchor"] for r in rows] + [r["positive"] for r in rows]))
    at = {t: i for i, t in enumerate(texts)}
    return S.Units(texts, tok(texts, truncation=True, max_length=32)["input_ids"],
                   [(at[r["anchor"]], at[r["positive"]]) for r in rows])


@pytest.fixture(scope="module")
def mined(tiny_models):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["bert"])
    model = AutoModel.from_pretrained(tiny_models["bert"])
    units = _units(tok, toy_pairs(120))
    rows, stats = N.mine_units(model, units, 3, tok.pad_token_id, 16, False, torch.device("cpu"))
    from tunesmith.tasks.embedding.inference import embed_texts

    vec = torch.from_numpy(embed_texts(model, tok, units.texts, 32, 16, False, torch.device("cpu")))
    return units, rows, stats, vec


def test_mined_negatives_are_never_a_positive_nor_above_the_margin(mined):
    units, rows, stats, vec = mined
    positives = {}
    for a, p in units.units:
        positives.setdefault(a, set()).add(p)
    assert any(len(p) > 1 for p in positives.values())  # anchors with several positives are exercised
    checked = 0
    for a, p, *neg in rows:
        pos_score = min(float(vec[a] @ vec[q]) for q in positives[a])
        for n in neg:
            if n == S.PAD:
                continue
            assert n not in positives[a] and n != a
            assert units.texts[n] != units.texts[p]
            assert float(vec[a] @ vec[n]) <= pos_score - abs(pos_score) * N.MARGIN + 1e-5
            checked += 1
    assert checked == stats["mined"] > len(rows)  # most rows found negatives
    assert stats["skipped_as_likely_positives"] > 0  # the margin bit on this data (the check above can fail)
    assert all(len(r) == 2 + 3 for r in rows)


def test_the_loss_ranks_k_plus_one_candidates_per_row(mined, tiny_models, monkeypatch):
    from transformers import AutoModel

    units, rows, _, _ = mined
    k = 3
    seen = {}
    real = S.mnrl

    def spy(anchors, candidates, masked=None, **kw):
        seen.update(anchors=len(anchors), candidates=len(candidates), masked=masked)
        return real(anchors, candidates, masked, **kw)

    monkeypatch.setattr(S, "mnrl", spy)
    train = S.Units(units.texts, units.ids, rows)
    steps = S.EmbeddingSteps(None, train, None, make_recipe(train="x.csv"), 0, None)
    idx = steps.batches(8, 0, 0)[0]
    b = steps.batch(idx, torch.device("cpu"))
    pads = int((b["pos"][:, 1:] == S.PAD).sum())
    loss, _ = steps.loss(AutoModel.from_pretrained(tiny_models["bert"]), b)
    assert seen["anchors"] == len(idx) and seen["candidates"] == len(idx) * (k + 1)
    assert int(seen["masked"].all(0).sum()) >= pads  # a missing negative is no candidate of any row
    assert torch.isfinite(loss)


def test_refusals_are_one_line(tmp_path, capsys, monkeypatch):
    scored = write_csv(tmp_path / "sts.csv", [{"sentence1": f"a {i}", "sentence2": f"b {i}", "score": i % 5}
                                              for i in range(40)])
    labelled = write_csv(tmp_path / "lab.csv", [{"text": f"t {i}", "label": "xy"[i % 2]} for i in range(40)])
    for args, want in [([scored], "CoSENT"), ([labelled, "--task", "embedding"], "labelled texts")]:
        code, _, err = run_cli(["train", *args, "--hard-negatives", "2", "--out", tmp_path / "r"], capsys, monkeypatch)
        assert want in one_line_error(code, err)
    pairs = write_csv(tmp_path / "pairs.csv", toy_pairs(40))
    code, _, err = run_cli(["train", pairs, "--hard-negatives", "-1", "--out", tmp_path / "r"], capsys, monkeypatch)
    assert "hard_negatives" in one_line_error(code, err)
    with pytest.raises(TunesmithError, match="--hard-negatives -1"):
        N.check(-1, "pairs")


def test_a_run_with_hard_negatives_trains_end_to_end(tiny_models, tmp_path):
    import tunesmith

    data = write_csv(tmp_path / "pairs.csv", toy_pairs(120))
    said = []
    run = tunesmith.train(data, model=str(tiny_models["bert"]), epochs=2, lr=5e-3, batch_size=16, seed=0,
                          warmup_ratio=0.0, bf16="off", max_length=32, hard_negatives=1, baselines=False,
                          out=str(tmp_path / "run"), keep_checkpoints=True,
                          on_event=lambda kind, **kw: said.append(kw.get("message", "")))
    hn = run.metrics["hard_negatives"]
    assert hn["k"] == 1 and 0 < hn["mined"] <= hn["rows"] and hn["rows"] == run.metrics["data"]["rows"]["train"]
    assert any(m.startswith(f"hard negatives: {hn['mined']} mined") for m in said)
    h = run.metrics["history"]
    assert len(h) == 2 and h[1]["train_loss"] < h[0]["train_loss"]
    doc = json.loads((Path(run.path) / "checkpoint" / N.FILE).read_text())
    assert doc["stats"] == hn and all(len(u) == 3 for u in doc["units"])


def test_resume_restores_the_mined_rows_or_refuses_another_k(mined, tmp_path):
    units, rows, stats, _ = mined
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / N.FILE).write_text(json.dumps({"stats": stats, "units": [list(u) for u in rows]}))
    enc = {"train": units}
    assert N.restore(enc, make_recipe(train="x.csv", hard_negatives=3), ckpt) == stats
    assert enc["train"].units == rows and enc["train"].texts is units.texts
    for k, want in [(1, "started with --hard-negatives 3, not 1"), (0, "started with --hard-negatives 3, not 0")]:
        with pytest.raises(TunesmithError, match=want):
            N.restore({"train": units}, make_recipe(train="x.csv", hard_negatives=k), ckpt)
    with pytest.raises(TunesmithError, match="started without --hard-negatives"):
        N.restore({"train": units}, make_recipe(train="x.csv", hard_negatives=2), tmp_path)


def test_an_interrupted_run_resumes_on_the_rows_it_mined(tiny_models, tmp_path, monkeypatch):
    import tunesmith
    from conftest import StopAfter
    from tunesmith.train.loop import Interrupted

    data = write_csv(tmp_path / "pairs.csv", toy_pairs(120))
    kw = dict(model=str(tiny_models["bert"]), epochs=2, lr=5e-3, batch_size=16, seed=0, warmup_ratio=0.0, bf16="off",
              max_length=32, hard_negatives=2, baselines=False, audit=False, patience=0)  # --metric auto, resolved
    whole = tunesmith.train(data, out=str(tmp_path / "whole"), **kw)
    flag = StopAfter(1, 2)
    with pytest.raises(Interrupted):
        tunesmith.train(data, out=str(tmp_path / "cut"), on_event=flag.on_event, stop=flag, **kw)
    calls = []
    real = N.mine_units
    monkeypatch.setattr(N, "mine_units", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = tunesmith.train(data, out=str(tmp_path / "cut"), resume=True, **kw)
    assert not calls  # resume mines nothing: it reads the rows back
    assert resumed.metrics["hard_negatives"] == whole.metrics["hard_negatives"]
    for a, b in zip(whole.metrics["history"], resumed.metrics["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)


def test_only_rank_zero_writes_the_mined_rows(mined, tiny_models, tmp_path, monkeypatch):
    """Under --nproc every rank mines alike, but a rank other than 0 writing checkpoint/ could create the run
    folder before rank 0 checks it is free (a CI run failed so: "already exists")."""
    from transformers import AutoModel, AutoTokenizer

    from tunesmith.train import distributed

    units = mined[0]
    tok = AutoTokenizer.from_pretrained(tiny_models["bert"])
    model = AutoModel.from_pretrained(tiny_models["bert"])
    recipe = make_recipe(train="x.csv", hard_negatives=1, out=str(tmp_path / "run"))
    for main, made in [(False, False), (True, True)]:
        monkeypatch.setattr(distributed, "is_main", lambda: main)
        enc = {"train": units}
        N.before_fit(model, tok, enc, recipe, torch.device("cpu"), False, lambda *a, **k: None)
        assert len(enc["train"].units[0]) == 3  # mined on every rank
        assert (tmp_path / "run" / "checkpoint" / N.FILE).exists() is made
