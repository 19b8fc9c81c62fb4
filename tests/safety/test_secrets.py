"""A --storage password reaches no file, no console line and no error (issue #20, item 5).

A real PostgreSQL server with password authentication: the password must work when given in the URL,
in PGPASSWORD, in a pgpass file or through a libpq service, and must show nowhere."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import yaml

from conftest import make_tiny_model, toy_rows, write_csv

PW = "Pw-4/kqzx@s3cret"  # '/' and '@' must be %-escaped in a URL; the redaction must hide both forms
QPW = quote(PW, safe="")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd  # initdb refuses root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_port():
    """A server that asks for a password (scram-sha-256) on 127.0.0.1; yields its port."""
    pg = _pg_bin()
    if pg is None:  # tests/tune/test_tune_postgres.py installs the server on CI; here it is only used
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="tunesmith-pgpw-"))
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text(PW + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([str(pg / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                                 f"--pwfile={pwfile}"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                                 f"-p {port} -c listen_addresses=127.0.0.1 -k {root}", "start"]),
                   check=True, capture_output=True)
    try:
        yield port
    finally:
        subprocess.run(_as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")  # one model, not all of tiny_models


def _cli(argv: list[str], capfd) -> tuple[int, str, str]:
    """tunesmith's main() in this process; fd-level capture also sees worker subprocesses."""
    from tunesmith import cli

    old = sys.argv
    sys.argv = ["tunesmith", *argv]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = old
    out, err = capfd.readouterr()
    return code, out, err


def _no_secret(text: str, where: str) -> None:
    for s in (PW, QPW, quote(PW)):
        assert s not in text, f"the password appears in {where}: ...{text[max(0, text.find(s) - 80):][:200]}"


def test_redact_url_hides_passwords_and_secret_query_values():
    from tunesmith.redact import redact_url, scrub

    assert redact_url(f"postgresql://me:{QPW}@db.example:5432/tunesmith") == "postgresql://me:***@db.example:5432/tunesmith"
    assert redact_url("postgresql://me@db/x?sslmode=require&password=abc") == "postgresql://me@db/x?sslmode=require&password=***"
    assert redact_url(f"postgresql://me:{PW}@db/x") == "postgresql://me:***@db/x"  # unescaped '@' and '/' too
    assert redact_url("sqlite:///tune.db") == "sqlite:///tune.db" and redact_url(None) is None
    url = f"postgresql://me:{QPW}@db/x"
    assert scrub(f"could not parse {url} ({PW}, {QPW})", url) == "could not parse postgresql://me:***@db/x (***, ***)"


class _InProcessWorker:
    """Stands in for subprocess.Popen of `python -m tunesmith.tune.worker ARGS`: runs the worker's main() here,
    with only the environment the parent passed (a real process would cost ~10 s of imports per worker)."""

    def __init__(self, cmd, env=None, **kw):
        import torch

        from tunesmith.tune import worker

        assert cmd[1:3] == ["-m", "tunesmith.tune.worker"], cmd
        threads = torch.get_num_threads()
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env if env is not None else saved)
        try:
            self.returncode = worker.main(cmd[3])
        finally:
            os.environ.clear()
            os.environ.update(saved)
            torch.set_num_threads(threads)

    def wait(self, timeout=None):
        return self.returncode


def test_tune_with_password_in_url_leaks_nowhere(pg_port, tiny_bert, tmp_path, capfd, monkeypatch):
    """The issue's repro: the password in --storage, with workers (they read tune_args.json)."""
    from tunesmith.tune import search

    monkeypatch.setattr(search, "subprocess", SimpleNamespace(Popen=_InProcessWorker))  # only tune's own spawns
    data = write_csv(tmp_path / "toy.csv", toy_rows())
    cfg = tmp_path / "space.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": {"baselines": False, "audit": False}, "tune": {
        "strategies": ["head"], "epochs": [1, 1], "batch_size": [32], "startup_trials": 0, "pruner": "none"}}))
    out = tmp_path / "t"
    url = f"postgresql://postgres:{QPW}@127.0.0.1:{pg_port}/postgres"
    code, stdout, stderr = _cli(["tune", str(data), "--models", str(tiny_bert), "--storage", url,
                                 "--study", "secret", "--trials", "2", "--workers", "2", "--out", str(out),
                                 "--config", str(cfg)], capfd)
    assert code == 0, stderr[-3000:]
    assert (out / "best" / "model" / "config.json").exists(), "the study ran through the password-protected server"
    files = [f for f in out.rglob("*") if f.is_file()]
    assert len(files) > 10
    for f in files:
        _no_secret(f.read_bytes().decode("latin-1"), str(f.relative_to(out)))
    _no_secret(stdout, "stdout")
    _no_secret(stderr, "stderr")
    assert f"postgres:***@127.0.0.1:{pg_port}" in (out / "tune_args.json").read_text()
    assert "holds a password" in stderr, "a password on the command line gets a one-line hint to move it"


