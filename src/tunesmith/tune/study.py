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
    if not url.startswith(("postgresql", "mysql", "sqlite")):
        raise TunesmithError(f"--storage {url}: use postgresql://user:password@host/db (or mysql://, sqlite:///)")
    try:
        return optuna.storages.RDBStorage(rdb_url(url), heartbeat_interval=space.heartbeat_seconds,
                                          grace_period=2 * space.heartbeat_seconds,
                                          engine_kwargs={"pool_pre_ping": True})
    except ImportError:
        raise TunesmithError(f"--storage {url.split(':')[0]}: its database driver is not installed "
                             f"(PostgreSQL: pip install psycopg2-binary)") from None
    except Exception as e:  # sqlalchemy raises many kinds; the user needs the one line
        raise TunesmithError(f"--storage {url.split('@')[-1]}: cannot open ({str(e).splitlines()[0]})") from None


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
