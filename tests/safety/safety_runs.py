"""Shared run folders for the safety tests: one finished and one interrupted tiny run (clone before changing).

Not a conftest.py: a second module named `conftest` would replace the root one that other test folders import.
Test modules import these fixtures; the runs are built once per session (_MEMO)."""
from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from conftest import StopAfter, toy_rows, write_csv

BIN = Path(sys.executable).with_name("tunesmith")
_MEMO: dict = {}
QUICK = {"epochs": 1, "lr": 1e-3, "batch_size": 16, "seed": 0, "audit": False, "baselines": False}


def snapshot(root: Path) -> dict:
    """Every path under root (links not followed) with its bytes' hash: equal snapshots = nothing touched."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def clone(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def safety_data(tmp_path_factory) -> Path:
    if "data" not in _MEMO:
        _MEMO["data"] = write_csv(tmp_path_factory.mktemp("safety_data") / "toy.csv", toy_rows())
    return _MEMO["data"]


@pytest.fixture(scope="session")
def finished_run(tiny_models, safety_data, tmp_path_factory):
    """(Run, event messages) of a finished 1-epoch run. Do not modify: clone() it."""
    import tunesmith

    if "finished" not in _MEMO:
        events = []
        run = tunesmith.train(str(safety_data), model=str(tiny_models["bert"]),
                              out=str(tmp_path_factory.mktemp("finished") / "run"),
                              on_event=lambda kind, **kw: events.append(kw.get("message", kind)), **QUICK)
        _MEMO["finished"] = run, events
    return _MEMO["finished"]


@pytest.fixture(scope="session")
def interrupted_run(tiny_models, safety_data, tmp_path_factory) -> Path:
    """A run stopped by Ctrl-C in its second (last) epoch: last.pt and best.pt written. Do not modify: clone() it."""
    import tunesmith
    from tunesmith.train.loop import Interrupted

    if "interrupted" not in _MEMO:
        out = tmp_path_factory.mktemp("interrupted") / "run"
        flag = StopAfter(1, 2)
        with pytest.raises(Interrupted):
            tunesmith.train(str(safety_data), model=str(tiny_models["bert"]), out=str(out), on_event=flag.on_event,
                            stop=flag, **{**QUICK, "epochs": 2, "patience": 0})
        _MEMO["interrupted"] = out
    return _MEMO["interrupted"]


def run_cli(args, capsys, monkeypatch):
    """The CLI in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from tunesmith import cli

    monkeypatch.setattr(sys, "argv", ["tunesmith", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code or 0
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line_error(code, err, exit_code=2) -> str:
    assert code == exit_code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err  # info lines may precede it; the error itself is one line
    return errors[0]
