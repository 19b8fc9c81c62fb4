"""Command line: a thin typer layer over tunesmith.api. Errors print one line and exit non-zero."""
from __future__ import annotations

import errno
import inspect
import os
import sys
import types
import typing
import warnings
from functools import update_wrapper
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tunesmith.config import SECTIONS, Recipe, is_path, section_of
from tunesmith.errors import TunesmithError

# Deprecation notices from inside transformers/peft (e.g. `is_gradient_checkpointing` called by peft) say
# nothing a tunesmith user of the command line can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)(\.|$)")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn a pretrained transformer and your own data into a measured specialist model.")
console = Console(stderr=True)
out_console = Console()


class ProgressReporter:
    """Renders training events from the loop as a rich progress bar with loss, metric and time left."""

    def __init__(self):
        self.progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[metric]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.task_id = None
        self.metric = ""

    def __call__(self, kind, **kw):
        if kind == "info":
            console.print(f"[dim]{kw['message']}[/dim]")
        elif kind == "resumed":
            console.print(f"resuming at epoch {kw['epoch'] + 1}, batch {kw['batch']}")
        elif kind == "epoch_start":
            if self.task_id is None:
                self.progress.start()
            else:
                self.progress.remove_task(self.task_id)
            self.task_id = self.progress.add_task("train", total=kw["batches"], completed=kw["done"],
                                                  epoch=kw["epoch"] + 1, loss=0.0, metric=self.metric)
        elif kind == "step":  # loss only every few steps (train/loop.py LOG_EVERY): the last one shows between
            loss = {} if kw.get("loss") is None else {"loss": kw["loss"]}
            self.progress.update(self.task_id, completed=kw["batch"], **loss)
        elif kind == "epoch_end":
            val = {k: v for k, v in kw.items() if k.startswith("val_") and k != "val_loss"}
            self.metric = "  ".join(f"{k[4:]} {v:.4f}" for k, v in list(val.items())[:2])
            self.progress.update(self.task_id, metric=self.metric)
            line = f"epoch {kw['epoch']}: train loss {kw['train_loss']:.4f}"
            if "val_loss" in kw:
                line += f", val loss {kw['val_loss']:.4f}, {self.metric}"
            self.progress.console.print(line + f"  ({kw['train_samples_per_second']:.0f} samples/s)")
        elif kind == "done":
            self.close()

    def close(self):
        if self.task_id is not None:
            self.progress.stop()
            self.task_id = None


ENGINE_HELP = "auto (CPU speed-ups on CPU) | plain (textbook torch everywhere); sets TUNESMITH_ENGINE"


def use_engine(engine: Optional[str]) -> None:
    """--engine: through the environment, so --nproc and tune's worker processes run the same engine."""
    if engine is not None:
        from tunesmith.accel import ENV, engine_name

        os.environ[ENV] = engine_name(engine)


def metrics_table(title: str, rows: dict[str, dict], cols=("accuracy", "macro_f1")) -> Table:
    t = Table(title=title)
    t.add_column("model")
    for c in cols:
        t.add_column(c, justify="right")
    for name, m in rows.items():
        t.add_row(name, *[f"{m[c]:.4f}" if isinstance(m.get(c), (int, float)) else "-" for c in cols])
    return t


def _task_help() -> str:
    from tunesmith.tasks import REGISTRY  # the names only: a task's module loads when the task is used

    return " | ".join(["auto", *REGISTRY])


# Help texts that cannot live in the Recipe: they are computed when the command is built.
DYNAMIC_HELP = {"task": _task_help}


def _flag_type(name: str, annotation) -> type:
    """The command-line type of a Recipe field: Optional and Literal taken off (a Literal stays text, so a bad
    value gets the recipe's one-line error naming the field), and Path for a file or folder."""
    if is_path(name):
        return Path
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"Recipe.{name}: no command-line type for {annotation}")
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0])
    return annotation


