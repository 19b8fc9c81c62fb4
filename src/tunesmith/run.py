"""The run folder: what a finished (or interrupted) run leaves behind, and how to open it again.

RUN/
  model/           Hugging Face folder (merged for LoRA); label names in config.json
  adapter/         LoRA runs only: the PEFT adapter
  recipe.yaml      fully resolved settings + provenance (versions, data fingerprints)
  metrics.json     test/validation metrics, history, baselines, timings
  checkpoint/      resume state (last.pt, best.pt; dropped after success unless keep_checkpoints)
  tracking.json    --track mlflow: the MLflow run it was logged as, or why not yet (tracking/record.py)
  .tunesmith-run.json   the marker: run id, state (training | finished), the names the run created

Only a folder with the marker is a run folder, and --overwrite deletes only the names the marker lists (and
only those in RUN_FILES). Final artifacts are written under a temporary name (NAME.tmp-XXXXXXXX) and
renamed into place, so a killed process never leaves a half-written file under its final name.
"""
from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError

RECIPE = "recipe.yaml"
MARKER = ".tunesmith-run.json"  # written only by tunesmith: what makes a folder a run folder
# Every top-level name a run may create (train, sft, merge, report, export); --overwrite deletes nothing else.
RUN_FILES = frozenset({"model", "adapter", RECIPE, "metrics.json", "audit.json", "report.html", "MODEL_CARD.md",
                       "checkpoint", "sweep.csv", "sweep.png", "export", "tracking.json", MARKER})
TMP_RE = re.compile(r"^(?P<name>.+)\.tmp-[0-9a-f]{8}$")  # tunesmith's own temporary names
# Settings that change what training computes: --resume refuses when one differs from the run's.
TRAINING_FIELDS = ("task", "text_column", "label_column", "val_fraction", "test_fraction", "model", "max_length",
                   "strategy", "epochs", "lr", "batch_size", "grad_accum", "warmup_ratio", "scheduler",
                   "weight_decay", "grad_clip", "label_smoothing", "patience", "metric", "seed", "bf16", "head_init",
                   "pooling", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "prompt_column",
                   "response_column", "train_on_prompt", "overflow", "packing", "stride", "hard_negatives",
                   "mini_batch", "prompt_template", "contrastive")
RESOLVED_LATER = {"task": "auto", "text_column": None, "label_column": None, "max_length": None, "lr": None,
                  "prompt_column": None, "response_column": None, "metric": "auto",
                  "stride": None, "prompt_template": None,
                  "contrastive": "auto"}  # "not given" here: the run decided it
# What a run recorded before these settings existed trained as: the old [CLS] pooler and a random head.
LEGACY = {"pooling": "native", "head_init": "random"}
BIG_CHECKPOINT_FILES = ("last.pt", "best.pt")


@dataclass
class Run:
    path: Path
    metrics: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def __repr__(self):
        test = self.metrics.get("test", {})
        return f"Run({str(self.path)!r}, test={ {k: v for k, v in test.items() if k != 'ci95'} })"


def default_out(train_path: str) -> Path:
    return Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{Path(train_path).stem}"


def tmp_name(path: Path) -> Path:
    """A fresh temporary name beside `path` that only tunesmith uses (see TMP_RE)."""
    return path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = tmp_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_marker(path: Path) -> dict | None:
    """The marker's content when `path` is a run folder, else None (a missing or malformed marker)."""
    f = Path(path) / MARKER
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(doc, dict) and isinstance(doc.get("run_id"), str) and isinstance(doc.get("files"), list)
    return doc if ok else None


def _write_marker(path: Path, doc: dict) -> None:
    write_text_atomic(Path(path) / MARKER, json.dumps(doc, indent=2))


def artifact(out: Path, name: str) -> Path:
    """out/name, recorded in the run's marker first, so that whatever is written there is the run's own."""
    if name not in RUN_FILES:
        raise ValueError(f"{name} is not a run folder name (run.RUN_FILES)")
    doc = read_marker(out)
    if doc is not None and name not in doc["files"]:
        doc["files"].append(name)
        _write_marker(out, doc)
    return Path(out) / name


def is_finished(out: Path) -> bool:
    doc = read_marker(out)
    return doc is not None and doc.get("state") == "finished"


