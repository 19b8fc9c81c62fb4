"""`tunesmith tune --track mlflow`: the study as a parent MLflow run, each trial a nested child run.

    parent  "tune <folder>"    params: the tune's settings; tags: study, winner_trial, winner_run_id
      trial 0000 ...            params: the trial's settings; metrics: val_<metric> per epoch, its final value;
                                tags: tunesmith.trial, tunesmith.state (complete | pruned | failed), status
                                FINISHED / KILLED (pruned) / FAILED
      best                      the winner's run folder, uploaded like any run (params, metrics, artifacts,
                                model), tagged tunesmith.winner = true and linked from the parent and its trial

Each worker logs its trials as they end (start_study makes the parent first; its id is in TUNE/tracking.json).
The end of the tune (finish_study, also `tunesmith track TUNE`) logs whatever is missing: trials a worker could
not log, the winner, the study's own files. Everything is looked up before it is logged (by the trial
number under the parent, by the run folder's id for the winner), so running it again adds nothing twice.

SQLite under several writing processes is a known trap (optuna/optuna#820: "database is locked"):
--workers > 1 needs a tracking server or PostgreSQL URI (check_parallel).
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.redact import redact_url
from tunesmith.tracking import flatten
from tunesmith.tracking.mlflow_client import Client, TrackingError, _ms, connect, one_line, quiet, upload_run
from tunesmith.tracking.record import is_sqlite, read_record, resolve_uri, write_record

STATE = {"COMPLETE": ("complete", "FINISHED"), "PRUNED": ("pruned", "KILLED"), "FAIL": ("failed", "FAILED")}
TRIAL_TAG, PARENT_TAG = "tunesmith.trial", "mlflow.parentRunId"


def check_parallel(uri: str, workers: int) -> None:
    if workers > 1 and is_sqlite(uri):
        raise TunesmithError(f"--track mlflow with --workers {workers}: SQLite ({redact_url(uri)}) locks up under "
                             f"parallel writers (optuna/optuna#820); set MLFLOW_TRACKING_URI to a tracking server "
                             f"(http://host:5000) or postgresql://user@host/db, or use --workers 1")


def _parent(client: Client, out: Path, params: dict | None, name: str) -> str:
    """The study's parent run: the one recorded in TUNE/tracking.json when MLflow still has it, else a new one."""
    rec = read_record(out)
    rid = rec.get("run_id")
    if rid:
        try:
            with quiet():
                run = client.mlflow.get_run(rid)
            if run.info.lifecycle_stage == "active":
                if run.info.status != "RUNNING":
                    with quiet():
                        client.mlflow.update_run(rid, status="RUNNING")
                write_record(out, state="running", run_id=rid, experiment_id=client.experiment_id, uri=client.uri)
                return rid
        except Exception:  # deleted, or another tracker: a new parent
            pass
    with quiet():
        run = client.mlflow.create_run(client.experiment_id, run_name=f"tune {out.name}",
                                       tags={"tunesmith.kind": "tune", "tunesmith.study": name,
                                             "tunesmith.tune_folder": str(out.resolve())})
        rid = run.info.run_id
        write_record(out, state="running", run_id=rid, experiment_id=client.experiment_id, uri=client.uri)
        client.log(rid, params=flatten.settings_params(params or {}, client.param_limit))
    return rid


def start_study(out, params: dict, study_name: str) -> str | None:
    """Before the first trial: open (or reopen) the parent run. A tracker that fails is one line, and the study
    goes on untracked; the end of the tune tries again."""
    out = Path(out)
    uri = resolve_uri(out)
    try:
        return _parent(connect(uri, out), out, params, study_name)
    except Exception as e:
        line = e.args[0] if isinstance(e, TrackingError) else f"mlflow: {one_line(e, uri)}"
        print(f"{line}; the tune goes on, its trials are logged when it ends (or by `tunesmith track {out}`)",
              file=sys.stderr)
        return None


def _children(client: Client, parent_id: str) -> dict[int, object]:
    """Trial number -> its logged child run; a child cut short (still RUNNING) is deleted, to be logged again."""
    got = {}
    for r in client.find({PARENT_TAG: parent_id}):
        n = r.data.tags.get(TRIAL_TAG)
        if n is None or r.data.tags.get("tunesmith.kind") != "trial":
            continue
        if r.info.status == "RUNNING":
            with quiet():
                client.mlflow.delete_run(r.info.run_id)
        else:
            got[int(n)] = r
    return got


def log_trial(client: Client, parent_id: str, t, metric: str) -> str | None:
    """One finished optuna trial (a FrozenTrial) as a child run; None for a trial that has not ended."""
    if t.state.name not in STATE:
        return None
    word, status = STATE[t.state.name]
    s = t.user_attrs.get("settings", {})
    note = t.user_attrs.get("stopped") or t.system_attrs.get("fail_reason", "")
    tags = {PARENT_TAG: parent_id, "tunesmith.kind": "trial", TRIAL_TAG: str(t.number), "tunesmith.state": word,
            "tunesmith.base_model": s.get("model"), "tunesmith.strategy": s.get("strategy"),
            "tunesmith.run_folder": t.user_attrs.get("run"), "tunesmith.note": note and str(note)[:500]}
    start = _ms(t.datetime_start)
    end = _ms(t.datetime_complete) or start
    rows = [(flatten.key(f"val_{metric}"), float(v), end, int(step)) for step, v in
            sorted(t.intermediate_values.items())]
    if t.value is not None:
        rows.append((flatten.key(f"validation.{metric}"), float(t.value), end or 0, 0))
    if start and end:
        rows.append(("seconds", (end - start) / 1000, end, 0))
    with quiet():
        run = client.mlflow.create_run(client.experiment_id, start_time=start, run_name=f"trial {t.number:04d}",
                                       tags={k: str(v) for k, v in tags.items() if v})
        rid = run.info.run_id
        client.log(rid, params=flatten.settings_params(s, client.param_limit), metrics=rows)
        client.mlflow.set_terminated(rid, status, end_time=end)
    return rid