def recipe_options(skip: tuple[str, ...] = ()):
    """Decorator: one option per Recipe field but `skip`, from the Recipe's own list (config.setting: the
    section is the --help panel, the description the help). Each is Optional with default None, so a flag not
    given leaves a --config file's value alone; a bool field is a --x/--no-x switch; a path field is read as a
    Path. The command gets the flags given as one dict, its keyword `settings` (paths as str), for api.train."""
    order = list(SECTIONS)
    names = sorted((n for n in Recipe.model_fields if n not in skip), key=lambda n: order.index(section_of(n)))

    def decorate(fn):
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name != "settings"]
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{fn.__name__}: {sorted(clash)} are Recipe fields, which recipe_options adds")
        flags = []
        for name in names:
            field = Recipe.model_fields[name]
            help_ = DYNAMIC_HELP[name]() if name in DYNAMIC_HELP else field.description
            flags.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                           annotation=Optional[_flag_type(name, field.annotation)],
                                           default=typer.Option(None, help=help_,
                                                                rich_help_panel=SECTIONS[section_of(name)])))

        def command(**kwargs):
            given = {n: kwargs.pop(n) for n in names}
            settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in given.items() if v is not None}
            return fn(**kwargs, settings=settings)

        update_wrapper(command, fn)  # name and docstring: typer's command name and help
        del command.__wrapped__
        command.__signature__ = inspect.Signature(own + flags)  # what typer reads
        command.__annotations__ = {p.name: p.annotation for p in own + flags}
        return command

    return decorate