def set_state(out: Path, state: str) -> None:
    doc = read_marker(out)
    if doc is not None:
        doc["state"] = state
        _write_marker(out, doc)


def _own(out: Path, doc: dict | None) -> set[str]:
    """Top-level names in `out` that the run created: listed in its marker, known, never a link."""
    if doc is None:
        return set()
    listed = {n for n in doc["files"] if isinstance(n, str) and n in RUN_FILES} | {MARKER}
    own = set()
    for p in out.iterdir():
        m = TMP_RE.match(p.name)
        if (p.name in listed or (m and m["name"] in listed)) and not p.is_symlink():
            own.add(p.name)
    return own


def _inside(path, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def check_out(out: Path, overwrite: bool, resume: bool, inputs=()) -> None:
    """The refusals of prepare_out, changing nothing: callers check before any slow work.

    `inputs` are the command's own files (data, config, a local model): never inside a folder to delete."""
    out = Path(out)
    if out.is_symlink() and overwrite and not resume:
        raise TunesmithError(f"{out}: is a symbolic link; --overwrite never deletes through a link: pass the "
                             f"folder it points to ({out.resolve()}) or choose another --out")
    if out.exists() and not out.is_dir():
        raise TunesmithError(f"{out}: is a file, not a folder; choose another --out")
    doc = read_marker(out) if out.is_dir() else None
    if resume:
        if not out.is_dir() or not any(out.iterdir()):
            raise TunesmithError(f"{out}: nothing to resume there; run without --resume")
        if doc is None:
            raise TunesmithError(f"{out}: not a tunesmith run folder (no {MARKER}); --resume continues only "
                                 f"a run tunesmith started there; choose another --out")
        return
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not overwrite:
        raise TunesmithError(f"{out}: already exists; pass --overwrite to replace it, --resume to continue it, "
                             f"or choose another --out")
    held = [str(p) for p in inputs if p and _inside(p, out)]
    if held:
        raise TunesmithError(f"{out}: holds {held[0]}, an input of this command; --overwrite would delete it: "
                             f"choose another --out")
    if doc is None:
        raise TunesmithError(f"{out}: exists and is not a tunesmith run folder (no {MARKER}); refusing to delete "
                             f"it, choose another --out")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _own(out, doc))
    if foreign:
        raise TunesmithError(f"{out}: holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
                             f"the run did not create; refusing to delete them: move them away or choose another "
                             f"--out")


def prepare_out(out: Path, overwrite: bool, resume: bool, inputs=()) -> None:
    """Refuse to clobber (check_out), delete a replaced run's own files, and mark the folder as a new run."""
    out = Path(out)
    check_out(out, overwrite, resume, inputs)
    if resume:  # what a killed process left under tunesmith's temporary names goes; nothing else
        for name in _own(out, read_marker(out)):
            if TMP_RE.match(name):
                p = out / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            elif name == "checkpoint" and (out / name).is_dir():  # a checkpoint write cut short (atomic_save)
                for p in (out / name).glob("*.pt.tmp"):
                    p.unlink(missing_ok=True)
        return
    if out.is_dir():
        doc = read_marker(out)
        for name in sorted(_own(out, doc) - {MARKER}):  # check_out made sure nothing else is there
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    import tunesmith

    # The marker goes last: a run folder is only ever one tunesmith made and (re)started.
    _write_marker(out, {"run_id": uuid.uuid4().hex, "tunesmith": tunesmith.__version__,
                        "created": datetime.now().isoformat(timespec="seconds"), "state": "training", "files": []})


def discard(out: Path) -> None:
    """A failed command's run folder: its own entries and marker go, and the folder when that empties it."""
    out = Path(out)
    if not out.is_dir():
        return
    for name in _own(out, read_marker(out)) - {MARKER}:
        p = out / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    try:
        out.rmdir()
    except OSError:  # something else is there: not ours to delete
        pass


def check_resumable(out: Path) -> None:
    """Before reading anything of `out` for --resume: it must be a run tunesmith started."""
    check_out(Path(out), overwrite=False, resume=True)


