"""`tunesmith tune`: run a study under a budget, then measure the winner once on test.

OUT/
  tune_args.json      the command's settings (workers read them; a re-run resumes from the same folder)
  study.journal       Optuna journal storage (unless --storage)
  trials/NNNN/        each trial's run folder; weights kept only for the best-so-far trial
  best/               the winner: a normal run folder, measured on test once the search stops
  tune.json           every trial (params, metric, duration, state) and the winner's test metrics
  tune_report.html    leaderboard + optimization history, parameter importances, metric vs time (PNGs)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
from pydantic import BaseModel, Field, field_serializer
from rich.console import Console
from rich.live import Live

from tunesmith import pipeline
from tunesmith.config import make_recipe
from tunesmith.errors import TunesmithError
from tunesmith.redact import redact_url
from tunesmith.run import MARKER, RECIPE, check_out, discard, reopen
from tunesmith.train.loop import Interrupted
from tunesmith.tune import board
from tunesmith.tune.objective import HOST, Objective
from tunesmith.tune.space import first_guesses, load_space
from tunesmith.tune.study import fail_dead_local_trials, fail_dead_trials, finished, open_study, storage_for

ARGS = "tune_args.json"
STORAGE_ENV = "TUNESMITH_STORAGE"  # the whole --storage URL; workers get the real one this way, not from ARGS
HEAVY = ("model", "adapter", "checkpoint")


class TuneArgs(BaseModel):
    train: str
    test: str | None = None
    models: list[str] | None = None
    seconds: float | None = None
    trials: int | None = None
    metric: str | None = None
    out: str
    storage: str | None = Field(None, repr=False)  # may hold a password: see _hide_password
    study: str = "tunesmith"
    workers: int = 1
    config: str | None = None
    deadline: float | None = None  # set once per command; workers share it
    track: str | None = None  # none | mlflow (default: the recipe's `track`)

    @field_serializer("storage")
    def _hide_password(self, url):  # tune_args.json and any other dump: never the password
        return redact_url(url)


def parse_time(text: str | None) -> float | None:
    """'20m', '90s', '1h', '1h30m' or plain seconds."""
    if not text:
        return None
    import re

    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not parts or not any(parts.groups()):
        raise TunesmithError(f"--time {text}: write a duration such as 20m, 90s or 1h30m")
    h, m, s = (float(g or 0) for g in parts.groups())
    return h * 3600 + m * 60 + s


def default_out(train: str) -> str:
    return str(Path("runs") / f"tune-{datetime.now():%Y%m%d-%H%M%S}-{Path(train).stem}")


def _prepare_out(args: TuneArgs) -> Path:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / ARGS).exists():
        raise TunesmithError(f"{out}: exists and is not a tunesmith tune folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _base_and_space(args: TuneArgs):
    recipe_doc, space = load_space(args.config)
    base = make_recipe(**{**recipe_doc, "train": args.train, "test": args.test, "metric": args.metric, "out": args.out})
    cls, base = pipeline.choose_task(base, lambda *a, **k: None)  # the task's defaults (token: --metric f1)
    base = cls.tune_recipe(base)
    models = args.models or space.models or [base.model]
    return base, space, models


def tidy(study: optuna.Study, trial=None) -> None:
    """Drop the weights of finished trials of this host that are not the best (one snapshot: no race)."""
    trials = study.get_trials(deepcopy=False)
    best = board._best_number(study)
    for t in trials:
        if t.state.is_finished() and t.number != best and t.user_attrs.get("host") == HOST:
            run = Path(t.user_attrs.get("run", ""))
            for name in HEAVY:
                if (run / name).is_dir() and (run / MARKER).exists():
                    shutil.rmtree(run / name, ignore_errors=True)


def work(args: TuneArgs, console: Console | None = None, live: bool = False, study=None) -> optuna.Study:
    """One worker: trials until the budget or the trial count is reached."""
    out = Path(args.out)
    base, space, models = _base_and_space(args)
    if study is None:
        study, _ = open_study(storage_for(args.storage, out, space), args.study, base.metric, space, base.seed)
    if args.workers > 1:  # share the cores: N workers each with all threads thrash the caches
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))
    say = (lambda n, s: None) if live or console is None else (
        lambda n, s: console.print(f"[dim]trial {n}: {s['strategy']} "
                                   f"{board._fmt_params({k: s[k] for k in board.SHOWN if k in s})}[/dim]", highlight=False))
    objective = Objective(base, space, models, out, args.deadline, on_trial=say)
    callbacks = [tidy]
    if args.trials:
        callbacks.append(optuna.study.MaxTrialsCallback(args.trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                              optuna.trial.TrialState.PRUNED)))
        if finished(study) >= args.trials:
            return study
    if console is not None and not live:
        callbacks.append(lambda st, t: console.print(_line(t, base.metric), highlight=False))
    if args.track == "mlflow":  # each trial a nested MLflow run as it ends (tracking/study.py)
        from tunesmith.tracking.study import TrialLogger

        say = console and (lambda line: console.print(line, highlight=False))
        callbacks.append(TrialLogger(out, base.metric, say))
    timeout = None if args.deadline is None else max(0.0, args.deadline - time.time())
    if timeout == 0:
        return study
    study.optimize(objective, timeout=timeout, callbacks=callbacks, catch=(RuntimeError, ValueError),
                   gc_after_trial=True)
    return study


def _line(t, metric) -> str:
    r = board.trial_row(t)
    v = f"{r['metric']:.4f}" if r["metric"] is not None else "-"
    note = f" - {r['note']}" if r["note"] else ""
    return f"trial {r['trial']} {r['state']}: {r['strategy']} val {metric} {v} ({r['seconds']:.0f}s){note}"


def tune(args: TuneArgs, console: Console, on_event=None) -> dict:
    """Run (or resume) the study, then evaluate the winner on test. Returns the tune.json document."""
    out = _prepare_out(args)
    if args.deadline is None and args.seconds:
        args = args.model_copy(update={"deadline": time.time() + args.seconds})
    if args.trials is None and args.seconds is None:
        args = args.model_copy(update={"trials": 20})
    (out / ARGS).write_text(args.model_dump_json(indent=2))
    base, space, models = _base_and_space(args)
    args = _start_tracking(args, base, space, out)
    study, fresh = open_study(storage_for(args.storage, out, space), args.study, base.metric, space, base.seed)
    stale = fail_dead_local_trials(study, HOST)
    if stale:
        console.print(f"[dim]{stale} trial(s) of a stopped earlier run marked failed[/dim]")
    if fresh:
        for g in first_guesses(space):
            study.enqueue_trial(g, skip_if_exists=True)
    console.print(f"study {args.study}: {finished(study)} finished trials so far; "
                  f"budget {args.seconds and f'{args.seconds:.0f}s' or '-'}, trials {args.trials or '-'}, "
                  f"{args.workers} worker(s)", highlight=False)
    interrupted = False
    title = f"tune: validation {base.metric}"
    live = Live(get_renderable=lambda: board.trials_table(study, base.metric, title), console=console,
                refresh_per_second=0.5) if console.is_terminal else None
    try:
        if live:
            live.start()
        if args.workers > 1:
            _run_workers(args, out)
        else:
            work(args, console, live=live is not None, study=study)
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
    finally:
        if live:
            live.stop()
    tidy(study)
    doc = finish(study, args, base, console, on_event)
    if args.track == "mlflow":
        _finish_tracking(study, args, base, space, out, doc, console, interrupted)
    if interrupted:
        raise Interrupted(f"interrupted: best so far in {(doc.get('winner') or {}).get('run', '-')}; "
                          f"run the same command again to resume the study")
    return doc


def _tracking_params(args: TuneArgs, base, space) -> dict:
    """The parent run's params: the command's settings (the storage URL without its password) and the space."""
    doc = args.model_dump(mode="json", exclude={"deadline", "out", "track"})
    return {**doc, "metric": base.metric, "space": space.model_dump(mode="json")}


def _start_tracking(args: TuneArgs, base, space, out: Path) -> TuneArgs:
    """--track (else the recipe's `track`) into the args the workers read; with mlflow, the study's parent run
    before the first trial. SQLite with several workers is refused before anything runs."""
    track = args.track or base.track
    if track not in ("none", "mlflow"):
        raise TunesmithError(f"--track {track}: use none or mlflow")
    args = args.model_copy(update={"track": track})
    if track == "mlflow":
        from tunesmith.tracking import resolve_uri
        from tunesmith.tracking.study import check_parallel, start_study

        check_parallel(resolve_uri(out), args.workers)
        start_study(out, _tracking_params(args, base, space), args.study)
    return args


def _finish_tracking(study, args: TuneArgs, base, space, out: Path, doc: dict, console, interrupted=False) -> None:
    """The trials no worker logged, the winner (a child run linked from the parent) and the study's files; a
    tracker that fails is one line: the tune folder is complete, `tunesmith track OUT` uploads it later."""
    from tunesmith.tracking.mlflow_client import TrackingError
    from tunesmith.tracking.study import finish_study

    try:
        line = finish_study(out, study.get_trials(deepcopy=False), doc, params=_tracking_params(args, base, space),
                            study_name=args.study, metric=base.metric, interrupted=interrupted)
    except TrackingError as e:
        line = f"{e.args[0]}; the tune folder {out} is complete: `tunesmith track {out}` uploads it later"
    console.print(line, highlight=False, soft_wrap=True)


def track_tune(out) -> str:
    """`tunesmith track TUNE`: log a finished tune's study (what is not logged yet) from its folder and storage.
    A --storage URL's password comes from TUNESMITH_STORAGE, as for the workers. Raises TrackingError."""
    from tunesmith.tracking.study import finish_study

    out = Path(out)
    args = TuneArgs.model_validate_json((out / ARGS).read_text())
    if args.storage:
        args = args.model_copy(update={"storage": os.environ.get(STORAGE_ENV, args.storage)})
    base, space, _ = _base_and_space(args)
    study = optuna.load_study(study_name=args.study, storage=storage_for(args.storage, out, space))
    doc = json.loads((out / "tune.json").read_text()) if (out / "tune.json").exists() else {}
    return finish_study(out, study.get_trials(deepcopy=False), doc, params=_tracking_params(args, base, space),
                        study_name=args.study, metric=base.metric)


def _run_workers(args: TuneArgs, out: Path) -> None:
    cfg = out / ARGS
    cfg.write_text(args.model_dump_json(indent=2))
    env = {**os.environ, **({STORAGE_ENV: args.storage} if args.storage else {})}  # cfg holds it redacted
    procs = [subprocess.Popen([sys.executable, "-m", "tunesmith.tune.worker", str(cfg)], env=env)
             for _ in range(args.workers)]
    try:
        for p in procs:
            p.wait()
    except KeyboardInterrupt:  # the workers got the same Ctrl-C: let them write their checkpoints
        for p in procs:
            p.wait()
        raise


def finish(study: optuna.Study, args: TuneArgs, base, console: Console, on_event=None) -> dict:
    """Leaderboard, the winner measured on test (once), tune.json, plots and tune_report.html."""
    out = Path(args.out)
    fail_dead_trials(study, HOST)
    extra = {"metric": base.metric, "models": _base_and_space(args)[2], "storage": "rdb" if args.storage else "journal"}
    old = json.loads((out / "tune.json").read_text()) if (out / "tune.json").exists() else {}
    winner = old.get("winner")
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is not None and not (winner and winner.get("trial") == best.number and (out / "best" / "model").exists()):
        console.print(f"winner: trial {best.number} ({best.user_attrs['settings']['strategy']}, validation "
                      f"{base.metric} {best.value:.4f}); measuring it on test", highlight=False)
        quiet = (lambda kind, **kw: None if kind == "resumed" else on_event(kind, **kw)) if on_event else None
        winner = final_run(best, base, out / "best", quiet)
    if best is None:
        console.print("no trial finished within the budget: give it more --time (the first trial of each "
                      "model also fills the caches)")
    extra["winner"] = winner
    doc = board.write_tune_json(study, out, extra)
    plots = board.write_plots(study, out, base.metric)
    board.write_html(doc, out, plots, base.metric)
    console.print(board.trials_table(study, base.metric, f"leaderboard (validation {base.metric})", best_first=True))
    return doc


def final_run(best, base, dest: Path, on_event=None) -> dict:
    """The winner's own run folder, finished like a normal run: if its weights are here, resume the
    finished training (no epoch runs again) so only the test measurement is new; else train it again."""
    src = Path(best.user_attrs.get("run", ""))
    if dest.exists():
        check_out(dest, overwrite=True, resume=False)  # a run folder holding nothing but its own files
        discard(dest)
    # epochs: a trial cut by the budget counts as the epochs it finished; resuming then trains no more
    settings = {"test": base.test, "out": str(dest), "baselines": base.baselines, "audit": base.audit,
                "epochs": best.user_attrs["settings"]["epochs"], "track": "none",  # the study logs it (a child)
                "keep_checkpoints": base.keep_checkpoints}  # the trial kept its own; the run keeps the user's
    here = best.user_attrs.get("host") == HOST and src.resolve().is_relative_to(dest.parent.resolve())
    if here and (src / "checkpoint" / "last.pt").exists():
        shutil.move(str(src), dest)
        # The finished trial becomes a run to finish: with the test file and the epochs it completed recorded,
        # --resume's checks of data and settings pass, and no epoch runs again.
        reopen(dest, test=base.test, epochs=settings["epochs"])
        run = pipeline.train(base.train, config=str(dest / RECIPE), resume=True, on_event=on_event, **settings)
    else:  # the winner ran on another machine: same recipe, same seed, here
        recipe = base.model_dump(exclude={"train", "out"})
        recipe.update(best.user_attrs["settings"], **settings)
        run = pipeline.train(base.train, on_event=on_event, **recipe)
    return {"trial": best.number, "run": str(dest), "settings": best.user_attrs["settings"],
            "validation": run.metrics.get("validation"), "test": {k: v for k, v in run.metrics.get("test", {}).items()
                                                                    if not isinstance(v, (dict, list))}}