@app.command()
@recipe_options(skip=("train",))
def train(
    data: Optional[Path] = typer.Argument(None, help=Recipe.model_fields["train"].description),
    overwrite: bool = typer.Option(False, help="replace an existing run folder (only the files a run wrote)"),
    resume: bool = typer.Option(False, help="continue an interrupted run in --out"),
    config: Optional[Path] = typer.Option(None, help="recipe.yaml to re-run (flags override it)"),
    nproc: int = typer.Option(1, min=1, help="data-parallel processes (DDP: one per GPU, or gloo on CPU); "
                                              "per machine with --nnodes"),
    nnodes: int = typer.Option(1, min=1, help="machines: run the same command on each, with its --node-rank"),
    node_rank: int = typer.Option(0, min=0, help="this machine's number, 0 to --nnodes - 1 (0 writes the run)"),
    master_addr: Optional[str] = typer.Option(None, help="--nnodes: the address of machine 0, the same on all"),
    master_port: Optional[int] = typer.Option(None, help="--nnodes: a free port on machine 0, the same on all"),
    engine: Optional[str] = typer.Option(None, help=ENGINE_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (tunesmith plan) and stop"),
    *,
    settings: dict,
):
    """Fine-tune a model on labelled texts and measure it."""
    use_engine(engine)
    if dry_run:
        raise typer.Exit(_plan(data, config, settings, timed=True, nproc=nproc * nnodes))
    if (nproc > 1 or nnodes > 1) and "WORLD_SIZE" not in os.environ:
        from tunesmith.train.distributed import launch

        # the same command, once per process
        raise typer.Exit(launch(nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                                master_port=master_port))
    from tunesmith import api

    reporter = ProgressReporter()
    try:
        run = api.train(str(data) if data else None, config=str(config) if config else None, resume=resume,
                        overwrite=overwrite, on_event=reporter, **settings)
    finally:
        reporter.close()
    m = run.metrics
    if not m:  # not rank 0 of a --nproc run: rank 0 prints
        return
    from tunesmith.tasks import get_task

    task = get_task(m["task"], m.get("labels", []))
    said = task.summary(m)
    if said is not None:  # a task with its own summary (sft: before/after and samples)
        out_console.print(said, highlight=False, markup=False)
        out_console.print(f"run folder: {run.path}  ({m.get('train_tokens_per_second', 0):.0f} train tokens/s)")
        _print_stage_times(m)
        return
    cols = task.summary_columns
    rows = {name: b for name, b in m.get("baselines", {}).items() if isinstance(b, dict)}
    rows["fine-tuned"] = m.get("test", {})
    out_console.print(metrics_table(f"test metrics ({m.get('test', {}).get('n', '?')} rows)", rows, cols))
    if m.get("verdict"):
        out_console.print(m["verdict"])
    out_console.print(f"run folder: {run.path}  ({m.get('train_samples_per_second', 0):.0f} train samples/s, "
                      f"{m.get('wall_seconds', 0):.0f}s wall)")
    _print_stage_times(m)


def _print_stage_times(m: dict) -> None:
    """Where the run's time went, stage by stage (metrics.json `stage_seconds`), the ones over 0.1 s."""
    from tunesmith.report.html import stages_shown  # loaded already: the run just wrote its report

    spent = stages_shown(m)
    if spent:
        since = " (since the resume)" if m.get("resumed") else ""
        out_console.print(f"time{since}: " + " · ".join(f"{k} {v:.1f}s" for k, v in spent), highlight=False,
                          soft_wrap=True)  # one line, also when piped (rich wraps at 80 columns)


def _plan(data, config, settings, timed: bool, nproc: int = 1) -> int:
    from tunesmith.plan import plan as make_plan
    from tunesmith.plan import table

    with console.status("planning: loading the model, timing a few steps"):
        r = make_plan(str(data) if data else None, config=str(config) if config else None, timed=timed,
                      on_event=lambda kind, **kw: None, nproc=nproc, **settings)
    out_console.print(table(r))
    if not r["fits"]:
        out_console.print("does not fit; " + (f"would fit: {' or '.join(r['advice'])}" if r["advice"] else
                                              "use a smaller model or a machine with more memory"))
        return 1
    return 0


@app.command()
@recipe_options(skip=("train",))
def plan(
    data: Optional[Path] = typer.Argument(None, help=Recipe.model_fields["train"].description),
    config: Optional[Path] = typer.Option(None, help="recipe.yaml (flags override it)"),
    engine: Optional[str] = typer.Option(None, help=ENGINE_HELP),
    time_steps: bool = typer.Option(True, "--time/--no-time", help="time a few real training steps"),
    nproc: int = typer.Option(1, min=1, help="processes train will run (each gets its share of the batch, and "
                                              "with --shard of the model)"),
    *,
    settings: dict,
):
    """What a training run will need, before it starts: parameters, memory by part and its peak against the
    device's, and the time an epoch takes. Takes train's arguments; exit 1 when it does not fit."""
    use_engine(engine)
    raise typer.Exit(_plan(data, config, settings, timed=time_steps, nproc=nproc))


@app.command()
def audit(
    data: Path = typer.Argument(..., help="training data: CSV, TSV, JSONL or Parquet; tagged sentences as JSONL "
                                          "or CoNLL get the token task's checks"),
    test: Optional[Path] = typer.Option(None, help="test data: checked for leakage from train"),
    validation: Optional[Path] = typer.Option(None, help="validation data: checked for leakage into test"),
    model: str = typer.Option("minilm", help="model whose tokenizer and embeddings the audit uses"),
    max_length: Optional[int] = typer.Option(None, help="tokens per text in training (default min(model, 128))"),
    text_column: Optional[str] = typer.Option(None),
    label_column: Optional[str] = typer.Option(None),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the full report as JSON"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML report"),
    fix: Optional[Path] = typer.Option(None, help="write a cleaned copy of the training data here"),
    overwrite: bool = typer.Option(False, help="replace existing --json/--html/--fix files"),
    strict: bool = typer.Option(False, help="exit 1 when a check has severity error (for CI)"),
):
    """Check training data for what would silently ruin a fine-tune, before training."""
    from tunesmith.audit.cli import run_audit_command
    from tunesmith.pipeline import audit_data

    def task_audit():  # tagged sentences get their task's checks; text and label rows audit/'s
        return audit_data(train=str(data), test=str(test) if test else None, model=model, max_length=max_length,
                          text_column=text_column, label_column=label_column)

    code = run_audit_command(data, test=test, validation=validation, model=model, max_length=max_length,
                             text_column=text_column, label_column=label_column, json_out=json_out,
                             html_out=html_out, fix=fix, overwrite=overwrite, strict=strict,
                             console=console, out_console=out_console, task_audit=task_audit)
    raise typer.Exit(code)


