"""Export a run for deployment. A format is one module with export(run, out) -> {"files", "predict"},
where predict(texts) -> probabilities; every export is checked against PyTorch before it is kept."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.export import hf, onnx, parity
from tunesmith.run import (artifact, inference_settings, open_run, remove_stale_tmp, replace_dir, tmp_name,
                           write_json)
from tunesmith.tasks import get_task_class

FORMATS = {"hf": hf, "onnx": onnx}
QUANTIZE = {"int8"}


def export_run(run_path, format: str = "onnx", *, quantize: str | None = None, out=None, overwrite: bool = False,
               n_rows: int = parity.N_ROWS) -> dict:
    run = open_run(run_path)
    if format not in FORMATS:
        raise TunesmithError(f"--format {format}: use one of {', '.join(FORMATS)}")
    if quantize is not None and (quantize not in QUANTIZE or format != "onnx"):
        raise TunesmithError(f"--quantize {quantize}: only int8 with --format onnx is supported")
    task = inference_settings(run)["task"]
    if not get_task_class(task).exportable:
        raise TunesmithError(f"{run.path}: {task} runs are not exported here (no graph with a parity check); "
                             f"their model/ folder is already a Hugging Face model")
    out = Path(out) if out else artifact(run.path, "export") / (format + (f"-{quantize}" if quantize else ""))
    if out.exists() and not out.is_dir():
        raise TunesmithError(f"{out}: is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TunesmithError(f"{out}: already exists; pass --overwrite or choose another --out")
        if out.is_symlink() or not (out / parity.MANIFEST).exists():
            raise TunesmithError(f"{out}: exists and is not a tunesmith export; refusing to delete it")
        try:
            own = set(json.loads((out / parity.MANIFEST).read_text()).get("files") or []) | {parity.MANIFEST}
        except (OSError, ValueError, AttributeError):
            own = {parity.MANIFEST}
        foreign = sorted(p.name for p in out.iterdir() if p.name not in own)
        if foreign:  # --overwrite replaces the export's own files, never what the user put beside them
            raise TunesmithError(f"{out}: holds {', '.join(foreign[:3])}, which the export did not write; "
                                 f"refusing to delete it: move it away or choose another --out")
    # Built in a temporary folder and renamed into place when it passed: a killed or failed export never
    # leaves a partial model.onnx under the final name, and its leftovers (tunesmith's temporary names
    # only) are cleared by the next export.
    remove_stale_tmp(out.parent, out.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)
    tmp.mkdir()
    try:
        ref = parity.Reference(run)
        exported = FORMATS[format].export(run, tmp, ref, quantize=quantize)
        check = parity.check(ref, exported["predict"], parity.TOLERANCE[quantize or "fp32"], n_rows)
        manifest = {"format": format, "quantize": quantize, "run": str(run.path), "files": exported["files"],
                    "labels": ref.task.labels, "task": ref.task.name, "temperature": ref.temperature,
                    "max_length": ref.max_length, "parity": check}
        write_json(tmp / parity.MANIFEST, manifest)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"path": str(out), **manifest}
