"""The task contract: what a task supplies so that the pipeline, the loop and the Predictor never
branch on task names.

A task is a package under tasks/ with a class deriving from `Task`, registered by one line in
tasks/__init__.py. The shared code calls only these hooks:

- the pipeline (pipeline.py), in its order: `detect`, `recipe_defaults`, `prepare`, `from_data`, `audit`,
  `resolve`, `load_model`, `encode`, `baselines`, `before_fit`, `apply_strategy`, `steps` (via `fit`),
  `finalize_model`, `measure`, `inference_settings`; the CLI's `summary`;
- the loop (train/loop.py): the object `steps` returns (see `Steps`);
- the Predictor (predictor.py), serve and export: `from_run`, `load_inference_model`, `options`,
  `read_inputs`, `read_labelled`, `encode_inputs`, `outputs`, `records`, `columns`, `score`, `info`
  (tasks/*/inference.py hold them as a mixin), and serve's schema: `serve_route`, `serve_request`,
  `serve_response`, `serve_inputs`, `serve_body` (serve/app.py builds the task's route from them) and
  `serve_routes` (any routes the task adds, e.g. a search over a corpus given at start-up);
- the report: `report`.

Why a class with defaults rather than a Protocol: most hooks of a new task are the defaults (no
baselines, nothing before fit, the shared strategies), so a first version is small.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tunesmith.errors import TunesmithError

BASELINES = "baselines.json"  # in checkpoint/: what the untouched model scored, read back on --resume


@dataclass
class Prepared:
    """A task's data after reading and splitting: train/validation/test rows (task-defined objects),
    and what the pipeline records (columns, labels, a format name, lines to tell the user)."""
    train: Any
    validation: Any
    test: Any
    labels: list[str] = field(default_factory=list)
    task: str = ""                                # the registry name the data decided (auto: single/multilabel)
    columns: dict = field(default_factory=dict)   # recipe fields decided from the data (text_column, ...)
    info: dict = field(default_factory=dict)      # recorded in provenance and metrics (format, skipped rows)
    loaded: Any = None                            # whatever the audit needs (classification: data.Loaded)


class Steps:
    """What the training loop (train/loop.py) needs from a task. Units are what a batch is made of (rows,
    or packed rows of examples); `lengths` are their token counts, for length-grouped batches.

    The loop adds each batch's `sums` (a float64 tensor ON THE DEVICE, `sums` long) without a host sync
    and reads them once per epoch, at its end or at an interrupt."""

    lengths: list[int]
    val: Any = None          # validation data (len() > 0: validate after each epoch)
    sums: int = 1            # length of the device sums `loss` returns
    masters: bool = True     # CPU engine: bf16 compute copies over fp32 master weights may apply
    lazy_rows: bool = False  # CPU engine: sparse updates of the input embedding's rows
    autocast: bool = True    # bf16 autocast around the forward (when the run is bf16)
    probe_memory: bool = True  # train/memory.py may run batch() and loss() on the longest unit before the
                               # first step (after start()); False: the loss needs the epoch's context

    def module(self, model):
        """What the training forward calls; DDP wraps it under --nproc. Default: the model."""
        return model

    def start(self, model, distributed: bool) -> None:
        """Once, after the model is on its device (and DDP is known), before the optimizer is made."""

    def epoch_start(self, net):
        """Before each epoch: puts `net` in train mode; returns a context the epoch's batches run in."""
        import contextlib

        net.train()
        return contextlib.nullcontext()

    def batches(self, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
        """The epoch's global batches of unit indices: a pure function of (seed, epoch), for exact resume.
        Default: length-grouped (data.batching.epoch_batches); a task may constrain what shares a batch."""
        from tunesmith.data.batching import epoch_batches

        return epoch_batches(self.lengths, batch_size, seed, epoch)

    def chooses(self, on_event) -> bool:
        """Whether validation chooses the epoch kept (early stopping, best restored)."""
        return self.val is not None and len(self.val) > 0

    def batch(self, share: list[int], device) -> dict:  # pragma: no cover - contract
        """This process's share of a global batch (unit indices), on the device."""
        raise NotImplementedError

    def weight(self, mine: list[int], idx: list[int]) -> float:
        """This process's share of the global batch's loss (rows: len(mine)/len(idx); SFT: its target tokens')."""
        return len(mine) / len(idx)

    def loss(self, net, batch: dict):  # pragma: no cover - contract
        """(mean loss over the share's items, to backpropagate; sums tensor on the device)."""
        raise NotImplementedError

    def host_counts(self, mine: list[int]) -> tuple[int, int]:
        """(examples, tokens) of this process's share, counted on the host."""
        return len(mine), 0

    def epoch_record(self, sums: list[float], seen: int, tokens: int, seconds: float) -> dict:  # pragma: no cover
        """The epoch's history record (train_loss, epoch_seconds, train_samples_per_second, ...)."""
        raise NotImplementedError

    def validate(self, model) -> tuple[dict, float, bool]:  # pragma: no cover - contract
        """(record fields, the score early stopping reads, whether higher is better)."""
        raise NotImplementedError


def input_column(frame, path, text_column: str | None, candidates) -> str:
    """The column of `frame` (read from `path`) holding the inputs to predict on: --text-column, else the first
    of `candidates` in any case; one line naming the file and its columns when there is none."""
    low = {str(c).lower(): c for c in frame.columns}
    col = text_column if text_column in frame.columns else next((low[c] for c in candidates if c in low), None)
    if col is None:
        raise TunesmithError(f"{path}: no column {text_column or ' or '.join(candidates)} with the texts; "
                             f"columns are {', '.join(map(str, frame.columns))} (--text-column names it)")
    return col


def texts_request(name: str, limits, example: list[str]):
    """The request of a server that takes one list of `texts` (classifiers, taggers, encoders): a pydantic
    model called `name` (the OpenAPI schema's name), sized by serve's limits, with an example body."""
    from typing import Annotated

    from pydantic import ConfigDict, Field, StrictStr, create_model

    texts = Annotated[list[StrictStr], Field(min_length=1, max_length=limits.max_texts)]
    return create_model(name, __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": example}]}),
                        texts=(texts, ...))


@dataclass
class ServeRoute:
    """A route a task adds to serve beside `serve_route` (POST `path`): `inputs(req, limits, settings)` → (the
    texts its answer needs, their forward's options), run through the server's micro-batcher like the main
    route's; `body(req, records)` → the answer's task fields. `request`/`response`: pydantic classes."""
    path: str
    request: Any
    response: Any
    inputs: Any
    body: Any


class Task:
    name: ClassVar[str]
    peft_task_type: ClassVar[str]          # peft.TaskType member name (SEQ_CLS, CAUSAL_LM, TOKEN_CLS, ...)
    main_metric: ClassVar[str] = "loss"
    recipe_defaults: ClassVar[dict] = {}   # settings the user did not give (decoders: lora, batch 8, ...)
    exportable: ClassVar[bool] = False     # ONNX export with a parity check
    loads_4bit: ClassVar[bool] = False     # load_model honours --strategy qlora (models/quantize.load_kwargs)
    graph_output: ClassVar[str] = "logits"  # export: the forward output the ONNX graph gives (and `outputs` reads)
                                           # (graph_module may compute it: an encoder's pooled vector)
    mergeable: ClassVar[bool] = False      # tunesmith merge: weight-space merges scored on labelled data
    tunable: ClassVar[bool] = False        # tunesmith tune: trials compared on validation data
    row_audit: ClassVar[bool] = True       # `tunesmith audit` runs audit/'s checks over text and label rows;
                                           # False: the task's own `audit` (as train runs it) is the command's
    summary_columns: ClassVar[tuple] = ("loss",)  # test metrics the CLI's table shows (summary() None)
    default_max_length: ClassVar[int] = 128  # tokens, or the model's limit when lower
    detect_priority: ClassVar[int] = 50      # --task auto asks tasks in this order (lowest first)
    serve_route: ClassVar[str] = "/predict"
    kind: ClassVar[str] = "model"          # what it outputs, in a word /info shows ("classifier", "generator");
                                           # `tunesmith generate`/`chat` need a "generator"
    public_settings: ClassVar[tuple] = ()  # inference settings /info shows (classifiers: the temperature)
    public_metrics: ClassVar[tuple] = ("test",)

    def __init__(self, labels: list[str] | None = None):
        self.labels = list(labels or [])
        self.index = {l: i for i, l in enumerate(self.labels)}

    # ---- choosing the task -------------------------------------------------------------------------------------
    @classmethod
    def detect(cls, recipe) -> str | None:
        """With --task auto: a sentence saying why this task fits recipe.train's columns, or None."""
        return None

    # ---- data ------------------------------------------------------------------------------------------------
    @classmethod
    def prepare(cls, recipe, on_event, with_test: bool = True) -> Prepared:  # pragma: no cover - contract
        raise NotImplementedError

    @classmethod
    def texts(cls, split) -> list[str]:
        """The raw texts of a prepared split (tune sizes its --max-length choices by their token lengths)."""
        return list(split.texts)

    @classmethod
    def tune_recipe(cls, recipe):
        """tune's base recipe, before any data are prepared: the metric trials are compared on must be known
        (embedding's --metric auto depends on the data's form). Default: unchanged."""
        return recipe

    @classmethod
    def from_data(cls, data: Prepared) -> "Task":
        return cls(data.labels)

    # ---- pipeline hooks with defaults ------------------------------------------------------------------------
    def audit(self, recipe, data: Prepared, on_event):
        """An audit report (audit.runner.AuditReport) or None when the task has no checks yet."""
        return None

    def resolve(self, recipe, data: Prepared):
        """The recipe with settings sized to the data, checked before the model loads."""
        return recipe

    def describe(self) -> str:
        return ""

    def baselines(self, model, tok, enc, data: Prepared, recipe, device, bf16, on_event) -> dict:
        """What the untouched model scores (JSON-able; kept in checkpoint/baselines.json for resume)."""
        return {}

    def read_baselines(self, ckpt_dir) -> dict | None:
        """The baselines an interrupted run measured (checkpoint/baselines.json), or None when it has none.
        JSON only, so reading it back runs no code; a file of the wrong shape is one line naming it."""
        import json
        from pathlib import Path

        f = Path(ckpt_dir) / BASELINES
        if not f.exists():
            return None
        try:
            doc = json.loads(f.read_text())
            self.check_baselines(doc)
            return doc
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise TunesmithError(f"{f}: unreadable ({type(e).__name__}); delete it and resume again to measure the "
                                 f"baselines anew") from None

    def check_baselines(self, doc) -> None:
        """Raises KeyError/TypeError when `doc` is not what `baselines` writes."""
        if not isinstance(doc, dict):
            raise TypeError("not a mapping")

    def before_fit(self, model, tok, enc, recipe, device, bf16, on_event, memo=None, model_path=None) -> None:
        """Anything done to the model before training (not repeated on resume)."""

    def apply_strategy(self, model, recipe):
        """--strategy: the shared ones (train/strategies: full, head, freeze:K, lora with this task's PEFT type)."""
        from tunesmith.train import strategies

        return strategies.apply(model, recipe.strategy, recipe, self.peft_task_type)

    def steps(self, model, tok, enc, recipe, device, bf16) -> Steps:  # pragma: no cover - contract
        raise NotImplementedError

    def fit(self, model, tok, enc, recipe, *, device, bf16, ckpt_dir, resume, on_event, stop):
        """The shared loop (train/loop.py) over this task's steps."""
        from tunesmith.train.loop import fit

        return fit(model, self.steps(model, tok, enc, recipe, device, bf16), recipe, device=device, bf16=bf16,
                   ckpt_dir=ckpt_dir, resume=resume, on_event=on_event, stop=stop)

    def finalize_model(self, merged):
        return merged

    def inference_settings(self, metrics: dict, recipe) -> dict:
        """Extra values written to model/tunesmith.json for the Predictor (e.g. the temperature)."""
        return {}

    def summary(self, metrics: dict) -> str | None:
        """What `tunesmith train` prints at the end; None: the generic table of test metrics."""
        return None

    def report(self, name: str, metrics: dict, recipe_doc: dict, audit) -> tuple[str, str]:
        """(report.html, MODEL_CARD.md) of a finished run, drawn with report/'s primitives."""
        raise TunesmithError(f"{name}: task {self.name} has no report yet")

    # ---- inference (the Predictor) ------------------------------------------------------------------------------
    def graph_module(self, model):
        """export: the module traced into the ONNX graph, forward(input_ids, attention_mask) → its one output,
        named `graph_output`. None: the model's own output of that name."""
        return None

    @classmethod
    def from_run(cls, run, model_config) -> "Task":
        return cls([model_config.id2label[i] for i in range(model_config.num_labels)])

    def records(self, outputs, temperature: float = 1.0) -> list[dict]:  # pragma: no cover - contract
        raise NotImplementedError

    def info(self) -> dict:
        return {"task": self.name, **({"labels": self.labels} if self.labels else {})}

    # ---- serving (serve/app.py builds one route, POST `serve_route`, from these; it never asks the task's name) ----
    @classmethod
    def serve_request(cls, limits):
        """The pydantic model of a request body (a class: its name is the OpenAPI schema's), with its JSON
        examples. `limits`: serve's Limits (max_texts, max_chars, max_new_tokens, ...) to size its fields."""
        raise TunesmithError(f"task {cls.name} has no serve schema yet")

    @classmethod
    def serve_response(cls):
        """The pydantic model of a 200 answer: the fields `serve_body` gives, and `model` (str), `seconds` (float)."""
        raise TunesmithError(f"task {cls.name} has no serve schema yet")

    def serve_inputs(self, req, limits, settings: dict) -> tuple[list[str], dict]:
        """(the request's texts, in answer order; the options of their forward: Predictor.records(texts,
        **options)). `settings`: the run's inference settings, for the defaults a request leaves out. Serve
        cuts each text to limits.max_chars and flags it `truncated`. Default: a request with `texts`."""
        return list(req.texts), {}

    def serve_body(self, records: list[dict]) -> dict:
        """The answer's task fields: the records of the request's texts (each with `truncated`), in order."""
        return {"predictions": records}

    def serve_routes(self, predictor, limits, options: dict) -> list[ServeRoute]:
        """Routes besides `serve_route`, made once at start-up (a search index, ...). `options`: what
        `tunesmith serve` was given for the task (e.g. corpus); a task that takes none refuses any."""
        if options:
            raise TunesmithError(f"serve: a {self.name} run takes no {', '.join('--' + k for k in options)}")
        return []


def say(on_event, msg: str) -> None:
    """A line for the user (the CLI prints "info" events dimmed)."""
    on_event("info", message=msg)


def unknown(name: str, names) -> TunesmithError:
    return TunesmithError(f"unknown task '{name}'; --task takes auto or one of: {', '.join(names)}")
