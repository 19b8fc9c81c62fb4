"""`tunesmith audit`: the command's body, kept out of tunesmith/cli.py so that stays thin."""
from __future__ import annotations

from pathlib import Path

from tunesmith.audit import render
from tunesmith.audit.runner import audit


def run_audit_command(data: Path, *, test, validation, model, max_length, text_column, label_column, json_out,
                      html_out, fix, overwrite, strict, console, out_console) -> int:
    from tunesmith.audit.fix import write_fixed

    targets = [p for p in (json_out, html_out, fix) if p is not None]
    for p in targets:  # refuse before minutes of work, not after
        render.refuse_existing(p, overwrite)
    with console.status(f"auditing {data} (embedding texts with {model} the first time)"):
        report = audit(str(data), str(test) if test else None, validation=str(validation) if validation else None,
                       model=model, max_length=max_length, text_column=text_column, label_column=label_column)
    out_console.print(render.table(report))
    out_console.print(f"near duplicates, near conflicts and near leaks: cosine similarity >= "
                      f"{report.get('near_duplicates').details['threshold']} of {model} embeddings; "
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