@app.command()
def predict(run: Path = typer.Argument(..., help="run folder"),
            data: Path = typer.Argument(..., help="texts to label"),
            out: Optional[Path] = typer.Option(None, help="write predictions here (CSV/TSV/JSONL/Parquet); "
                                                          "missing folders are created"),
            text_column: Optional[str] = typer.Option(None),
            overwrite: bool = typer.Option(False, help="replace an existing --out file"),
            engine: Optional[str] = typer.Option(None, help=ENGINE_HELP)):
    """Label new texts with a trained run."""
    use_engine(engine)
    from tunesmith import api

    new_folder = out is not None and not out.parent.exists()
    frame = api.predict(run, data, out=str(out) if out else None, text_column=text_column, overwrite=overwrite)
    if out:
        out_console.print(f"wrote {len(frame)} predictions to {out}" + (f" (created {out.parent})" if new_folder else ""),
                          highlight=False, soft_wrap=True)
    else:
        frame.to_csv(sys.stdout, index=False)


@app.command()
def evaluate(run: Path = typer.Argument(..., help="run folder"),
             data: Path = typer.Argument(..., help="labelled data"),
             text_column: Optional[str] = typer.Option(None), label_column: Optional[str] = typer.Option(None),
             engine: Optional[str] = typer.Option(None, help=ENGINE_HELP)):
    """Measure a trained run on labelled data."""
    use_engine(engine)
    from tunesmith import api

    m = api.evaluate(run, data, text_column=text_column, label_column=label_column)
    t = Table(title=f"{data} ({m['n']} rows)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in m.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    out_console.print(t)


@app.command()
def report(run: Path = typer.Argument(..., help="run folder")):
    """Write report.html and MODEL_CARD.md into a finished run folder."""
    from tunesmith.pipeline import write_report

    page, card = write_report(run)
    out_console.print(f"wrote {page} and {card}")


@app.command()
def generate(run: Path = typer.Argument(..., help="instruction-tuned run folder"),
             prompt: list[str] = typer.Option(..., help="prompt to answer (repeat for several)"),
             max_new_tokens: Optional[int] = typer.Option(None)):
    """Answer prompts with an instruction-tuned (--task sft) run."""
    g = _generator(run)
    for p in prompt:
        r = g.records([[{"role": "user", "content": p}]], max_new_tokens=max_new_tokens)[0]
        out_console.print(r["text"] if r["stopped"] else r["text"] + " [… token limit]", highlight=False, markup=False)


def _generator(run: Path):
    """The Predictor of an instruction-tuned run (generate, chat)."""
    from tunesmith.predictor import Predictor

    from tunesmith.run import inference_settings, open_run
    from tunesmith.tasks import get_task_class

    folder = open_run(run)
    name = inference_settings(folder)["task"]
    if get_task_class(name).kind != "generator":  # refused before the model loads
        raise TunesmithError(f"{run}: not an instruction-tuning run (task {name}); use `tunesmith predict` "
                             f"for classifiers")
    return Predictor.load(folder)


@app.command()
def chat(run: Path = typer.Argument(..., help="instruction-tuned run folder"),
         max_new_tokens: Optional[int] = typer.Option(None)):
    """Talk to an instruction-tuned run; reads one message per line from stdin, empty line or EOF ends."""
    g, turns = _generator(run), []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            console.print("[bold]you>[/bold] ", end="")
        line = sys.stdin.readline()
        if not line.strip():
            break
        turns.append({"role": "user", "content": line.strip()})
        r = g.records([turns], max_new_tokens=max_new_tokens)[0]
        turns.append({"role": "assistant", "content": r["text"]})
        out_console.print(r["text"], highlight=False, markup=False)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="run folder"),
         overwrite: bool = typer.Option(True, help="replace an earlier demo run")):
    """Fine-tune the built-in model on the shipped example tickets and show before/after."""
    from tunesmith.demo import run_demo

    run_demo(out, overwrite, ProgressReporter(), out_console)


