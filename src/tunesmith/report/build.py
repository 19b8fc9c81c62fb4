"""Write report.html and MODEL_CARD.md into a run folder from its metrics.json and recipe.yaml."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError
from tunesmith.report import card, html, sft
from tunesmith.run import RECIPE, artifact, write_text_atomic


def load_audit(path: Path, metrics: dict):
    """audit.json (every check with rows and fixes) when there, else the summary kept in metrics."""
    f = path / "audit.json"
    return json.loads(f.read_text()) if f.exists() else metrics.get("audit")


def write_report(run_path) -> tuple[Path, Path]:
    path = Path(run_path)
    if not (path / RECIPE).exists():
        raise TunesmithError(f"{path}: not a tunesmith run folder (no {RECIPE})")
    if not (path / "metrics.json").exists():
        raise TunesmithError(f"{path}: no metrics.json yet (the run did not finish); resume it with "
                             f"`tunesmith train --resume --out {path}`")
    metrics = json.loads((path / "metrics.json").read_text())
    if "test" not in metrics:
        raise TunesmithError(f"{path}/metrics.json: no test metrics; the run did not measure a test set")
    recipe_doc = yaml.safe_load((path / RECIPE).read_text()) or {}
    name = path.resolve().name
    out_html, out_card = artifact(path, "report.html"), artifact(path, "MODEL_CARD.md")
    if metrics.get("task") == "sft":
        page, model_card = sft.render_html(name, metrics, recipe_doc), sft.render_card(name, metrics, recipe_doc)
    else:
        audit = load_audit(path, metrics)
        page, model_card = html.render(name, metrics, recipe_doc, audit), card.render(name, metrics, recipe_doc, audit)
    write_text_atomic(out_html, page)  # written beside and renamed: never half a page under the final name
    write_text_atomic(out_card, model_card)
    return out_html, out_card
