"""`tunesmith compare RUN_A RUN_B [...]`: is the difference between runs real?

Runs are comparable only when they were measured on the same test rows: the same test data fingerprint
(compare.runs.test_fingerprint), the same task and label set, and as many saved predictions as targets.
Each later run is compared with the first (the reference) by a paired bootstrap on the per-row test
predictions both saved (evaluate/bootstrap.py): the same resampled rows score both runs, so the noise of the
test set they share cancels. Classifiers keep checkpoint/test_logits.npy (and, since this command exists,
checkpoint/test_targets.npy); a task that keeps per-item scores in metrics.json (`<metric>_each`, e.g.
sft's rouge_l_each) is compared item by item (paired_mean_diff)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunesmith.compare.runs import read_yaml, test_fingerprint
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.bootstrap import N_BOOT, paired_bootstrap, paired_mean_diff, scorer
from tunesmith.evaluate.verdict import metric_name
from tunesmith.run import RECIPE, open_run

LOGITS, TARGETS = "test_logits.npy", "test_targets.npy"  # in checkpoint/: they survive run.drop_checkpoints
IGNORED_SETTINGS = {"out"}  # differs between any two runs and changes nothing they compute


@dataclass
class Side:
    """One run as compare reads it."""
    path: Path
    name: str
    recipe_doc: dict
    metrics: dict
    task: object
    fingerprint: dict
    preds: np.ndarray | None = None      # decisions per test row, in the run's own label order
    targets: np.ndarray | None = None    # checkpoint/test_targets.npy, in the run's own label order
    items: dict = field(default_factory=dict)  # per-item scores: {"rouge_l": [...]} from metrics.json test

    @property
    def recipe(self) -> dict:
        return self.recipe_doc.get("recipe") or {}

    @property
    def labels(self) -> list:
        return list(self.metrics.get("labels") or [])


def _load_array(f: Path) -> np.ndarray:
    try:
        return np.load(f, allow_pickle=False)  # no pickles: reading a run executes nothing of it
    except (OSError, ValueError) as e:
        raise TunesmithError(f"{f}: unreadable ({type(e).__name__}); it is what compare reads the run's test "
                             f"predictions from") from None


def load_side(path) -> Side:
    run = open_run(path)  # one line for a folder that is no run, or a run that did not finish
    path = Path(path)
    metrics = run.metrics
    test = metrics.get("test")
    if not isinstance(test, dict) or not test:
        raise TunesmithError(f"{path}: no test metrics in metrics.json (a tune trial, or a run without a test "
                             f"set); compare needs runs measured on test data")
    from tunesmith.tasks import get_task

    task = get_task(metrics.get("task") or run.recipe.get("task"), metrics.get("labels", []))
    doc = read_yaml(path / RECIPE)
    side = Side(path, path.name, doc, metrics, task, test_fingerprint(doc))
    ckpt = path / "checkpoint"
    if (ckpt / LOGITS).is_file() and hasattr(task, "decide") and hasattr(task, "probabilities"):
        with np.errstate(over="ignore"):  # a sigmoid of a huge logit is 0 or 1, as it should be
            side.preds = np.asarray(task.decide(task.probabilities(_load_array(ckpt / LOGITS).astype(np.float64))))
        if (ckpt / TARGETS).is_file():
            side.targets = _load_array(ckpt / TARGETS).astype(int)
            if len(side.targets) != len(side.preds):
                raise TunesmithError(f"{path}: checkpoint/{TARGETS} has {len(side.targets)} rows and "
                                     f"checkpoint/{LOGITS} {len(side.preds)}; the run folder was changed by hand")
    side.items = {k[: -len("_each")]: v for k, v in test.items() if k.endswith("_each") and isinstance(v, list)}
    return side


def _names(paths: list[Path]) -> list[str]:
    """Folder names, or parent/name where two runs share a name."""
    paths = [p.resolve() for p in paths]  # "." has a name too
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def check_comparable(a: Side, b: Side) -> None:
    """One line saying why `b` cannot be compared with `a`, or nothing."""
    for s in (a, b):
        if s.fingerprint["id"] is None:
            raise TunesmithError(f"{s.path}: recipe.yaml records no test data fingerprint, so whether it was "
                                 f"measured on the same rows cannot be told; compare runs of this tunesmith version")
    if a.fingerprint["id"] != b.fingerprint["id"]:
        raise TunesmithError(f"not comparable: {a.name} was measured on {a.fingerprint['how']}, {b.name} on "
                             f"{b.fingerprint['how']}; compare runs measured on the same test data")
    if a.task.name != b.task.name:
        raise TunesmithError(f"not comparable: {a.name} is a {a.task.name} run, {b.name} a {b.task.name} run")
    if set(a.labels) != set(b.labels):
        only_a, only_b = sorted(set(a.labels) - set(b.labels)), sorted(set(b.labels) - set(a.labels))
        raise TunesmithError(f"not comparable: the label sets differ (only {a.name}: {', '.join(only_a[:5]) or '-'}; "
                             f"only {b.name}: {', '.join(only_b[:5]) or '-'})")
    cols = [k for k in ("text_column", "label_column") if a.recipe.get(k) != b.recipe.get(k)]
    if cols:
        k = cols[0]
        raise TunesmithError(f"not comparable: {a.name} read {k} {a.recipe.get(k)!r}, {b.name} {b.recipe.get(k)!r} "
                             f"of the same test data")
    if a.preds is not None and b.preds is not None and len(a.preds) != len(b.preds):
        raise TunesmithError(f"not comparable: {a.name} saved {len(a.preds)} test predictions, {b.name} "
                             f"{len(b.preds)}, on the same test data")


def _to_order(arr: np.ndarray, labels: list, ref: list) -> np.ndarray:
    """Decisions (class ids, or 0/1 columns per label) in the order of the reference run's labels."""
    if labels == ref:
        return arr
    if arr.ndim == 1:
        perm = np.array([ref.index(l) for l in labels])
        return perm[arr]
    return arr[:, [labels.index(l) for l in ref]]