@app.command()
def merge(more: Optional[list[str]] = typer.Argument(None, help="more tuned run folders (after --tuned)"),
          base: Optional[str] = typer.Option(None, help="the model the runs were tuned from (minilm, folder)"),
          tuned: Optional[list[str]] = typer.Option(None, help="tuned run folder (repeat, or list after it)"),
          method: str = typer.Option("linear", help="linear | slerp | task_arithmetic | ties"),
          weight: float = typer.Option(0.5, help="how far from the base: 0 = base, 1 = tuned"),
          sweep: Optional[str] = typer.Option(None, help="START:STOP:STEP weights to evaluate, e.g. 0:1:0.1"),
          density: Optional[float] = typer.Option(None, help="ties: share of each task vector kept (default 0.5)"),
          eval: Optional[Path] = typer.Option(None, "--eval", help="labelled task data to score the merge"),
          retention_data: Optional[Path] = typer.Option(None, help="STS pairs (sentence1, sentence2, score)"),
          config: Optional[Path] = typer.Option(None, help="mergekit-style YAML instead of the flags above"),
          out: Path = typer.Option(..., help="new run folder"),
          overwrite: bool = typer.Option(False, help="replace an existing run folder")):
    """Merge fine-tuned runs with their base (WiSE-FT, SLERP, task arithmetic, TIES)."""
    from tunesmith.merge import run as merge_run
    from tunesmith.merge.spec import from_flags, from_yaml
    from tunesmith.merge.sweep import parse_sweep

    if config:
        spec = from_yaml(config)
    elif not base:
        raise TunesmithError("merge needs --base MODEL and --tuned RUN (or --config merge.yaml)")
    else:
        spec = from_flags(method, base, list(tuned or []) + list(more or []), weight, density)
    run = merge_run.merge(spec, out, weights=parse_sweep(sweep) if sweep else None,
                          eval_data=str(eval) if eval else None,
                          retention_data=str(retention_data) if retention_data else None,
                          overwrite=overwrite, on_event=ProgressReporter())
    rows = run.metrics.get("sweep", {}).get("rows", [])
    if rows:
        t = Table(title=f"{run.metrics['merge']['method']} sweep (* = chosen)")
        for c in rows[0]:
            if c != "chosen":
                t.add_column(c, justify="right")
        for r in rows:
            t.add_row(*[(f"{v:.4f}" if isinstance(v, float) and k != "weight" else f"{v:g}" + ("*" if r["chosen"] else ""))
                        for k, v in r.items() if k != "chosen"])
        out_console.print(t)
    out_console.print(f"merged run folder: {run.path}")


@app.command()
def export(run: Path = typer.Argument(..., help="run folder"),
           format: str = typer.Option("onnx", "--format", help="hf | onnx"),
           quantize: Optional[str] = typer.Option(None, help="int8: dynamic quantisation (onnx only)"),
           out: Optional[Path] = typer.Option(None, help="export folder (default RUN/export/FORMAT)"),
           overwrite: bool = typer.Option(False, help="replace an existing export folder")):
    """Export a run for deployment, checking its predictions against PyTorch."""
    from tunesmith.export import export_run

    res = export_run(run, format, quantize=quantize, out=out, overwrite=overwrite)
    p = res["parity"]
    limits = ", ".join(f"{k} {v:g}" for k, v in p["tolerance"].items())
    out_console.print(f"exported {format}{' int8' if quantize else ''} to {res['path']}: parity on {p['n']} rows: "
                      f"max |Δprob| {p['max_abs_prob_diff']:.2e}, mean |Δprob| of the label {p['mean_top_prob_diff']:.2e}, "
                      f"label agreement {p['label_agreement']:.4f} (limits: {limits})")


