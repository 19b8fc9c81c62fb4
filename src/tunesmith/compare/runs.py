"""`tunesmith runs [DIR]`: one row per run folder under DIR, read from its marker, recipe.yaml and metrics.json.

A run folder is one tunesmith made (run.MARKER), or one of a version before the marker (recipe.yaml beside
metrics.json or a model). Nothing of a run is executed: YAML through safe_load, JSON through json."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError
from tunesmith.run import MARKER, RECIPE, read_marker

# Column → what it shows. `--sort` and `--filter` take these names (and also any recipe field: seed, lr, ...).
COLUMNS = {
    "run": "the run folder, relative to DIR",
    "state": "finished, or unfinished (training, interrupted or failed)",
    "task": "task",
    "model": "base model",
    "strategy": "full | head | freeze:K | lora",
    "data": "test data fingerprint: the test file's sha256 (12 digits), or split:… for a split of train",
    "test": "the task's main test metric, with its 95% interval",
    "baseline": "the best baseline on the same metric",
    "verdict": "the verdict's first clause",
    "wall": "wall time of the run",
    "date": "when the run started",
}
NUMERIC = {"test": "test", "baseline": "baseline_value", "wall": "wall_seconds"}  # sort by these values
# not searched: a run's own folders, and MLflow's stores (its artifacts hold copies of run files)
SKIP_DIRS = {"model", "adapter", "checkpoint", "export", "__pycache__", "node_modules", "mlartifacts", "mlruns"}
MAX_DEPTH = 6          # runs/tune-x/trials/003 is 3 deep; a home folder is not walked to the bottom
LOWER_IS_BETTER = {"loss", "perplexity"}


def is_run_folder(path: Path) -> bool:
    if (path / MARKER).is_file():
        return True
    return (path / RECIPE).is_file() and ((path / "metrics.json").is_file() or (path / "model" / "config.json").is_file())


def find_runs(root) -> list[Path]:
    """Run folders at or under `root` (not inside another run folder), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise TunesmithError(f"{root}: no such folder; pass the folder holding your run folders (default ./runs)")
    if is_run_folder(root):
        return [root]
    found = []
    base = len(root.parts)
    for dirpath, dirnames, _ in os.walk(root):  # links to folders are not followed
        here = Path(dirpath)
        if here != root and is_run_folder(here):
            found.append(here)
            dirnames[:] = []
            continue
        if len(here.parts) - base >= MAX_DEPTH:
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
    return sorted(found)


def read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def short_sha(sha: str | None) -> str | None:
    if not isinstance(sha, str):
        return None
    return sha.split(":", 1)[-1][:12]


def test_fingerprint(recipe_doc: dict) -> dict:
    """Which test rows a run was measured on: {"id": full id, "short": what tables show, "how": words}.

    A test file: its sha256. A split of train: the train file's sha256 with the test fraction and the seed
    (stratified_split draws the same rows from the same three). None fields when recipe.yaml lacks them."""
    recipe = recipe_doc.get("recipe") or {}
    data = (recipe_doc.get("provenance") or {}).get("data") or {}
    test = data.get("test") or {}
    if test.get("sha256"):
        return {"id": test["sha256"], "short": short_sha(test["sha256"]),
                "how": f"test file {test.get('path')} (sha256 {short_sha(test['sha256'])}…)"}
    train = data.get("train") or {}
    if train.get("sha256") and recipe.get("test_fraction") is not None:
        key = f"{train['sha256']}|test_fraction={recipe.get('test_fraction')}|seed={recipe.get('seed')}"
        h = hashlib.sha256(key.encode()).hexdigest()
        return {"id": "split:" + h, "short": "split:" + h[:6],
                "how": f"a {recipe.get('test_fraction')} split of {train.get('path')} (sha256 "
                       f"{short_sha(train['sha256'])}…) with seed {recipe.get('seed')}"}
    return {"id": None, "short": None, "how": "no data fingerprint in recipe.yaml"}


_MAIN_METRIC: dict[str, str] = {}


def main_metric(task: str | None, test: dict) -> str | None:
    """The task's main metric (its class says; importing it loads no model), else one the metrics hold."""
    if task and task not in _MAIN_METRIC:
        try:
            from tunesmith.tasks import get_task_class

            _MAIN_METRIC[task] = get_task_class(task).main_metric
        except Exception:  # an unknown task of another version: guessed from its metrics
            _MAIN_METRIC[task] = ""
    m = _MAIN_METRIC.get(task or "", "")
    if m and m in test:
        return m
    for guess in ("macro_f1", "accuracy", "loss"):
        if guess in test:
            return guess
    return next((k for k, v in test.items() if isinstance(v, (int, float)) and k != "n"), None)