class TrialLogger:
    """An optuna callback for each worker: the trial that just ended becomes a child of the parent run named in
    TUNE/tracking.json. Its first failure is one line, then it stops trying (the end of the tune catches up)."""

    def __init__(self, out, metric: str, say=None):
        self.out, self.metric = Path(out), metric
        self.say = say or (lambda line: print(line, file=sys.stderr))
        self.client = self.parent = None
        self.off = False

    def __call__(self, study, trial) -> None:
        if self.off:
            return
        try:
            if self.client is None:
                rec = read_record(self.out)
                if rec.get("state") != "running" or not rec.get("run_id"):  # the parent could not be made
                    self.off = True
                    return
                self.client, self.parent = connect(resolve_uri(self.out), self.out), rec["run_id"]
            if trial.number not in _children_of_trial(self.client, self.parent, trial.number):
                log_trial(self.client, self.parent, trial, self.metric)
        except Exception as e:
            self.off = True
            line = e.args[0] if isinstance(e, TrackingError) else f"mlflow: {one_line(e, resolve_uri(self.out))}"
            self.say(f"{line}; trial {trial.number} and later ones are logged when the tune ends")


def _children_of_trial(client: Client, parent_id: str, number: int) -> set[int]:
    found = client.find({PARENT_TAG: parent_id, TRIAL_TAG: str(number)})
    return {number for r in found if r.data.tags.get("tunesmith.kind") == "trial" and r.info.status != "RUNNING"}


def finish_study(out, trials, doc: dict, *, params: dict, study_name: str, metric: str,
                 interrupted: bool = False) -> str:
    """After the study (and `tunesmith track TUNE`): log the trials not logged yet, the winner's run folder as a
    child linked from the parent, the study's numbers and files; close the parent. Returns the line to show;
    raises TrackingError with one line (TUNE/tracking.json then says failed)."""
    out = Path(out)
    uri = resolve_uri(out)
    try:
        client = connect(uri, out)
        parent = _parent(client, out, params, study_name)
        have = _children(client, parent)
        for t in trials:
            if t.number not in have and t.state.name in STATE:
                have[t.number] = log_trial(client, parent, t, metric)
        w = doc.get("winner") or {}
        winner_id = None
        best = Path(w["run"]) if w.get("run") else None
        if best is not None and (best / "metrics.json").exists():
            rec = upload_run(best, client=client, parent_id=parent,
                             tags={"tunesmith.winner": "true", TRIAL_TAG: str(w["trial"]), "tunesmith.kind": "winner"})
            winner_id = rec["run_id"]
            with quiet():
                for r in client.find({PARENT_TAG: parent, "tunesmith.kind": "winner"}):
                    if r.info.run_id != winner_id:  # an earlier winner of a resumed study
                        client.mlflow.set_tag(r.info.run_id, "tunesmith.winner", "false")
                trial_run = have.get(int(w["trial"]))
                if trial_run is not None:
                    tid = trial_run if isinstance(trial_run, str) else trial_run.info.run_id
                    client.mlflow.set_tag(tid, "tunesmith.winner", "true")
                    client.mlflow.set_tag(tid, "tunesmith.winner_run_id", winner_id)
                client.mlflow.set_tag(parent, "tunesmith.winner_trial", str(w["trial"]))
                client.mlflow.set_tag(parent, "tunesmith.winner_run_id", winner_id)
        end = _ms(datetime.now())
        counts = doc.get("counts") or {}
        rows = [(flatten.key(f"trials.{k}"), float(v), end, 0) for k, v in counts.items()]
        if isinstance(w.get("validation"), dict):
            rows += [(k, v, end, 0) for k, v in flatten.numbers(w["validation"], "best.validation.").items()]
        if isinstance(w.get("test"), dict):
            rows += [(k, v, end, 0) for k, v in flatten.numbers(w["test"], "best.test.").items()]
        with quiet():
            client.log(parent, metrics=rows)
            for name in ("tune.json", "tune_report.html", "optimization_history.png", "metric_vs_time.png",
                         "param_importances.png"):
                if (out / name).is_file():
                    client.mlflow.log_artifact(parent, str(out / name))
            client.mlflow.set_terminated(parent, "KILLED" if interrupted else "FINISHED")
        write_record(out, state="tracked", run_id=parent, experiment_id=client.experiment_id, uri=uri,
                     url=client.url(parent), winner_run_id=winner_id)
    except Exception as e:
        line = e.args[0] if isinstance(e, TrackingError) else f"mlflow: {one_line(e, uri)}"
        rec = read_record(out)
        try:
            write_record(out, state="failed", uri=uri, error=line,
                         **({"run_id": rec["run_id"]} if rec.get("run_id") else {}))
        except OSError:
            pass
        raise TrackingError(line) from None
    where = client.url(parent) or f"{client.shown} (experiment {client.experiment_id})"
    return f"logged the study to MLflow: parent run {parent} with {len(have)} trial runs at {where}"
