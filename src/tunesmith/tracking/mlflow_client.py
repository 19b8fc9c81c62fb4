"""Uploading a finished run folder to MLflow (MlflowClient: no global active run, safe in any process).

What a run becomes: the resolved recipe as params (provenance under `provenance.`), each epoch of
metrics.json's history as metrics with step = epoch, the final test / validation / baseline / retention /
calibration numbers, tags for task, base model, strategy and verdict, and as artifacts report.html,
MODEL_CARD.md, recipe.yaml, metrics.json, audit.json and the model folder.

The model is a plain artifact folder (`model/`), not an `mlflow.transformers` model: the folder is the run's
own Hugging Face folder (config.json's id2label holds the label names, so AutoModelForSequenceClassification
loads it with them), plus model/tunesmith.json (task, max_length, the calibrated temperature). Downloading
the run's artifacts gives a folder that `tunesmith predict`, `serve` and `evaluate` read as they read the run
(recipe.yaml + metrics.json + model/). `mlflow.transformers` would rebuild a stock pipeline that drops the
temperature and tunesmith.json, log a second copy of the weights, and infer pip requirements at each upload.

Idempotent: each MLflow run carries the run folder's id (tag tunesmith.run_id, from the run's marker). An
upload first looks for it: a finished MLflow run is adopted (the record was lost), an unfinished one (an
earlier upload cut short) is deleted and the run is uploaded whole.

mlflow is imported here only: `tunesmith.tracking` loads this module when tracking is on.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from datetime import datetime
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError
from tunesmith.redact import redact_url, scrub
from tunesmith.run import RECIPE, open_run, read_marker
from tunesmith.tracking import flatten
from tunesmith.tracking.record import experiment_name, read_record, resolve_uri, write_record

ARTIFACT_FILES = ("report.html", "MODEL_CARD.md", RECIPE, "metrics.json", "audit.json")
RUN_ID_TAG = "tunesmith.run_id"
# A tracker that is down must not hold a finished run for minutes: MLflow retries 7 times with backoff (~4 min)
# by default. These apply unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # tunesmith prints its own one line
NOISY = ("mlflow", "urllib3", "alembic", "sqlalchemy", "databricks")


class TrackingError(TunesmithError):
    """The tracker failed: the run folder is intact, `tunesmith track` can upload it later."""
    exit_code = 1


@contextlib.contextmanager
def quiet():
    """MLflow's and its libraries' log lines (retries, database migrations, run URLs) stay out of the output:
    tunesmith says in one line what happened."""
    import mlflow  # noqa: F401  its first import sets its loggers' levels: before they are saved here

    levels = {n: logging.getLogger(n).level for n in NOISY}
    for n in NOISY:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def one_line(e: BaseException, uri: str) -> str:
    """The failure in one line without the URI's secrets: for a network failure its root cause (MLflow wraps
    "Connection refused" in three layers of retry text), else the error's own first line."""
    chain, x = [], e
    while x is not None and len(chain) < 10:
        chain.append(x)
        x = x.__cause__ or x.__context__
    network = [x for x in chain if isinstance(x, OSError)]
    if network:
        e = network[-1]
    text = (str(e).strip().splitlines() or [""])[0].strip()
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return scrub(text[:300], uri)


def _ms(t) -> int | None:
    if t is None:
        return None
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t)
        except ValueError:
            return None
    return int(t.timestamp() * 1000)