def check_resume(out: Path, recipe):
    """--resume: the data (sha256) and the settings that change training must be the run's, else one line
    naming what differs. Reads only; nothing of the run is rewritten before this passes. Returns the recipe
    with the run's own values for what this command left to be decided (RESOLVED_LATER) and for settings
    the run's recipe.yaml predates (LEGACY), so the resumed run trains as it started."""
    out = Path(out)
    try:
        doc = yaml.safe_load((out / RECIPE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        raise TunesmithError(f"{out / RECIPE}: missing or unreadable, so the run cannot be resumed; start it "
                             f"again with --overwrite") from None
    was, data = doc.get("recipe") or {}, (doc.get("provenance") or {}).get("data") or {}
    now = recipe.model_dump(mode="json")
    diffs, adopt = [], {}
    for f in TRAINING_FIELDS:
        if f not in now:
            continue
        old = was[f] if f in was else LEGACY.get(f, now[f])
        if (f in RESOLVED_LATER and now[f] == RESOLVED_LATER[f]) or (f in LEGACY and f not in was
                                                                     and f not in recipe.model_fields_set):
            if old is not None and old != now[f]:
                adopt[f] = old  # not given by this command: the run's own value
            continue
        if now[f] != old:
            diffs.append(f"{f} {now[f]} (the run's: {old})")
    from tunesmith.data.io import fingerprint

    for key, what in {"train": "train data", "test": "test data", "retention_data": "retention data"}.items():
        path, old = getattr(recipe, key), data.get(key) or None
        if path is None or old is None:
            if path is not None or old is not None:
                diffs.append(f"{what} {path or 'none'} (the run's: {old.get('path') if old else 'none'})")
            continue
        try:
            sha = fingerprint(path)
        except OSError:
            diffs.append(f"{what} {path} cannot be read (the run's: {old.get('path')})")
            continue
        if sha != old.get("sha256"):
            diffs.append(f"{what} {path} has sha256 {sha[7:19]}… (the run's: {old.get('path')} "
                         f"{str(old.get('sha256'))[7:19]}…)")
    if diffs:
        raise TunesmithError(f"{out}: --resume with other data or settings than the run's: {'; '.join(diffs)}; "
                             f"resume with the run's own (`tunesmith train --resume --out {out}`) or start a new "
                             f"run with another --out")
    return recipe.model_copy(update=adopt) if adopt else recipe


def fingerprints(recipe) -> dict:
    """Path and sha256 of every data file a recipe names: provenance, and what --resume checks."""
    from tunesmith.data.io import fingerprint

    files = {"train": recipe.train, "test": recipe.test, "retention_data": recipe.retention_data}
    return {k: {"path": str(v), "sha256": fingerprint(v)} for k, v in files.items() if v}


def reopen(out: Path, **changes) -> None:
    """For tunesmith tune: a finished trial becomes a run to finish with `changes` (its test file, the epochs
    it completed), its fingerprints re-recorded, so that --resume measures it without training again."""
    from tunesmith.config import load_recipe

    doc = yaml.safe_load((Path(out) / RECIPE).read_text())
    doc["recipe"].update(changes)
    doc.setdefault("provenance", {})["data"] = fingerprints(load_recipe(Path(out) / RECIPE, **changes))
    write_text_atomic(Path(out) / RECIPE, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    set_state(out, "training")


def drop_checkpoints(out: Path) -> tuple[list[str], int]:
    """After success the big resume files go: (their names, bytes freed). Small measurements stay."""
    gone, freed = [], 0
    for name in BIG_CHECKPOINT_FILES:
        f = Path(out) / "checkpoint" / name
        if f.exists():
            freed += f.stat().st_size
            f.unlink()
            gone.append(f"checkpoint/{name}")
    return gone, freed


def finish(out: Path, recipe, on_event) -> None:
    """Mark the run finished, then drop the big resume files unless keep_checkpoints (finished first: a kill
    in between leaves a finished run with its checkpoint, never an unfinished one without it)."""
    set_state(out, "finished")
    if not recipe.keep_checkpoints:
        gone, freed = drop_checkpoints(out)
        if gone:
            on_event("info", message=f"deleted the finished run's resume state ({', '.join(gone)}: "
                                     f"{freed / 2**20:.0f} MB); --keep-checkpoints keeps it")


def save_model(model, tok, dest: Path) -> None:
    """save_pretrained into a temporary folder, renamed into place: `dest` is a whole model or absent."""
    dest = Path(dest)
    tmp = tmp_name(dest)
    try:
        model.save_pretrained(tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, dest: Path) -> None:
    """Rename the finished folder `tmp` to `dest`; an earlier `dest` is moved aside first, then deleted."""
    old = None
    if dest.exists():
        old = tmp_name(dest)
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_tmp(folder: Path, name: str) -> None:
    """Temporary folders/files a killed process left for `name`: only tunesmith's own names are touched."""
    if not Path(folder).is_dir():
        return
    for p in Path(folder).iterdir():
        m = TMP_RE.match(p.name)
        if m and m["name"] == name and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def provenance(recipe, **facts) -> dict:
    """What recipe.yaml records beside the resolved recipe: library versions, the data files' sha256, and
    the run's facts (model path, device, bf16, engine, rows per split, the task's data format)."""
    return {"versions": versions(), "data": fingerprints(recipe), **facts}


def versions() -> dict:
    import tokenizers
    import torch
    import transformers

    import tunesmith

    v = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": str(torch.__version__),
         "transformers": str(transformers.__version__), "tokenizers": tokenizers.__version__,
         "tunesmith": tunesmith.__version__}
    try:
        import peft

        v["peft"] = peft.__version__
    except ImportError:
        pass
    return v


def write_recipe(out: Path, recipe, provenance: dict) -> None:
    doc = {"recipe": recipe.model_dump(mode="json") if hasattr(recipe, "model_dump") else recipe,
           "provenance": provenance}
    write_text_atomic(artifact(out, RECIPE), yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def write_json(path: Path, obj) -> None:
    write_text_atomic(Path(path), json.dumps(obj, indent=2, ensure_ascii=False, default=float))


def open_run(path) -> Run:
    path = Path(path)
    if not (path / RECIPE).exists():
        raise TunesmithError(f"{path}: not a tunesmith run folder (no {RECIPE})")
    if not (path / "model" / "config.json").exists():
        raise TunesmithError(f"{path}: the run has no finished model (interrupted? resume it with "
                             f"`tunesmith train --resume --out {path}`)")
    marker = read_marker(path)  # folders of versions before the marker: judged by their model alone
    if marker is not None and marker.get("state") != "finished":
        raise TunesmithError(f"{path}: the run did not finish (interrupted?); resume it with "
                             f"`tunesmith train --resume --out {path}`")
    doc = yaml.safe_load((path / RECIPE).read_text())
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
    return Run(path, metrics, doc.get("recipe", {}))


INFERENCE = "tunesmith.json"  # in model/: what the Predictor needs beside config.json (task, max_length, temperature)


def _read_inference(f: Path) -> dict:
    try:
        doc = json.loads(f.read_text()) if f.exists() else {}
    except (OSError, ValueError) as e:
        raise TunesmithError(f"{f}: unreadable ({type(e).__name__}); delete it to fall back to the run's "
                             f"recipe.yaml and metrics.json") from None
    if not isinstance(doc, dict):
        raise TunesmithError(f"{f}: not a JSON object; delete it to fall back to the run's recipe.yaml")
    return doc


def write_inference_settings(model_dir: Path, **values) -> None:
    """Merge `values` into model/tunesmith.json (written beside and renamed)."""
    f = Path(model_dir) / INFERENCE
    doc = _read_inference(f)
    doc.update(values)
    write_json(f, doc)


def inference_settings(run: Run) -> dict:
    """task, max_length and temperature of a finished run, from model/tunesmith.json; runs written before
    it held them fall back to recipe.yaml and metrics.json. Also the recipe's bf16 and max_new_tokens
    (their defaults where the recipe predates them): what the Predictor computes with."""
    from tunesmith.config import Recipe

    doc = _read_inference(run.model_dir / INFERENCE)
    task = doc.get("task") or run.metrics.get("task") or run.recipe.get("task")
    max_length = doc.get("max_length") or run.recipe.get("max_length")
    if not task or task == "auto" or not max_length:
        raise TunesmithError(f"{run.path}: neither model/{INFERENCE} nor {RECIPE} records the run's task and "
                             f"max_length; it was not written by tunesmith train or merge")
    temperature = doc.get("temperature", run.metrics.get("calibration", {}).get("temperature", 1.0))
    recipe = {k: Recipe.model_fields[k].default if run.recipe.get(k) is None else run.recipe[k]
              for k in ("bf16", "max_new_tokens")}
    return {**recipe, **doc, "task": task, "max_length": int(max_length), "temperature": float(temperature)}
