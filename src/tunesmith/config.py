"""The recipe: every setting of a run, validated at the edge, written out fully resolved."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tunesmith.errors import TunesmithError


def cache_root() -> Path:
    """Where converted models, embeddings and frozen-layer features are kept: $TUNESMITH_CACHE."""
    return Path(os.environ.get("TUNESMITH_CACHE") or Path.home() / ".cache" / "tunesmith")

STRATEGY_RE = re.compile(r"^(full|head|lora|qlora|freeze:\d+)$")

# The sections of a recipe, in the order `tunesmith train --help` shows them (one panel each). recipe.yaml
# stays one flat mapping: a section is documentation and grouping, never a level of the file.
SECTIONS = {
    "data": "Data",
    "model": "Model",
    "training": "Training",
    "lora": "LoRA (--strategy lora)",
    "sft": "Instruction tuning (--task sft)",
    "seq2seq": "Sequence to sequence (--task seq2seq)",
    "output": "Output and checks",
}


def setting(default: Any, section: str, help: str, *, path: bool = False, **constraints: Any) -> Any:
    """A Recipe field with its section and help text: the one list the `train` flags are built from
    (cli.recipe_options). `path`: a file or folder (the command line reads it as a path, the recipe keeps a str).
    `constraints`: pydantic's (ge, lt, ...)."""
    if section not in SECTIONS:
        raise ValueError(f"unknown recipe section {section!r}")
    extra: dict[str, Any] = {"section": section}
    if path:
        extra["path"] = True
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def section_of(name: str) -> str:
    return Recipe.model_fields[name].json_schema_extra["section"]


def is_path(name: str) -> bool:
    return bool(Recipe.model_fields[name].json_schema_extra.get("path"))