def best_baseline(baselines: dict, metric: str | None) -> tuple[str | None, float | None]:
    scored = {n: b[metric] for n, b in (baselines or {}).items()
              if isinstance(b, dict) and isinstance(b.get(metric), (int, float)) and not isinstance(b.get(metric), bool)}
    if not scored:
        return None, None
    pick = min if metric in LOWER_IS_BETTER else max
    name = pick(scored, key=scored.get)
    return name, float(scored[name])


def _started(path: Path, marker: dict | None) -> str | None:
    created = (marker or {}).get("created")
    if isinstance(created, str):
        return created
    for f in (path / RECIPE, path / "metrics.json", path):
        try:
            return datetime.fromtimestamp(f.stat().st_mtime).isoformat(timespec="seconds")
        except OSError:
            continue
    return None


def summarize(path, root=None) -> dict:
    """One row of `tunesmith runs` (JSON-able): what the run folder says about itself."""
    path = Path(path)
    marker = read_marker(path)
    doc = read_yaml(path / RECIPE)
    recipe = doc.get("recipe") if isinstance(doc.get("recipe"), dict) else {}
    metrics = read_json(path / "metrics.json")
    finished = (marker or {}).get("state") == "finished" if marker is not None else bool(metrics)
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    task = metrics.get("task") or recipe.get("task")
    metric = main_metric(task, test)
    value = test.get(metric) if metric else None
    ci = (test.get("ci95") or {}).get(metric) if isinstance(test.get("ci95"), dict) else None
    b_name, b_value = best_baseline(metrics.get("baselines") or {}, metric)
    fp = test_fingerprint(doc)
    verdict = metrics.get("verdict") if isinstance(metrics.get("verdict"), str) else None
    if not finished:
        verdict = "unfinished: resume it with `tunesmith train --resume --out " + str(path) + "`"
    elif not test:
        verdict = "finished without test metrics (a tune trial, or no test set)"
    try:
        rel = str(path.relative_to(root)) if root is not None and path != Path(root) else path.name
    except ValueError:
        rel = str(path)
    return {
        "run": rel or path.name, "path": str(path.resolve()), "state": "finished" if finished else "unfinished",
        "task": task, "model": recipe.get("model"), "strategy": recipe.get("strategy"), "seed": recipe.get("seed"),
        "data": fp["short"], "data_id": fp["id"], "data_how": fp["how"],
        "metric": metric, "test": float(value) if isinstance(value, (int, float)) else None,
        "ci95": [float(ci[0]), float(ci[1])] if isinstance(ci, list) and len(ci) == 2 else None,
        "n_test": test.get("n"), "baseline": b_name, "baseline_value": b_value,
        "verdict": verdict, "wall_seconds": metrics.get("wall_seconds"), "date": _started(path, marker),
        "tracked": (path / "tracking.json").is_file(),  # --track mlflow / tunesmith track wrote its record
        "recipe": recipe,
    }


def _match(value, want: str) -> bool:
    if value is None:
        return want.lower() in ("", "none", "-")
    if isinstance(value, bool):
        return str(value).lower() == want.lower()
    if isinstance(value, (int, float)):
        try:
            return float(value) == float(want)
        except ValueError:
            return False
    return want.lower() in str(value).lower()


def parse_filters(filters) -> list[tuple[str, str]]:
    out = []
    for f in filters or ():
        key, eq, value = f.partition("=")
        if not eq or not key.strip():
            raise TunesmithError(f"--filter {f!r}: expected KEY=VALUE, e.g. --filter task=single_label or "
                                 f"--filter model=minilm")
        out.append((key.strip(), value.strip()))
    return out


def _field(row: dict, key: str):
    """A column's value (or seed, metric, path), else the recipe field's."""
    return row[key] if key in row and key != "recipe" else row["recipe"].get(key)


