"""Experiment tracking: a finished run, or a tune with its trials, logged to MLflow.

    tunesmith train data.csv --track mlflow          # or `track: mlflow` in a recipe
    tunesmith tune data.csv --track mlflow            # the study a parent run, each trial a nested child
    tunesmith track RUN_OR_TUNE_FOLDER                # upload later (ran untracked, or the tracker was down)

The tracker is told after the run folder is finished (run.finish): if it is down or fails, the run is
complete all the same, one line says so, and FOLDER/tracking.json (record.py) remembers what to retry.
mlflow itself is imported only when tracking is on (mlflow_client.py, study.py).
"""
from __future__ import annotations

from pathlib import Path

from tunesmith.tracking.record import RECORD, TRACKERS, is_sqlite, is_tracked, read_record, resolve_uri

__all__ = ["RECORD", "TRACKERS", "is_sqlite", "is_tracked", "read_record", "resolve_uri", "track_finished",
           "upload"]


def track_finished(out, tracker: str, on_event) -> dict | None:
    """The write stage of `tunesmith train`, after the run is finished: log it, or say in one line why not.
    Never raises for the tracker's sake (the run is already complete on disk)."""
    if tracker in (None, "none"):
        return None
    from tunesmith.tracking.mlflow_client import TrackingError, describe, failure_line, upload_run

    try:
        rec = upload_run(out)
    except TrackingError as e:
        on_event("info", message=failure_line(out, e))
        return None
    on_event("info", message=describe(rec, out))
    return rec


def upload(folder, *, force: bool = False) -> str:
    """`tunesmith track RUN`: upload a finished run folder (once; again with force). Returns the line to show;
    raises TrackingError (one line) when the tracker fails."""
    from tunesmith.tracking.mlflow_client import describe, upload_run

    return describe(upload_run(Path(folder), force=force), folder)