def _driver_uri(uri: str) -> str:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the pinned driver is psycopg2 (as tune/study.rdb_url)."""
    import importlib.util

    if uri.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + uri[len("postgresql://"):]
    return uri


class Client:
    """An MlflowClient on one tracking URI and the experiment tunesmith logs to."""

    def __init__(self, uri: str, folder=None):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        with quiet():
            from mlflow import MlflowClient
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

            self.uri, self.shown = uri, redact_url(uri)
            self.param_limit = MAX_PARAM_VAL_LENGTH
            self.mlflow = MlflowClient(tracking_uri=_driver_uri(uri))
            self.experiment_id = self._experiment(folder)

    def _experiment(self, folder) -> str:
        name = experiment_name()
        exp = self.mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns of the cwd
            location = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        try:
            return self.mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # another process created it meanwhile
            exp = self.mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def url(self, run_id: str) -> str | None:
        if self.uri.startswith(("http://", "https://")):
            return f"{self.shown.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
        return None

    def find(self, tags: dict[str, str]) -> list:
        """Runs of the experiment (not deleted) with these tag values."""
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        with quiet():
            return self.mlflow.search_runs([self.experiment_id], filter_string=where, max_results=1000)

    def log(self, run_id: str, params: dict | None = None, metrics: list | None = None) -> None:
        from mlflow.entities import Metric, Param

        params = [Param(k, v) for k, v in (params or {}).items()]
        for i in range(0, len(params), 100):
            self.mlflow.log_batch(run_id, params=params[i:i + 100])
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in (metrics or [])]
        for i in range(0, len(metrics), 1000):
            self.mlflow.log_batch(run_id, metrics=metrics[i:i + 1000])

    def log_folder(self, folder: Path, *, parent_id: str | None = None, tags: dict | None = None,
                   on_created=None) -> str:
        """Upload one finished run folder as one MLflow run; returns its id."""
        folder = Path(folder)
        recipe_doc = yaml.safe_load((folder / RECIPE).read_text()) or {}
        metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
        marker = read_marker(folder) or {}
        end = int((folder / "metrics.json").stat().st_mtime * 1000) if metrics else None
        start = _ms(marker.get("created")) or int((folder / RECIPE).stat().st_mtime * 1000)
        all_tags = {**flatten.tags_of(metrics, recipe_doc), "tunesmith.kind": "run",
                    "tunesmith.run_folder": str(folder.resolve())}
        if marker.get("run_id"):
            all_tags[RUN_ID_TAG] = marker["run_id"]
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        all_tags.update(tags or {})
        with quiet():
            run = self.mlflow.create_run(self.experiment_id, start_time=start, tags=all_tags, run_name=folder.name)
            rid = run.info.run_id
            if on_created:
                on_created(rid)
            end = end or start
            rows = [(k, v, end, 0) for k, v in flatten.final_metrics(metrics).items()]
            rows += [(k, v, start + int(1000 * t), step) for k, v, step, t in
                     flatten.history_metrics(metrics.get("history", []))]
            self.log(rid, flatten.params_of(recipe_doc, self.param_limit), rows)
            for name in ARTIFACT_FILES:
                if (folder / name).is_file():
                    self.mlflow.log_artifact(rid, str(folder / name))
            if (folder / "model").is_dir():
                self.mlflow.log_artifacts(rid, str(folder / "model"), "model")
            self.mlflow.set_terminated(rid, "FINISHED", end_time=max(end, start))
        return rid

    def adopt_or_clear(self, run_key: str) -> str | None:
        """An earlier upload of the run with this marker id: a finished one's id (the upload is done); unfinished
        ones (cut short) are deleted."""
        done = None
        for r in self.find({RUN_ID_TAG: run_key}):
            if r.info.status == "FINISHED" and done is None:
                done = r.info.run_id
            elif r.info.status != "FINISHED":
                with quiet():
                    self.mlflow.delete_run(r.info.run_id)
        return done


def connect(uri: str, folder=None) -> Client:
    try:
        return Client(uri, folder)
    except Exception as e:
        raise TrackingError(f"mlflow: cannot open the tracker at {redact_url(uri)} ({one_line(e, uri)})") from None


def upload_run(folder, *, force: bool = False, uri: str | None = None, parent_id: str | None = None,
               tags: dict | None = None, client: Client | None = None) -> dict:
    """Log a finished run folder to MLflow, once. Returns the record written to FOLDER/tracking.json, with
    `already` True when the run was tracked before (nothing uploaded). A failure writes a record with state
    failed and raises TrackingError (one line, no password); the run folder itself is never changed."""
    folder = Path(folder)
    open_run(folder)  # a finished run only (the same refusals as predict and serve)
    uri = client.uri if client is not None else (uri or resolve_uri(folder))
    rec = read_record(folder)
    if rec.get("state") == "tracked" and not force:
        return {**rec, "already": True}
    run_key = (read_marker(folder) or {}).get("run_id")
    started: dict = {}
    try:
        client = client or connect(uri, folder)
        rid = None if force or not run_key else client.adopt_or_clear(run_key)
        if rid is None:
            def created(run_id):
                started["run_id"] = run_id
                write_record(folder, state="uploading", run_id=run_id, experiment_id=client.experiment_id, uri=uri)

            rid = client.log_folder(folder, parent_id=parent_id, tags=tags, on_created=created)
    except Exception as e:
        line = e.args[0] if isinstance(e, TrackingError) else f"mlflow: {one_line(e, uri)}"
        if rec.get("state") != "tracked":  # a failed --force keeps the record of the upload that worked
            try:
                write_record(folder, state="failed", uri=uri, error=line, **started)
            except OSError:
                pass
        raise TrackingError(line) from None
    return {**write_record(folder, state="tracked", run_id=rid, experiment_id=client.experiment_id, uri=uri,
                           url=client.url(rid)), "already": False}


def describe(rec: dict, folder) -> str:
    where = rec.get("url") or f"{rec.get('uri')} (experiment {rec.get('experiment_id')})"
    if rec.get("already"):
        return (f"{folder}: already tracked as MLflow run {rec.get('run_id')} at {where}; "
                f"--force uploads it again")
    return f"logged {folder} to MLflow: run {rec['run_id']} at {where}"


def failure_line(folder, e: TrackingError) -> str:
    return (f"{e.args[0]}; the run folder {folder} is complete, and `tunesmith track {folder}` uploads it "
            f"when the tracker is back")

