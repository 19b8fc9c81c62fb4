"""tracking.json: what a run folder (or a tune folder) knows of its upload to an experiment tracker, and
where the tracker is. No tracker library is imported here: reading the record costs nothing.

    {"tracker": "mlflow", "state": "tracked" | "uploading" | "failed", "run_id": "...", "experiment_id": "1",
     "uri": "sqlite:////abs/runs/mlflow.db", "url": "http://host/#/experiments/1/runs/...", "time": "...",
     "error": "one line (state failed)"}

`uri` is written through redact_url: a password in MLFLOW_TRACKING_URI never reaches the file. A recorded
URI that had one is not reused by `tunesmith track` (the environment must name it again).
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from tunesmith.redact import redact_url
from tunesmith.run import artifact, write_json

RECORD = "tracking.json"
URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "tunesmith"
TUNE_ARGS = "tune_args.json"  # what makes a folder a tune folder (tune/search.py ARGS; tracking sits below tune)
TRACKERS = ("none", "mlflow")


def read_record(folder) -> dict:
    """The folder's tracking.json, or {} (none yet, or unreadable: then the folder counts as untracked)."""
    try:
        doc = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_record(folder, **doc) -> dict:
    """Replace tracking.json (written beside and renamed; listed in the run's marker, so --overwrite owns it)."""
    doc = {"tracker": "mlflow", **doc, "time": datetime.now().isoformat(timespec="seconds")}
    if doc.get("uri"):
        doc["uri"] = redact_url(doc["uri"])
    write_json(artifact(Path(folder), RECORD), doc)
    return doc


def is_tracked(folder) -> bool:
    return read_record(folder).get("state") == "tracked"


def runs_dir(folder) -> Path:
    """The folder the runs sit in: a run's parent; a tune's winner (TUNE/best) and trials count as the tune's."""
    folder = Path(folder).resolve()
    parent = folder.parent
    for p in (parent, parent.parent):
        if (p / TUNE_ARGS).exists():
            return p.parent
    return parent


def default_uri(folder) -> str:
    """A local SQLite store beside the runs (MLflow 3 deprecates the file store)."""
    return f"sqlite:///{runs_dir(folder) / 'mlflow.db'}"


def resolve_uri(folder) -> str:
    """$MLFLOW_TRACKING_URI; else the URI this folder was last tracked with (when it held no secret); else the
    SQLite store beside the runs."""
    env = os.environ.get(URI_ENV)
    if env:
        return env
    recorded = read_record(folder).get("uri")
    if recorded and "***" not in recorded:
        return recorded
    return default_uri(folder)


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def experiment_name() -> str:
    return os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
