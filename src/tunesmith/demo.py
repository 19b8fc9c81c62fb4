"""`tunesmith demo`: the main job on the built-in model and the shipped example tickets."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

EXAMPLE = Path(__file__).parent / "data" / "example" / "tickets.csv"


def run_demo(out: Path, overwrite: bool, reporter, console) -> None:
    import pandas as pd

    from tunesmith import api

    labels = pd.read_csv(EXAMPLE)["label"]
    console.print(f"[bold]tunesmith demo[/bold]: fine-tuning all-MiniLM-L6-v2 on {EXAMPLE.name} ({len(labels)} "
                  f"invented support tickets, {labels.nunique()} classes that share their words and differ by "
                  f"intent: refund/return/exchange, login/password reset/2FA, late/lost/misaddressed parcel)")
    try:
        run = api.train(str(EXAMPLE), out=str(out), overwrite=overwrite, epochs=4, on_event=reporter)
    finally:
        reporter.close()
    m = run.metrics
    rows = [("majority class", m.get("baselines", {}).get("majority")),
            ("untouched model + linear probe", m.get("baselines", {}).get("few_shot_all")),
            ("fine-tuned", m["test"])]
    t = Table(title=f"before / after on {m['test']['n']} held-out tickets")
    for c in ("model", "accuracy", "macro-F1"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for name, r in rows:
        if r:
            t.add_row(name, f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}")
    console.print(t)
    console.print(f"run folder: {run.path}  (model/ loads with transformers.pipeline('text-classification'))")
