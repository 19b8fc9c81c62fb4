"""The run folder: what a finished (or interrupted) run leaves behind, and how to open it again.

RUN/
  model/           Hugging Face folder (merged for LoRA); label names in config.json
  adapter/         LoRA runs only: the PEFT adapter
  recipe.yaml      fully resolved settings + provenance (versions, data fingerprints)
  metrics.json     test/validation metrics, history, baselines, timings
  checkpoint/      resume state (last.pt, best.pt)
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError

MARKER = "recipe.yaml"


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


def check_out(out: Path, overwrite: bool, resume: bool) -> None:
    """The refusals of prepare_out, changing nothing: callers check before any slow work."""
    if out.exists() and any(out.iterdir()):
        if resume:
            return
        if not overwrite:
            raise TunesmithError(f"{out}: already exists; pass --overwrite to replace it, --resume to continue it, "
                                 f"or choose another --out")
        if not (out / MARKER).exists():
            raise TunesmithError(f"{out}: exists and is not a tunesmith run folder; refusing to delete it, "
                                 f"choose another --out")
    elif resume:
        raise TunesmithError(f"{out}: nothing to resume there; run without --resume")


def prepare_out(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber: an existing folder needs --overwrite, and only a run folder is ever deleted."""
    check_out(out, overwrite, resume)
    if out.exists() and any(out.iterdir()) and not resume:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


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
    doc = {"recipe": recipe.model_dump(mode="json"), "provenance": provenance}
    (out / MARKER).write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=float))
    tmp.replace(path)


def open_run(path) -> Run:
    path = Path(path)
    if not (path / MARKER).exists():
        raise TunesmithError(f"{path}: not a tunesmith run folder (no {MARKER})")
    if not (path / "model" / "config.json").exists():
        raise TunesmithError(f"{path}: the run has no finished model (interrupted? resume it with "
                             f"`tunesmith train --resume --out {path}`)")
    doc = yaml.safe_load((path / MARKER).read_text())
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
    return Run(path, metrics, doc.get("recipe", {}))
