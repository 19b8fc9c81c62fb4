"""What to merge: a MergeSpec, built from CLI flags or from a mergekit-style YAML file.

Supported mergekit subset: merge_method (linear, slerp, task_arithmetic, ties), base_model,
models[].model + parameters.weight/density, global parameters t / lambda / normalize / weight /
density, dtype. Per-layer gradients, filters and slices are refused with a clear message.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.config import validation_message
from tunesmith.config import read_yaml_mapping
from tunesmith.errors import TunesmithError

Method = Literal["linear", "slerp", "task_arithmetic", "ties"]
TIES_DENSITY = 0.5  # CLI default: keep the top half of each task vector (mergekit's YAML default is 1.0)


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    weight: float = 1.0
    density: float = Field(1.0, gt=0, le=1)


class MergeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Method
    base: str
    models: list[Source] = Field(min_length=1)
    base_weight: float = 0.0      # linear only: the base's share of the average
    t: float = 0.5                # slerp
    lam: float = 1.0              # task_arithmetic / ties: scale of the merged task vector
    normalize: bool | None = None  # None: the method's mergekit default
    dtype: str = "float32"

    def check(self, where: str) -> "MergeSpec":
        if self.method == "slerp" and len(self.models) != 1:
            raise TunesmithError(f"{where}: slerp merges the base with exactly one tuned model "
                                 f"(got {len(self.models)}); use linear, task_arithmetic or ties for several")
        return self


def from_flags(method: str, base: str, tuned: list[str], weight: float = 0.5, density: float | None = None) -> MergeSpec:
    from tunesmith.merge.registry import METHODS

    if method not in METHODS:
        raise TunesmithError(f"--method {method}: unknown; use one of {', '.join(METHODS)}")
    if not tuned:
        raise TunesmithError("merge needs at least one --tuned run folder")
    d = density if density is not None else (TIES_DENSITY if method == "ties" else 1.0)
    try:
        spec = MergeSpec(method=method, base=base, models=[Source(model=t, density=d) for t in tuned])
    except ValidationError as e:
        raise TunesmithError(validation_message(e, "merge settings")) from None
    return METHODS[method].with_weight(spec.check("merge"), weight)


def _scalar(v, where: str, name: str):
    if isinstance(v, (list, dict)):
        raise TunesmithError(f"{where}: parameter '{name}' is a per-layer gradient or filter; tunesmith "
                             f"supports only a single number per parameter")
    return v


def from_yaml(path) -> MergeSpec:
    """Read a mergekit config. The base model may also appear in `models` (as linear configs do)."""
    path = Path(path)
    doc = read_yaml_mapping(path, "merge config", "a mapping with merge_method, base_model, models")
    if "slices" in doc:
        raise TunesmithError(f"{path}: 'slices' (layer-range merges) are not supported; list whole models under 'models'")
    unknown = set(doc) - {"merge_method", "base_model", "models", "parameters", "dtype", "tokenizer_source", "name"}
    if unknown:
        raise TunesmithError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    method = doc.get("merge_method")
    from tunesmith.merge.registry import METHODS

    if method not in METHODS:
        raise TunesmithError(f"{path}: merge_method '{method}' is not supported; use one of {', '.join(METHODS)}")
    glob = {k: _scalar(v, str(path), k) for k, v in (doc.get("parameters") or {}).items()}
    models = doc.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, dict) and "model" in m for m in models):
        raise TunesmithError(f"{path}: 'models' must be a list of {{model: PATH, parameters: {{...}}}}")
    base = doc.get("base_model")
    base_weight, sources = 0.0, []
    for m in models:
        p = {k: _scalar(v, str(path), k) for k, v in (m.get("parameters") or {}).items()}
        w = float(p.get("weight", glob.get("weight", 1.0)))
        if base is not None and str(m["model"]) == str(base):
            base_weight = w  # linear lists the base among the models
            continue
        sources.append(dict(model=str(m["model"]), weight=w, density=float(p.get("density", glob.get("density", 1.0)))))
    if base is None:
        if method != "linear" or len(sources) < 2:
            raise TunesmithError(f"{path}: base_model is required for {method}")
        base, base_weight = sources[0]["model"], sources[0]["weight"]  # a plain soup: any member anchors it
        sources = sources[1:]
    try:
        spec = MergeSpec(method=method, base=str(base), models=sources, base_weight=base_weight,
                         t=float(glob.get("t", 0.5)), lam=float(glob.get("lambda", 1.0)),
                         normalize=glob.get("normalize"), dtype=str(doc.get("dtype", "float32")))
    except ValidationError as e:
        raise TunesmithError(validation_message(e, str(path))) from None
    return spec.check(str(path))
