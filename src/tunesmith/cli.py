"""Command line: a thin typer layer over tunesmith.api. Errors print one line and exit non-zero."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tunesmith.errors import TunesmithError

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
        elif kind == "step":
            self.progress.update(self.task_id, completed=kw["batch"], loss=kw["loss"])
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


def metrics_table(title: str, rows: dict[str, dict], cols=("accuracy", "macro_f1")) -> Table:
    t = Table(title=title)
    t.add_column("model")
    for c in cols:
        t.add_column(c, justify="right")
    for name, m in rows.items():
        t.add_row(name, *[f"{m[c]:.4f}" if isinstance(m.get(c), (int, float)) else "-" for c in cols])
    return t


@app.command()
def train(
    data: Optional[Path] = typer.Argument(None, help="training data: CSV, TSV, JSONL or Parquet"),
    test: Optional[Path] = typer.Option(None, help="test data; without it a stratified split is held out"),
    model: Optional[str] = typer.Option(None, help="built-in name (minilm, smollm2), local folder or hub id"),
    strategy: Optional[str] = typer.Option(None, help="full | head | freeze:K | lora"),
    task: Optional[str] = typer.Option(None, help="auto | single_label | multilabel | sft"),
    text_column: Optional[str] = typer.Option(None),
    label_column: Optional[str] = typer.Option(None),
    epochs: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    grad_accum: Optional[int] = typer.Option(None),
    max_length: Optional[int] = typer.Option(None),
    warmup_ratio: Optional[float] = typer.Option(None),
    weight_decay: Optional[float] = typer.Option(None),
    label_smoothing: Optional[float] = typer.Option(None),
    scheduler: Optional[str] = typer.Option(None, help="linear | cosine | constant"),
    seed: Optional[int] = typer.Option(None),
    patience: Optional[int] = typer.Option(None, help="early stopping patience in epochs; 0 = off"),
    val_fraction: Optional[float] = typer.Option(None, help="share of train held out for validation; 0 = none"),
    bf16: Optional[str] = typer.Option(None, help="auto | on | off"),
    lora_r: Optional[int] = typer.Option(None),
    lora_alpha: Optional[int] = typer.Option(None),
    slice_column: Optional[str] = typer.Option(None, help="test column to report metrics per slice"),
    retention_data: Optional[Path] = typer.Option(None, help="sentence pairs with scores (STS-B style)"),
    strict: bool = typer.Option(False, help="refuse to train while the audit finds errors"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/<time>-<name>)"),
    overwrite: bool = typer.Option(False, help="replace an existing run folder"),
    resume: bool = typer.Option(False, help="continue an interrupted run in --out"),
    config: Optional[Path] = typer.Option(None, help="recipe.yaml to re-run (flags override it)"),
):
    """Fine-tune a model on labelled texts and measure it."""
    from tunesmith import api

    settings = dict(test=test, model=model, strategy=strategy, task=task, text_column=text_column,
                    label_column=label_column, epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                    max_length=max_length, warmup_ratio=warmup_ratio, weight_decay=weight_decay,
                    label_smoothing=label_smoothing, scheduler=scheduler, seed=seed, patience=patience,
                    val_fraction=val_fraction, bf16=bf16, lora_r=lora_r, lora_alpha=lora_alpha,
                    slice_column=slice_column, retention_data=retention_data, out=out,
                    strict=strict or None)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items() if v is not None}
    reporter = ProgressReporter()
    try:
        run = api.train(str(data) if data else None, config=str(config) if config else None, resume=resume,
                        overwrite=overwrite, on_event=reporter, **settings)
    finally:
        reporter.close()
    m = run.metrics
    cols = ("accuracy", "macro_f1") if m.get("task") != "multilabel" else ("micro_f1", "macro_f1", "subset_accuracy")
    rows = {name: b for name, b in m.get("baselines", {}).items() if isinstance(b, dict)}
    rows["fine-tuned"] = m.get("test", {})
    out_console.print(metrics_table(f"test metrics ({m.get('test', {}).get('n', '?')} rows)", rows, cols))
    if m.get("verdict"):
        out_console.print(m["verdict"])
    out_console.print(f"run folder: {run.path}  ({m.get('train_samples_per_second', 0):.0f} train samples/s, "
                      f"{m.get('wall_seconds', 0):.0f}s wall)")


@app.command()
def predict(run: Path = typer.Argument(..., help="run folder"),
            data: Path = typer.Argument(..., help="texts to label"),
            out: Optional[Path] = typer.Option(None, help="write predictions here (CSV/TSV/JSONL/Parquet)"),
            text_column: Optional[str] = typer.Option(None),
            overwrite: bool = typer.Option(False)):
    """Label new texts with a trained run."""
    from tunesmith import api

    frame = api.predict(run, data, out=str(out) if out else None, text_column=text_column, overwrite=overwrite)
    if out:
        out_console.print(f"wrote {len(frame)} predictions to {out}")
    else:
        frame.to_csv(sys.stdout, index=False)


@app.command()
def evaluate(run: Path = typer.Argument(..., help="run folder"),
             data: Path = typer.Argument(..., help="labelled data"),
             text_column: Optional[str] = typer.Option(None), label_column: Optional[str] = typer.Option(None)):
    """Measure a trained run on labelled data."""
    from tunesmith import api

    m = api.evaluate(run, data, text_column=text_column, label_column=label_column)
    t = Table(title=f"{data} ({m['n']} rows)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in m.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    out_console.print(t)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="run folder"),
         overwrite: bool = typer.Option(True, help="replace an earlier demo run")):
    """Fine-tune the built-in model on the shipped example tickets and show before/after."""
    from tunesmith.demo import run_demo

    run_demo(out, overwrite, ProgressReporter(), out_console)


def main():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one to read
    try:
        app()
    except TunesmithError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