@app.command()
def serve(run: Path = typer.Argument(..., help="run folder"),
          host: str = typer.Option("127.0.0.1", help="bind address; beyond loopback, set a token"),
          port: int = typer.Option(8000),
          token_file: Optional[Path] = typer.Option(None, help="file holding the bearer token (else env "
                                                    "TUNESMITH_SERVE_TOKEN); every path but /health then needs it"),
          allow_host: Optional[list[str]] = typer.Option(None, "--allow-host", help="also accept this Host header "
                                                         "(repeatable; *.example.com; * turns the check off)"),
          max_batch: int = typer.Option(32, help="largest micro-batch"),
          max_wait_ms: float = typer.Option(5.0, help="how long a request waits for others to batch with"),
          max_queue: Optional[int] = typer.Option(None, help="texts waiting or in flight before 503 "
                                                  "(default 4 x --max-batch)"),
          max_queue_bytes: Optional[int] = typer.Option(None, help="their UTF-8 bytes before 503 "
                                                        "(default 8 KiB x --max-queue)"),
          info_details: bool = typer.Option(False, help="/info also shows the run's path and test metrics"),
          threads: Optional[int] = typer.Option(None, help="torch threads (1 is faster on a busy shared CPU)"),
          corpus: Optional[Path] = typer.Option(None, help="embedding runs: texts POST /search looks through "
                                                "(.txt or a table with a text column), embedded at start-up"),
          engine: Optional[str] = typer.Option(None, help=ENGINE_HELP)):
    """Serve predictions over HTTP (FastAPI): the task's route (/predict, /embed, ...), /health, /info, /docs."""
    use_engine(engine)
    from tunesmith.serve import serve_run

    serve_run(run, host=host, port=port, token_file=token_file, allow_hosts=allow_host or (),
              info_details=info_details, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
              max_queue_bytes=max_queue_bytes, threads=threads, task_options={"corpus": corpus} if corpus else None)


@app.command()
def tune(
    data: Path = typer.Argument(..., help="training data: CSV, TSV, JSONL or Parquet"),
    test: Optional[Path] = typer.Option(None, help="test data, read once for the winner only"),
    models: Optional[str] = typer.Option(None, help="base models to choose among, comma-separated"),
    time: Optional[str] = typer.Option(None, "--time", help="search budget: 20m, 90s, 1h30m"),
    trials: Optional[int] = typer.Option(None, help="stop after this many finished trials in the study"),
    metric: Optional[str] = typer.Option(None, help="validation metric to optimise (default macro_f1; loss)"),
    out: Optional[Path] = typer.Option(None, help="tune folder (default runs/tune-<time>-<name>); re-run to resume"),
    storage: Optional[str] = typer.Option(None, envvar="TUNESMITH_STORAGE", show_envvar=True,
                                          help="postgresql://user@host/db: join a study across machines "
                                               "(password from PGPASSWORD or ~/.pgpass)"),
    study: str = typer.Option("tunesmith", help="study name in the storage"),
    workers: int = typer.Option(1, help="worker processes on this machine"),
    config: Optional[Path] = typer.Option(None, help="recipe file; its `tune:` section narrows/widens the space"),
    engine: Optional[str] = typer.Option(None, help=ENGINE_HELP),
    track: Optional[str] = typer.Option(None, help="none | mlflow: the study a parent run, each trial a nested "
                                                   "child (MLFLOW_TRACKING_URI; --workers > 1 needs a server)"),
):
    """Search strategy, hyperparameters and base model under a budget; the winner is a normal run folder."""
    use_engine(engine)
    from tunesmith.redact import secrets_of
    from tunesmith.tune.search import STORAGE_ENV, TuneArgs, default_out, parse_time
    from tunesmith.tune.search import tune as run_tune
    from tunesmith.tune.study import storage_error

    if storage and secrets_of(storage) and os.environ.get(STORAGE_ENV) != storage:
        console.print("note: --storage holds a password: the process list and your shell history show it; set "
                      "PGPASSWORD or ~/.pgpass, or the whole URL in TUNESMITH_STORAGE (tunesmith writes it nowhere)",
                      highlight=False, soft_wrap=True)
    args = TuneArgs(train=str(data), test=str(test) if test else None,
                    models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
                    seconds=parse_time(time), trials=trials, metric=metric, out=str(out or default_out(str(data))),
                    storage=storage, study=study, workers=workers, config=str(config) if config else None,
                    track=track)
    reporter = ProgressReporter()
    try:
        doc = run_tune(args, console, on_event=reporter)
    except Exception as e:
        err = storage_error(e, storage)  # SQLAlchemy's text may quote the URL: one line without the password
        if err is None:
            raise
        raise err from None
    finally:
        reporter.close()
    w = doc.get("winner") or {}
    if w:
        out_console.print(metrics_table(f"winner: trial {w['trial']} ({w['settings']['strategy']}), test",
                                        {"winner": w.get("test", {})}))
    out_console.print(f"tune folder: {args.out}  (tune.json, tune_report.html; winner run folder: {w.get('run', '-')})")


