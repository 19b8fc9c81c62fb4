"""`tunesmith audit`: the command's body, kept out of tunesmith/cli.py so that stays thin."""
from __future__ import annotations

from pathlib import Path

from tunesmith.audit import render
from tunesmith.audit.runner import audit


def run_audit_command(data: Path, *, test, validation, model, max_length, text_column, label_column, json_out,
                      html_out, fix, overwrite, strict, console, out_console, task_audit=None) -> int:
    """`task_audit`: a callable giving the report of a task with its own checks (token tags), or None when
    audit/'s row checks apply (pipeline.audit_data, passed in from above: audit/ sits below the tasks)."""
    from tunesmith.audit.fix import write_fixed
    from tunesmith.errors import TunesmithError

    targets = [p for p in (json_out, html_out, fix) if p is not None]
    for p in targets:  # refuse before minutes of work, not after
        render.refuse_existing(p, overwrite)
    with console.status(f"auditing {data}"):
        report = task_audit() if task_audit else None
    if report is not None and (fix or validation):
        raise TunesmithError(f"{data}: --{'fix' if fix else 'validation'} is for text and label rows; this "
                             f"file's task has its own checks: run without it")
    if report is None:
        with console.status(f"auditing {data} (embedding texts with {model} the first time)"):
            report = audit(str(data), str(test) if test else None,
                           validation=str(validation) if validation else None, model=model,
                           max_length=max_length, text_column=text_column, label_column=label_column)
    out_console.print(render.table(report))
    near = next((f for f in report.checks if f.name == "near_duplicates"), None)
    if near is not None:
        out_console.print(f"near duplicates, near conflicts and near leaks: cosine similarity >= "
                          f"{near.details['threshold']} of {model} embeddings; "
                          f"row numbers are 0-based data rows (header excluded)", style="dim")
    if json_out:
        render.write_json(report, json_out, overwrite)
        out_console.print(f"wrote {json_out}")
    if html_out:
        render.write_html(report, html_out, overwrite)
        out_console.print(f"wrote {html_out}")
    if fix:
        removed = write_fixed(report, fix, overwrite)
        total = len(set().union(*removed.values()))
        parts = "; ".join(f"{k} {len(v)} ({render.sample(v)})" for k, v in removed.items() if v)
        out_console.print(f"removed {total} of {report.rows} rows{': ' + parts if parts else ''}; "
                          f"wrote {report.rows - total} rows to {fix}")
    return 1 if strict and report.errors else 0