def filter_rows(rows: list[dict], filters) -> list[dict]:
    """Rows whose every KEY=VALUE matches: text by a case-insensitive substring (model=minilm), numbers exactly
    (seed=1); KEY is a column or a recipe field. state=unfinished lists the unfinished ones."""
    parsed = parse_filters(filters)
    known = set(COLUMNS) | {"seed", "metric", "path"} | {k for r in rows for k in r["recipe"]}
    for key, _ in parsed:
        if key not in known and rows:
            raise TunesmithError(f"--filter {key}=...: no such column or recipe field; columns: {', '.join(COLUMNS)} "
                                 f"(or a recipe field such as seed, lr, epochs)")
    return [r for r in rows if all(
        (r["state"] == v.lower()) if k == "state" else _match(_field(r, k), v) for k, v in parsed)]


def sort_rows(rows: list[dict], column: str = "date", reverse: bool = False) -> list[dict]:
    """Sorted by a column (numbers by value) or a recipe field; runs without the value go last."""
    known = set(COLUMNS) | {"seed"} | {k for r in rows for k in r["recipe"]}
    if column not in known:
        raise TunesmithError(f"--sort {column}: no such column; choose one of {', '.join(COLUMNS)} "
                             f"(or a recipe field such as seed, lr, epochs)")
    key = NUMERIC.get(column, column)

    def value(r):
        return _field(r, key)

    have = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    numeric = all(isinstance(value(r), (int, float)) for r in have)
    have.sort(key=(lambda r: float(value(r))) if numeric else (lambda r: str(value(r)).lower()), reverse=reverse)
    return have + missing


def list_runs(root="runs", sort: str = "date", reverse: bool = False, filters=()) -> list[dict]:
    """The rows of `tunesmith runs`: summarize() of each run folder under `root`, filtered and sorted."""
    root = Path(root)
    rows = [summarize(p, root) for p in find_runs(root)]
    return sort_rows(filter_rows(rows, filters), sort, reverse)


# ---- showing them ------------------------------------------------------------------------------------------------
def fmt_seconds(s) -> str:
    if not isinstance(s, (int, float)):
        return "-"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_model(model) -> str:
    if not isinstance(model, str):
        return "-"
    return Path(model).name if ("/" in model or os.sep in model) and Path(model).exists() else model


def verdict_head(v: str | None, width: int = 70) -> str:
    if not v:
        return "-"
    head = v.split(";")[0].rstrip(".")
    return head if len(head) <= width else head[: width - 1] + "…"


def table_cells(r: dict, metric_in_header: bool = False) -> dict:
    """The text each column shows for row `r`."""
    from tunesmith.evaluate.verdict import metric_name

    test = "-"
    if r["test"] is not None:
        test = ("" if metric_in_header else f"{metric_name(r['metric'])} ") + f"{r['test']:.3f}"
        if r["ci95"]:
            test += f" [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
    base = "-" if r["baseline"] is None else f"{r['baseline']} {r['baseline_value']:.3f}"
    date = (r["date"] or "-").replace("T", " ")[:16]
    data = r["data"] or "-"
    data = data[:8] if ":" not in data else data  # the table's short form; --json has 12 digits
    return {"run": r["run"], "state": r["state"], "task": r["task"] or "-", "model": fmt_model(r["model"]),
            "strategy": r["strategy"] or "-", "data": data, "test": test, "baseline": base,
            "verdict": verdict_head(r["verdict"], 60) if r["state"] == "finished" else "unfinished (resume it)",
            "wall": fmt_seconds(r["wall_seconds"]), "date": date}


SHOWN = [c for c in COLUMNS if c != "state"]  # the table says "unfinished" in the verdict column instead


def runs_table(rows: list[dict], title: str):
    from rich import box
    from rich.table import Table

    from tunesmith.evaluate.verdict import metric_name

    metrics = {r["metric"] for r in rows if r["test"] is not None}
    one = next(iter(metrics)) if len(metrics) == 1 else None
    t = Table(title=title, box=box.SIMPLE_HEAD)
    for c in SHOWN:
        head = f"test {metric_name(one)} [95% CI]" if c == "test" and one else c
        t.add_column(head, justify="right" if c == "wall" else "left", style="dim" if c in ("date", "wall") else None,
                     overflow="fold", ratio=2 if c == "verdict" else 1)
    for r in rows:
        cells = table_cells(r, metric_in_header=one is not None)
        t.add_row(*[cells[c] for c in SHOWN], style="yellow" if r["state"] != "finished" else None)
    return t


def json_rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "recipe"} for r in rows]