@app.command()
def runs(folder: Path = typer.Argument(Path("runs"), help="folder holding run folders (searched below it)"),
         sort: str = typer.Option("date", help="column to sort by: run, state, task, model, strategy, data, test, "
                                               "baseline, verdict, wall, date (or a recipe field: seed, lr, ...)"),
         reverse: bool = typer.Option(False, help="sort descending"),
         filters: Optional[list[str]] = typer.Option(None, "--filter", help="KEY=VALUE, repeatable: a column or "
                                                    "recipe field (task=single_label, model=minilm, seed=1, "
                                                    "state=unfinished); text matches as a substring"),
         json_out: bool = typer.Option(False, "--json", help="print the rows as JSON instead of a table")):
    """List the run folders under a folder: task, model, data fingerprint, test metric, baseline, verdict."""
    import json

    from tunesmith.compare.runs import json_rows, list_runs, runs_table

    rows = list_runs(folder, sort=sort, reverse=reverse, filters=filters or ())
    if json_out:
        out_console.print_json(json.dumps(json_rows(rows), default=str))
        return
    if not rows:
        out_console.print(f"no run folders under {folder}" + (" match the filters" if filters else ""), highlight=False)
        return
    done = sum(r["state"] == "finished" for r in rows)
    out_console.print(runs_table(rows, f"{len(rows)} runs under {folder} ({done} finished)"))


@app.command()
def compare(run: list[Path] = typer.Argument(..., help="run folders: the first is the reference"),
            out: Optional[Path] = typer.Option(None, help="compare.html path or folder (default: beside the first "
                                                          "run, compare-<a>-<b>.html)"),
            overwrite: bool = typer.Option(False, help="replace an existing --out file"),
            resamples: int = typer.Option(1000, min=100, help="bootstrap resamples of the test rows"),
            seed: int = typer.Option(0, help="seed of the resampling"),
            json_out: bool = typer.Option(False, "--json", help="print the comparison as JSON instead of tables")):
    """Are these runs comparable (same test data), and is the difference real? Paired bootstrap, compare.html."""
    import json

    from tunesmith.compare.page import write_compare
    from tunesmith.compare.pairwise import compare_runs, resolve_out

    if len(run) < 2:
        raise TunesmithError("compare needs two run folders or more: tunesmith compare RUN_A RUN_B")
    page_path = resolve_out(run, out, overwrite)  # refused before any work
    doc = compare_runs(run, n_boot=resamples, seed=seed)
    write_compare(doc, page_path)
    if json_out:
        out_console.print_json(json.dumps({k: v for k, v in doc.items() if k != "recipes"}, default=str))
        console.print(f"wrote {page_path}", highlight=False, soft_wrap=True)
        return
    t = Table(title=f"test metrics ({doc['n']} rows, {doc['data']['how']})")
    t.add_column("run")
    for c in doc["metrics"]:
        t.add_column(f"{c} [95% CI]", justify="right")
    for r in doc["runs"]:
        t.add_row(r["name"], *[(f"{r['scores'][c]:.4f}" + (f" [{r['ci95'][c][0]:.3f}, {r['ci95'][c][1]:.3f}]"
                                                             if r["ci95"].get(c) else "")) for c in doc["metrics"]])
    out_console.print(t)
    if doc["recipe_differences"]:
        out_console.print("recipe differences (" + " | ".join(r["name"] for r in doc["runs"]) + "):", highlight=False)
    for d in doc["recipe_differences"]:
        out_console.print(f"  {d['setting']}: " + " | ".join(str(v) for v in d["values"]), highlight=False)
    for p in doc["pairs"]:
        out_console.print(p["verdict"], highlight=False, soft_wrap=True)
    out_console.print(f"wrote {page_path}", highlight=False, soft_wrap=True)