def reread_targets(side: Side) -> np.ndarray:
    """Targets of a run that predates checkpoint/test_targets.npy: its test rows read again the way the run
    read them (its recipe, the task's prepare), when its data files are still there, unchanged."""
    from tunesmith.config import load_recipe
    from tunesmith.pipeline import prepare_data
    from tunesmith.run import fingerprints

    why = None
    try:
        recipe = load_recipe(side.path / RECIPE)
        was = (side.recipe_doc.get("provenance") or {}).get("data") or {}
        now = fingerprints(recipe)
        changed = [f"{now[k]['path']} changed since the run" for k in ("train", "test")
                   if k in was and now.get(k, {}).get("sha256") != was[k].get("sha256")]
        if changed:
            why = changed[0]
        else:
            data = prepare_data(recipe, with_test=True)
            y = np.asarray(side.task.targets(data.test.labels)).astype(int)
            if side.preds is not None and len(y) != len(side.preds):
                why = f"{len(y)} test rows read now, {len(side.preds)} predictions saved"
            else:
                return y
    except (TunesmithError, OSError, KeyError, AttributeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise TunesmithError(f"{side.path}: has no checkpoint/{TARGETS} (trained before tunesmith saved the test "
                         f"targets) and its test rows cannot be read again ({why}); run it again with this version "
                         f"(`tunesmith train --config {side.path / RECIPE} --out NEW`) to compare it")


def _targets(sides: list[Side]) -> np.ndarray:
    ref = sides[0]
    found = [(s, _to_order(s.targets, s.labels, ref.labels)) for s in sides if s.targets is not None]
    for s, y in found[1:]:
        if not np.array_equal(y, found[0][1]):
            raise TunesmithError(f"not comparable: {found[0][0].name} and {s.name} saved different test labels for "
                                 f"the same test data")
    if found:
        return found[0][1]
    return _to_order(reread_targets(ref), ref.labels, ref.labels)


def points(x: float) -> str:
    """A difference in points, signed, 1 decimal; 2 where 1 would round a non-zero bound to ±0.0."""
    s = f"{x:+.1f}"
    return f"{x:+.2f}" if x != 0 and s in ("+0.0", "-0.0") else s


def verdict_line(a: str, b: str, res: dict, metric: str) -> str:
    """"no significant difference ..." or which run is better, with the 95% interval (in points)."""
    m = metric_name(metric)
    d, (lo, hi) = 100 * res["diff"], (100 * res["ci95"][0], 100 * res["ci95"][1])
    if lo > 0:
        return f"{b} is better than {a}: {m} {points(d)} points (95% CI {points(lo)} to {points(hi)})"
    if hi < 0:
        return f"{a} is better than {b}: {m} {points(-d)} points (95% CI {points(-hi)} to {points(-lo)})"
    return (f"no significant difference between {a} and {b}: {m} {b} − {a} = {points(d)} points "
            f"(95% CI {points(lo)} to {points(hi)})")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(sides: list[Side]) -> tuple[list[dict], list[dict]]:
    """(recipe settings, environment facts) whose values are not the same in every run."""
    def diff(dicts):
        keys = list(dict.fromkeys(k for d in dicts for k in d))
        return [{"setting": k, "values": [d.get(k) for d in dicts]} for k in keys
                if k not in IGNORED_SETTINGS and len({repr(d.get(k)) for d in dicts}) > 1]

    recipes = [s.recipe for s in sides]
    env = [{k: v for k, v in _flat(s.recipe_doc.get("provenance") or {}).items() if not k.startswith("data.")}
           for s in sides]
    return diff(recipes), diff(env)


def per_class_deltas(task, y: np.ndarray, preds: list[np.ndarray]) -> list[dict]:
    from tunesmith.evaluate.analysis import per_class

    tables = [per_class(task, y, p) for p in preds]
    rows = [{"label": l, "support": tables[0][l]["support"], "f1": [t[l]["f1"] for t in tables]} for l in task.labels]
    for r in rows:
        r["delta"] = [f - r["f1"][0] for f in r["f1"][1:]]
    return sorted(rows, key=lambda r: -max((abs(x) for x in r["delta"]), default=0))


def slice_deltas(sides: list[Side]) -> dict | None:
    """Per-slice main metric of each run, from metrics.json, where every run measured the same slice column."""
    sl = [s.metrics.get("slices") for s in sides]
    if not all(isinstance(x, dict) and isinstance(x.get("slices"), dict) for x in sl):
        return None
    if len({x.get("column") for x in sl}) != 1:
        return None
    metric = sl[0].get("metric", "macro_f1")
    values = [v for v in sl[0]["slices"] if all(v in x["slices"] for x in sl)]
    rows = []
    for v in values:
        ms = [x["slices"][v].get(metric) for x in sl]
        if not all(isinstance(m, (int, float)) for m in ms):
            continue
        rows.append({"slice": v, "n": sl[0]["slices"][v].get("n"), "values": ms,
                     "ci95": [(x["slices"][v].get("ci95") or {}).get(metric) for x in sl],
                     "delta": [m - ms[0] for m in ms[1:]]})
    return {"column": sl[0].get("column"), "metric": metric, "rows": rows} if rows else None


def compare_runs(paths, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The comparison of runs[1:] with runs[0], as a JSON-able document (compare.html and the CLI show it)."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise TunesmithError("compare needs two run folders or more: tunesmith compare RUN_A RUN_B")
    seen = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise TunesmithError(f"{p}: given twice (also as {seen[key]}); compare different runs")
        seen[key] = p
    sides = [load_side(p) for p in paths]
    for s, n in zip(sides, _names(paths)):
        s.name = n
    ref = sides[0]
    for s in sides[1:]:
        check_comparable(ref, s)

    doc = {"runs": [], "reference": ref.name, "data": ref.fingerprint, "task": ref.task.name, "n_boot": n_boot,
           "seed": seed, "pairs": []}
    if all(s.preds is not None for s in sides):
        y = _targets(sides)
        preds = [_to_order(s.preds, s.labels, ref.labels) for s in sides]
        score = scorer(ref.task)
        points = [score(y, p) for p in preds]
        metric = ref.task.main_metric if ref.task.main_metric in points[0] else next(iter(points[0]))
        shown = [c for c in getattr(ref.task, "summary_columns", ()) if c in points[0]] or [metric]
        doc.update(kind="predictions", metric=metric, metrics=shown, n=int(len(y)))
        for s, pt in zip(sides, points):
            ci = s.metrics["test"].get("ci95") or {}
            doc["runs"].append({"name": s.name, "path": str(s.path), "scores": pt,
                                "ci95": {c: ci.get(c) for c in shown}})
        right = [(p == y) if p.ndim == 1 else (p == y).all(axis=1) for p in preds]
        for s, p, ok in zip(sides[1:], preds[1:], right[1:]):
            res = {c: paired_bootstrap(score, y, p, preds[0], c, n_boot=n_boot, seed=seed) for c in shown}
            agree = (p == preds[0]) if p.ndim == 1 else (p == preds[0]).all(axis=1)
            doc["pairs"].append({"a": ref.name, "b": s.name, "diffs": res,
                                 "verdict": verdict_line(ref.name, s.name, res[metric], metric),
                                 "significant": bool(res[metric]["ci95"][0] > 0 or res[metric]["ci95"][1] < 0),
                                 "agreement": float(agree.mean()), "only_a_right": int((right[0] & ~ok).sum()),
                                 "only_b_right": int((ok & ~right[0]).sum())})
        if hasattr(ref.task, "multi_label"):
            doc["per_class"] = per_class_deltas(ref.task, y, preds)
    else:
        common = [k for k in ref.items if all(k in s.items and len(s.items[k]) == len(ref.items[k]) for s in sides)]
        if not common:
            missing = next(s for s in sides if s.preds is None)
            raise TunesmithError(f"{missing.path}: saved no per-row test predictions (no checkpoint/{LOGITS}, no "
                                 f"per-item scores in metrics.json); compare needs them from every run")
        metric = common[0]
        doc.update(kind="items", metric=metric, metrics=[metric], n=len(ref.items[metric]))
        for s in sides:
            doc["runs"].append({"name": s.name, "path": str(s.path),
                                "scores": {metric: float(np.mean(s.items[metric])) if s.items[metric] else 0.0},
                                "ci95": {metric: None}})
        for s in sides[1:]:
            res = {metric: {"metric": metric, **paired_mean_diff(s.items[metric], ref.items[metric], n_boot, seed)}}
            doc["pairs"].append({"a": ref.name, "b": s.name, "diffs": res,
                                 "verdict": verdict_line(ref.name, s.name, res[metric], metric),
                                 "significant": res[metric]["significant"]})
    settings, env = differences(sides)
    doc["recipe_differences"], doc["environment_differences"] = settings, env
    doc["slices"] = slice_deltas(sides)
    doc["recipes"] = {s.name: s.recipe_doc for s in sides}
    return doc


# ---- where compare.html goes ---------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"


def default_out(paths) -> Path:
    """Beside the first run: compare-<a>-<b>.html (more runs: compare-<a>-<b>-and-N-more.html)."""
    paths = [Path(p) for p in paths]
    names = [_safe(p.resolve().name) for p in paths[:2]]
    more = f"-and-{len(paths) - 2}-more" if len(paths) > 2 else ""
    return paths[0].resolve().parent / f"compare-{'-'.join(names)}{more}.html"


def resolve_out(paths, out=None, overwrite: bool = False) -> Path:
    """The page's path, refused in one line before any work when it would replace a file without --overwrite."""
    f = default_out(paths) if out is None else Path(out)
    if out is not None and (f.is_dir() or not f.suffix):  # a folder (made when missing): the default name in it
        f = f / default_out(paths).name
    if f.suffix.lower() not in (".html", ".htm"):
        raise TunesmithError(f"--out {f}: compare writes an HTML page; give a .html file or a folder")
    if f.exists() and not overwrite:
        raise TunesmithError(f"{f}: already exists; pass --overwrite to replace it, or choose another --out")
    if f.exists() and not f.is_file():
        raise TunesmithError(f"{f}: is not a file; choose another --out")
    return f
