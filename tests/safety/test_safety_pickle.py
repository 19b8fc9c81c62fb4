"""Finding 4 of issue #20: every file tunesmith reads back is data only; a crafted pickle never runs."""
import re
from pathlib import Path

import pytest
import torch

from safety_runs import clone, finished_run, interrupted_run, safety_data  # noqa: F401

import tunesmith
from tunesmith.errors import TunesmithError

SRC = Path(__file__).resolve().parents[2] / "src" / "tunesmith"


class Evil:
    """Unpickling this runs code: it creates the file `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


def test_a_crafted_last_pt_is_refused_not_run(interrupted_run, tmp_path):
    run = clone(interrupted_run, tmp_path / "run")
    pwned = tmp_path / "pwned"
    torch.save(Evil(pwned), run / "checkpoint" / "last.pt")
    with pytest.raises(TunesmithError, match=re.escape(str(run / "checkpoint" / "last.pt"))):
        tunesmith.train(resume=True, out=str(run))
    assert not pwned.exists()


def test_a_crafted_best_pt_is_refused_not_run(tmp_path):
    from tunesmith.train.checkpoint import load_weights

    pwned, path = tmp_path / "pwned", tmp_path / "best.pt"
    torch.save(Evil(pwned), path)
    with pytest.raises(TunesmithError, match=re.escape(str(path))):
        load_weights(path)
    assert not pwned.exists()


def test_a_crafted_baselines_file_is_never_read(interrupted_run, tmp_path):
    run = clone(interrupted_run, tmp_path / "run")
    pwned = tmp_path / "pwned"
    torch.save(Evil(pwned), run / "checkpoint" / "baselines.pt")  # where earlier versions kept them
    tunesmith.train(resume=True, out=str(run), baselines=True)  # baselines do not change training: allowed
    assert not pwned.exists()
    assert (run / "checkpoint" / "baselines.json").exists()


def test_saved_checkpoints_load_as_data_only(interrupted_run, tmp_path):
    from tunesmith.train.checkpoint import atomic_save, load_weights, trainable_state

    ck = torch.load(interrupted_run / "checkpoint" / "last.pt", weights_only=True)
    assert {"trainable", "optimizer", "scheduler", "rng", "state"} <= set(ck)
    assert isinstance(ck["rng"], torch.Tensor) and ck["state"]["epoch"] == 1
    best = tmp_path / "best.pt"  # written as the loops write best.pt (only with enough validation rows)
    atomic_save(trainable_state(torch.nn.Linear(3, 2)), best)
    assert set(load_weights(best)) == {"weight", "bias"}


def test_no_code_reads_a_file_as_pickle():
    offenders = []
    pattern = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(|allow_pickle\s*=\s*True|joblib\.load")
    for f in SRC.rglob("*.py"):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{f.relative_to(SRC)}:{i}: {line.strip()}")
    assert offenders == []