class Recipe(BaseModel):
    """Every setting of a run. Each field is a `setting`: its section and help text are the `train` flag's."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # data
    train: str = setting(..., "data", "training data: CSV, TSV, JSONL or Parquet", path=True)
    test: str | None = setting(None, "data", "test data; without it a stratified split is held out", path=True)
    text_column: str | None = setting(None, "data", "column holding the text (default: detected)")
    label_column: str | None = setting(None, "data", "column holding the label, or labels (default: detected)")
    task: str = setting("auto", "data", "auto (detected from the columns), or a name in tunesmith.tasks.REGISTRY")
    val_fraction: float = setting(0.1, "data", "share of train held out for validation; 0 = none", ge=0.0, lt=0.9)
    test_fraction: float = setting(0.2, "data", "share held out as test data when there is no --test",
                                   gt=0.0, lt=0.9)
    slice_column: str | None = setting(None, "data", "test column to report metrics per slice")
    retention_data: str | None = setting(None, "data", "sentence pairs with scores (STS-B style)", path=True)
    # model
    model: str = setting("minilm", "model", "built-in name (minilm, mpnet, smollm2), local folder or hub id")
    max_length: int | None = setting(None, "model", "tokens per text (default min(model limit, 128))", ge=8)
    stride: int | None = setting(None, "model", "--task token: sub-tokens shared by the overlapping windows "
                                 "over texts longer than --max-length (default a quarter of it)", ge=0)
    # training
    strategy: str = setting("full", "training",
                            "full | head | freeze:K | lora | qlora (LoRA on a 4-bit base; CUDA, --task sft)")
    epochs: int = setting(5, "training", "most passes over the training data (early stopping may end sooner)",
                          ge=1)
    lr: float | None = setting(None, "training", "peak learning rate (default: sized to the data)", gt=0)
    batch_size: int = setting(32, "training", "examples per batch", ge=1)
    grad_accum: int = setting(1, "training", "batches per optimizer step (gradient accumulation)", ge=1)
    warmup_ratio: float = setting(0.1, "training", "share of the steps that warm the learning rate up", ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant"] = setting("linear", "training", "linear | cosine | constant")
    weight_decay: float = setting(0.01, "training", "weight decay", ge=0)
    grad_clip: float = setting(1.0, "training", "clip the gradient norm to this; 0 = off", ge=0)
    label_smoothing: float = setting(0.0, "training", "label smoothing of the classification loss", ge=0, lt=1)
    patience: int = setting(2, "training", "early stopping patience in epochs; 0 = off", ge=0)
    metric: str = setting("macro_f1", "training", "validation metric for early stopping: macro_f1, accuracy, "
                          "... or loss")
    seed: int = setting(42, "training", "random seed of the splits, the initial weights and the batch order")
    bf16: Literal["auto", "on", "off"] = setting("auto", "training", "auto | on | off")
    head_init: Literal["probe", "random"] = setting("probe", "model", "probe (LP-FT: the classifier starts as a "
                                                    "linear probe) | random")
    contrastive: Literal["auto", "on", "off"] = setting("auto", "training", "train the body on label pairs "
                                                        "before the probe start (SetFit's stage): auto (on for "
                                                        "single-label data with at most 20 rows in the median "
                                                        "class, --strategy full) | on | off")
    pooling: Literal["auto", "native"] = setting("auto", "model", "auto (the checkpoint's declared pooling) | "
                                                 "native (the architecture's own classifier input)")
    lora_r: int = setting(8, "lora", "LoRA rank", ge=1)
    lora_alpha: int = setting(16, "lora", "LoRA alpha (the update is scaled by alpha / r)", ge=1)
    lora_dropout: float = setting(0.1, "lora", "dropout on the LoRA input", ge=0, lt=1)
    lora_target_modules: list[str] | None = setting(None, "lora", "module name to adapt (repeat the flag for "
                                                    "several; default: peft's list for the model type)")
    # instruction tuning (task sft)
    prompt_column: str | None = setting(None, "sft", "column holding the prompt")
    response_column: str | None = setting(None, "sft", "column holding the response")
    train_on_prompt: bool = setting(False, "sft", "put loss on prompt tokens too (default: response tokens only)")
    overflow: Literal["drop", "truncate"] = setting("drop", "sft", "rows over --max-length: drop | truncate "
                                                    "(prompt side)")
    packing: bool = setting(False, "sft", "pack short examples into full rows")
    gradient_checkpointing: bool = setting(False, "training", "trade compute for memory")
    shard: Literal["off", "full", "grad-op"] = setting("off", "training", "with --nproc: FSDP2 shards weights, "
                                                      "gradients and optimizer state over the processes (full) or "
                                                      "gradients and optimizer state only (grad-op); off = DDP")
    hard_negatives: int = setting(0, "training", "--task embedding, pairs: mine this many hard negatives per anchor "
                                  "with the untouched model before training; 0 = off", ge=0)
    mini_batch: int = setting(0, "training", "--task embedding: embed each batch this many texts at a time "
                              "(GradCache: the same gradient in less memory, one more forward); 0 = off", ge=0)
    max_new_tokens: int = setting(128, "sft", "generation limit in evaluation", ge=1)
    eval_generations: int = setting(16, "sft", "held-out prompts generated before/after", ge=0)
    few_shot_k: int = setting(3, "sft", "examples in the retrieval few-shot baseline; 0 = off", ge=0)
    # sequence to sequence (task seq2seq): beam search as evaluation, `generate` and serve decode
    num_beams: int = setting(4, "seq2seq", "beams of the beam search (1 = greedy)", ge=1)
    length_penalty: float = setting(1.0, "seq2seq", "beam score divided by length**this: >1 favours longer "
                                    "outputs, <1 shorter")
    prompt_template: str | None = setting(None, "seq2seq", "decoder-only models: the user turn each source becomes, "
                                          "{source} where it goes (default \"{source}\"), framed by the chat "
                                          "template as --task sft frames prompts")
    # output
    out: str | None = setting(None, "output", "run folder (default runs/<time>-<name>)", path=True)
    audit: bool = setting(True, "output", "audit the data before training")
    strict: bool = setting(False, "output", "refuse to train while the audit finds errors")
    baselines: bool = setting(True, "output", "measure the baselines too")
    keep_checkpoints: bool = setting(False, "output", "keep checkpoint/last.pt and best.pt after success")
    track: Literal["none", "mlflow"] = setting("none", "output", "log the finished run to an experiment tracker: "
                                               "none | mlflow (MLFLOW_TRACKING_URI, default sqlite:///<runs folder>"
                                               "/mlflow.db)")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v):
        if not STRATEGY_RE.match(v):
            raise ValueError("must be full, head, lora, qlora or freeze:K (K = number of bottom layers to freeze)")
        return v


def validation_message(e: ValidationError, where: str) -> str:
    errs = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "recipe"
        errs.append(f"{loc}: {err['msg']}")
    return f"{where}: " + "; ".join(errs)


def make_recipe(**kwargs) -> Recipe:
    try:
        return Recipe(**{k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as e:
        raise TunesmithError(validation_message(e, "invalid settings")) from None


def read_yaml_mapping(path, what: str, expected: str) -> dict:
    """A YAML file that must hold a mapping; each failure is one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise TunesmithError(f"{path}: {what} not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise TunesmithError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise TunesmithError(f"{path}: expected {expected}")
    return doc


def read_recipe_file(path) -> dict:
    """The YAML mapping of a recipe file (its `recipe:` section, and others such as `tune:`)."""
    return read_yaml_mapping(path, "recipe file", "a mapping of settings")


def load_recipe(path, **overrides) -> Recipe:
    doc = read_recipe_file(path)
    doc = dict(doc.get("recipe", doc))
    doc.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Recipe(**doc)
    except ValidationError as e:
        raise TunesmithError(validation_message(e, str(path))) from None