@app.command()
def track(folder: Path = typer.Argument(..., help="finished run folder, or tune folder"),
          force: bool = typer.Option(False, help="upload a run again even if it is tracked already")):
    """Log a finished run (or a tune with its trials) to MLflow: one trained without --track mlflow, or whose
    tracker was down. MLFLOW_TRACKING_URI, else the SQLite store beside the runs (runs/mlflow.db)."""
    from tunesmith.tracking.record import TUNE_ARGS

    if (folder / TUNE_ARGS).exists():
        from tunesmith.tune.search import track_tune

        line = track_tune(folder)
    else:
        from tunesmith.tracking import upload

        line = upload(folder, force=force)
    out_console.print(line, highlight=False, soft_wrap=True)


# ---- embedding runs (--task embedding): vectors of a file, and a corpus searched by meaning ---------------------
def _embedder(run: Path):
    from tunesmith.predictor import Predictor

    p = Predictor.load(run)
    if p.task.kind != "embedder":
        raise TunesmithError(f"{run}: a {p.task.name} run gives no vectors; train one with --task embedding")
    return p


@app.command()
def embed(run: Path = typer.Argument(..., help="embedding run folder"),
          data: Path = typer.Argument(..., help="texts: .txt (one a line) or a table with a text column"),
          out: Path = typer.Option(..., help="write the texts with a `vector` column (Parquet, JSONL, CSV)"),
          text_column: Optional[str] = typer.Option(None),
          overwrite: bool = typer.Option(False, help="replace an existing --out file")):
    """Write one unit vector per text (cosine similarity = dot product)."""
    from tunesmith import api

    _embedder(run)
    frame = api.predict(run, data, out=str(out), text_column=text_column, overwrite=overwrite)
    out_console.print(f"wrote {len(frame)} vectors of {len(frame['vector'].iloc[0]) if len(frame) else 0} "
                      f"dimensions to {out}", highlight=False, soft_wrap=True)


@app.command()
def search(run: Path = typer.Argument(..., help="embedding run folder"),
           corpus: Path = typer.Option(..., help="texts to search: .txt (one a line) or a table with a text column"),
           query: str = typer.Option(..., help="what to look for"),
           k: int = typer.Option(5, min=1, help="how many texts to show"),
           text_column: Optional[str] = typer.Option(None)):
    """The corpus texts closest in meaning to a query, with their cosine similarity."""
    from tunesmith.tasks.embedding.inference import top_k

    p = _embedder(run)
    _, texts = p.task.read_inputs(str(corpus), text_column)
    hits = top_k(p.outputs([query]), p.outputs(texts), k)[0]
    t = Table(title=f"{query!r} in {corpus} ({len(texts)} texts)")
    for c, j in (("rank", "right"), ("score", "right"), ("text", "left")):
        t.add_column(c, justify=j)
    for r, (i, s) in enumerate(hits, 1):
        t.add_row(str(r), f"{s:.4f}", texts[i])
    out_console.print(t)


ARGV_ENV = "TUNESMITH_ARGV"  # train/distributed.launch: the arguments of each --nproc process, as JSON


def main():
    """`tunesmith ...`, and `python -m tunesmith.cli` for each process of --nproc (train/distributed.launch),
    whose arguments come in $TUNESMITH_ARGV: torch.distributed.run's own parser would read --nproc, --log...
    as abbreviations of its options. Taken out of the environment, so nothing this process starts sees it."""
    argv = os.environ.pop(ARGV_ENV, None)
    if argv is not None:
        import json

        sys.argv = ["tunesmith", *json.loads(argv)]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one to read
    try:
        app()
    except TunesmithError as e:
        if os.environ.get("LOCAL_RANK", "0") == "0":  # --nproc: the same line from every process, once a machine
            console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        console.print(f"[red]error:[/red] no space left on the disk writing {e.filename or 'the output'}: free "
                      "some space and run the same command again", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
