"""Study creation and resume on Optuna storage: a journal file in the out folder (one machine, any
number of worker processes: appends under a file lock are safe for concurrent writers, SQLite is not
over NFS and locks the whole database) or RDB storage (PostgreSQL: many machines, with heartbeats so
a killed worker's trial is marked failed)."""
from __future__ import annotations

import os
import warnings

import optuna
from optuna.trial import TrialState

from tunesmith.errors import TunesmithError
from tunesmith.redact import redact_url, scrub
from tunesmith.tune.space import TuneSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
optuna.logging.set_verbosity(optuna.logging.ERROR)  # our table and lines say what happens, without tracebacks
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, TPE group


def storage_for(url: str | None, out, space: TuneSpace):
    if not url:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = str(out / "study.journal")
        # The open-lock works on file systems without symlinks too (the default lock needs them).
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    shown = redact_url(url)  # the URL as every message shows it: never its password
    if not url.startswith(("postgresql", "mysql", "sqlite")):
        raise TunesmithError(f"--storage {shown}: use postgresql://user@host/db with the password in PGPASSWORD "
                             f"or ~/.pgpass (or mysql://, sqlite:///)")
    head, _, tail = url.partition("://")[2].rpartition("@")[0].partition("@")
    if tail and ":" in head and not any(c in tail for c in "/?"):
        # user:p@ss@host: SQLAlchemy would cut the password at its first '@' and try the rest as the host name.
        raise TunesmithError(f"--storage {shown}: the password holds an '@'; write it %40, or better, leave it "
                             f"out of the URL and set PGPASSWORD or ~/.pgpass")
    try:
        # Optuna fills the URL in with str.format: braces in a password must reach it doubled.
        escaped = rdb_url(url).replace("{", "{{").replace("}", "}}")
        return optuna.storages.RDBStorage(escaped, heartbeat_interval=space.heartbeat_seconds,
                                          grace_period=2 * space.heartbeat_seconds,
                                          engine_kwargs={"pool_pre_ping": True})
    except ImportError:
        raise TunesmithError(f"--storage {url.split(':')[0]}: its database driver is not installed "
                             f"(PostgreSQL: pip install psycopg2-binary)") from None
    except Exception as e:  # sqlalchemy raises many kinds, and may quote the URL: the user gets one clean line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = ("; set the password in PGPASSWORD or ~/.pgpass (or the whole URL in TUNESMITH_STORAGE)"
                if "password" in first.lower() else "")
        raise TunesmithError(scrub(f"--storage {shown}: cannot open ({first}){hint}", url, rdb_url(url))) from None


def storage_error(e: BaseException, url: str | None) -> TunesmithError | None:
    """A database failure during the study (connection lost, server gone) as one line without the password;
    None when `e` is not one. Exit code 1: the input was fine."""
    if not url or type(e).__module__.split(".")[0] not in ("sqlalchemy", "psycopg2", "psycopg", "pymysql", "MySQLdb"):
        return None
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    err = TunesmithError(scrub(f"--storage {redact_url(url)}: the database failed during the study ({first}); "
                               f"run the same command again to resume", url, rdb_url(url)))
    err.exit_code = 1
    return err


def rdb_url(url: str) -> str:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the pinned driver is psycopg2 (binary wheels)."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def sampler_for(space: TuneSpace, seed: int):
    # multivariate+group: TPE models the conditional sub-space of each strategy jointly;
    # constant_liar: parallel workers do not all sample the same promising point.
    return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=space.startup_trials, seed=seed)


def pruner_for(space: TuneSpace):
    hi = space.epochs[1]
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=hi, reduction_factor=space.reduction_factor)
    if space.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=space.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(storage, name: str, metric: str, space: TuneSpace, seed: int) -> tuple[optuna.Study, bool]:
    """Create or resume. Returns (study, fresh). A study made for another metric is refused."""
    direction = "minimize" if metric == "loss" else "maximize"
    fresh = name not in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True,
                                    pruner=pruner_for(space))
    except ValueError as e:
        raise TunesmithError(f"study {name}: {e}; use another --study or --out") from None
    if fresh:
        study.set_user_attr("metric", metric)
    elif study.user_attrs.get("metric", metric) != metric:
        raise TunesmithError(f"study {name} was tuned for --metric {study.user_attrs['metric']}; "
                             f"use the same metric or another --study")
    # Each process and each resume gets its own seed: a fixed one would replay the same random trials.
    study.sampler = sampler_for(space, seed * 1000 + len(study.trials) + os.getpid() % 997)
    return study, fresh


def fail_dead_local_trials(study: optuna.Study, host: str) -> int:
    """Journal storage has no heartbeats: a RUNNING trial of a dead process on this host failed."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and pid and not _alive(pid):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
    return n


def fail_dead_trials(study: optuna.Study, host: str) -> None:
    """A killed worker's trial is failed, not running: at once for a dead process on this host (its RDB
    heartbeat may not be stale yet when the last worker finishes: CI saw it RUNNING), by heartbeat elsewhere."""
    fail_dead_local_trials(study, host)
    optuna.storages.fail_stale_trials(study)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))