def test_password_from_pgpassword_pgpass_or_service(pg_port, tmp_path, monkeypatch):
    """libpq reads PGPASSWORD, PGPASSFILE and PGSERVICE itself when the URL has no password: check it
    holds through SQLAlchemy + psycopg2 as Optuna uses them."""
    from tunesmith.tune.space import TuneSpace
    from tunesmith.tune.study import open_study, storage_for

    plain = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    for var in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))  # not the machine's own ~/.pgpass
    from tunesmith.errors import TunesmithError

    with pytest.raises(TunesmithError) as e:  # no password anywhere: refused, one line
        storage_for(plain, tmp_path, TuneSpace())
    assert "password" in str(e.value) and "\n" not in str(e.value)

    monkeypatch.setenv("PGPASSWORD", PW)
    study, _ = open_study(storage_for(plain, tmp_path, TuneSpace()), "pgpassword", "macro_f1", TuneSpace(), 0)
    assert study.study_name == "pgpassword"
    monkeypatch.delenv("PGPASSWORD")

    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_port}:*:postgres:{PW.replace(':', chr(92) + ':')}\n")
    pgpass.chmod(0o600)  # libpq ignores a pgpass file others can read
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    open_study(storage_for(plain, tmp_path, TuneSpace()), "pgpass", "macro_f1", TuneSpace(), 0)

    services = tmp_path / "pg_service.conf"
    services.write_text(f"[tunesmith]\nhost=127.0.0.1\nport={pg_port}\nuser=postgres\ndbname=postgres\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    open_study(storage_for("postgresql:///?service=tunesmith", tmp_path, TuneSpace()), "service", "macro_f1",
               TuneSpace(), 0)
    monkeypatch.setenv("PGSERVICE", "tunesmith")
    open_study(storage_for("postgresql://", tmp_path, TuneSpace()), "service2", "macro_f1", TuneSpace(), 0)


@pytest.mark.parametrize("url, expect", [
    ("postgress://me:{qpw}@127.0.0.1/db", "postgress://me:***@127.0.0.1/db"),         # mistyped scheme
    ("postgresql://me:{qpw}@db.invalid/db", "postgresql://me:***@db.invalid/db"),       # unknown host
    ("postgresql://me:{qpw}@127.0.0.1:notaport/db", "postgresql://me:***@127.0.0.1:notaport/db"),  # bad port
    ("postgresql://me:{qpw}@127.0.0.1:1/db", "postgresql://me:***@127.0.0.1:1/db"),     # nothing listening
    ("postgresql://me:{qpw}@[::1/db", "postgresql://me:***@[::1/db"),                  # SQLAlchemy cannot parse it
    ("postgresql://me:{{{qpw}}}@127.0.0.1:1/db", "postgresql://me:***@127.0.0.1:1/db"),  # braces: Optuna formats URLs
    ("postgresql://me:{pw}@127.0.0.1:1/db", "postgresql://me:***@127.0.0.1:1/db"),      # '@' not %-escaped
])
def test_storage_errors_are_one_line_without_the_password(url, expect, tmp_path, capfd):
    data = write_csv(tmp_path / "toy.csv", toy_rows())
    code, stdout, stderr = _cli(["tune", str(data), "--storage", url.format(pw=PW, qpw=QPW), "--trials", "1",
                                 "--out", str(tmp_path / "t")], capfd)
    assert code == 2, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 2, stderr  # the hint + the error
    assert expect in stderr, stderr
    _no_secret(stderr + stdout, "the error")
    for part in ("kqzx", "s3cret"):  # nor a piece of it (a misparsed URL puts one in the host name)
        assert part not in stderr, stderr
    for f in (tmp_path / "t").rglob("*"):
        if f.is_file():
            _no_secret(f.read_bytes().decode("latin-1"), str(f))


def test_wrong_password_error_hides_it_and_env_url_is_read(pg_port, tmp_path, capfd, monkeypatch):
    data = write_csv(tmp_path / "toy.csv", toy_rows())
    wrong = "Wrong-" + PW
    monkeypatch.setenv("TUNESMITH_STORAGE", f"postgresql://postgres:{quote(wrong, safe='')}@127.0.0.1:{pg_port}/postgres")
    code, stdout, stderr = _cli(["tune", str(data), "--trials", "1", "--out", str(tmp_path / "t")], capfd)
    assert code == 2 and "password authentication failed" in stderr, stderr
    assert f"postgres:***@127.0.0.1:{pg_port}" in stderr, "the URL came from TUNESMITH_STORAGE"
    assert "holds a password" not in stderr, "no hint to move a password that is not on the command line"
    for s in (wrong, quote(wrong, safe=""), PW, QPW):
        assert s not in stderr + stdout
