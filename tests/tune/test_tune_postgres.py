"""Two `tunesmith tune` workers on one study in a real PostgreSQL server; one is killed mid-trial."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tunesmith.tune.study import rdb_url

from conftest import toy_rows, write_csv


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:  # CI is a fresh machine: install Debian's server
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql",
                       shell=True, check=True, capture_output=True)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    pg = _pg_bin()
    # Not under pytest's tmp: that is private to root, and the server runs as `postgres`.
    data = Path(tempfile.mkdtemp(prefix="tunesmith-pg-")) / "data"
    if os.geteuid() == 0:
        shutil.chown(data.parent, "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([str(pg / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-w", "-l", str(data.parent / "log"), "-o",
                                 f"-p {port} -c listen_addresses=127.0.0.1 -k {data.parent}", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(data.parent, ignore_errors=True)


def test_tune_two_workers_share_a_postgres_study(postgres, tiny_models, tmp_path):
    # Trials must last long enough to be killed mid-way on a fast, quiet machine: 1,800 rows, full
    # fine-tuning (head trials are near-instant once features are cached), 3 epochs each.
    rows = [{"text": f"{r['text']} copy {k}", "label": r["label"]} for k in range(15) for r in toy_rows()]
    toy_csv = write_csv(tmp_path / "toy.csv", rows)
    cfg = tmp_path / "space.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": {"baselines": False, "audit": False}, "tune": {
        "strategies": ["full"], "epochs": [3, 3], "batch_size": [16], "heartbeat_seconds": 2, "pruner": "none"}}))
    n_trials = 5

    def worker(i):
        cmd = [sys.executable, "-m", "tunesmith.cli", "tune", str(toy_csv), "--models", str(tiny_models["bert"]),
               "--storage", postgres, "--study", "shared", "--trials", str(n_trials), "--out", str(tmp_path / f"w{i}"),
               "--config", str(cfg)]
        log = open(tmp_path / f"w{i}.log", "w")  # a file, not a pipe: a full pipe would block the worker
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)

    a, b = worker(0), worker(1)
    storage = optuna.storages.RDBStorage(rdb_url(postgres))
    deadline, victim = time.time() + 480, None  # generous: a shared CI machine can be slow
    while time.time() < deadline and victim is None and a.poll() is None:  # kill A mid-way in its 2nd+ trial
        time.sleep(0.1)
        try:
            trials = optuna.load_study(study_name="shared", storage=storage).get_trials(deepcopy=False)
        except KeyError:
            continue
        mine = [t for t in trials if t.user_attrs.get("pid") == a.pid]
        running = [t for t in mine if t.state == TrialState.RUNNING and t.intermediate_values]
        if any(t.state == TrialState.COMPLETE for t in mine) and running:
            victim = running[0].number
            a.send_signal(signal.SIGKILL)
    assert victim is not None, "worker A never got to a second trial: " + (tmp_path / "w0.log").read_text()[-2000:]
    a.wait()
    b.wait(timeout=600)
    assert b.returncode == 0, (tmp_path / "w1.log").read_text()[-3000:]

    study = optuna.load_study(study_name="shared", storage=storage)
    by_pid = {}
    for t in study.trials:
        by_pid.setdefault(t.user_attrs.get("pid"), []).append(t)
    assert set(by_pid) == {a.pid, b.pid}, "both workers record trials"
    assert study.trials[victim].state == TrialState.FAIL, "the killed worker's trial is marked failed"
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) >= n_trials and any(t.user_attrs["pid"] == b.pid and t.number > victim for t in finished)
    doc = json.loads((tmp_path / "w1" / "tune.json").read_text())
    assert sorted(r["trial"] for r in doc["trials"]) == [t.number for t in study.trials]  # the leaderboard holds all
    assert doc["winner"]["test"]["n"] > 0 and (tmp_path / "w1" / "best" / "model" / "config.json").exists()
