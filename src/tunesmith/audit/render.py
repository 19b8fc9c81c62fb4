"""The report three ways: a rich table for the terminal, JSON, and one self-contained HTML page."""
from __future__ import annotations

import html
import io
import json
from pathlib import Path

from rich.table import Table as RichTable

from tunesmith.audit.runner import AuditReport
from tunesmith.errors import TunesmithError

STYLE = {"ok": "green", "warning": "yellow", "error": "bold red"}
SAMPLE = 5


def sample(rows: list[int], n: int = SAMPLE) -> str:
    return ", ".join(map(str, rows[:n])) + (f", ... (+{len(rows) - n})" if len(rows) > n else "")


def _fix(f) -> str:
    return "" if f.severity == "ok" else f.fix


def table(report: AuditReport) -> RichTable:
    files = ", ".join(f"{k} {v}" for k, v in report.files.items())
    t = RichTable(title=f"audit of {files}: {report.rows} rows, model {report.model}, max length "
                        f"{report.max_length} ({report.seconds:.1f}s)", title_justify="left")
    for c, kw in (("check", {}), ("severity", {}), ("count", {"justify": "right"}), ("rows", {}), ("fix", {})):
        t.add_column(c, **kw)
    for f in report.checks:
        note = f" [dim]({f.details['skipped']})[/dim]" if "skipped" in f.details else ""
        t.add_row(f.name, f"[{STYLE[f.severity]}]{f.severity}[/]", str(f.count), sample(f.rows) + note, _fix(f))
    return t


def summary_lines(report: AuditReport) -> list[str]:
    """One screen for `tunesmith train`: a headline plus one line per check that is not ok."""
    bad = [f for f in report.checks if f.severity != "ok"]
    n_err = sum(f.severity == "error" for f in bad)
    lines = [f"audit: {len(report.checks)} checks on {report.rows} rows, {n_err} errors, {len(bad) - n_err} warnings "
             f"({report.seconds:.1f}s)"]
    for f in bad:
        lines.append(f"audit {f.severity}: {f.name}, {f.count} rows ({sample(f.rows, 3)}): {f.fix}")
    return lines


def refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise TunesmithError(f"{path}: already exists; pass --overwrite or choose another name")


def write_json(report: AuditReport, path: Path, overwrite: bool = False) -> None:
    refuse_existing(path, overwrite)
    path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    s = buf.getvalue()
    return s[s.index("<svg"):]  # inline: drop the XML prologue and DOCTYPE


def _charts(report: AuditReport) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    names = [f.name for f in report.checks]
    if "truncation" in names:
        d = report.get("truncation").details
        h = d["histogram"]
        fig, ax = plt.subplots(figsize=(7, 2.8))
        ax.stairs(h["counts"], h["edges"], fill=True, color="#4c72b0")
        ax.axvline(d["max_length"], color="#c44e52", ls="--", label=f"max length {d['max_length']}")
        ax.set(xlabel="tokens per text", ylabel="rows", title="text length")
        ax.legend()
        out.append(_svg(fig))
    if "class_balance" in names and "counts" in report.get("class_balance").details:
        counts = report.get("class_balance").details["counts"]
        shown = list(counts.items())[:40]
        fig, ax = plt.subplots(figsize=(7, 0.8 + 0.22 * len(shown)))
        ax.barh([k for k, _ in shown][::-1], [v for _, v in shown][::-1], color="#55a868")
        ax.set(xlabel="rows", title="class balance" + (f" (largest 40 of {len(counts)})" if len(counts) > 40 else ""))
        out.append(_svg(fig))
    return out


def _details(d: dict) -> str:
    # Long lists (rows per kind, ranked rows) are cut: the JSON has them all.
    short = {k: (v[:50] + ["..."] if isinstance(v, list) and len(v) > 50 else v) for k, v in d.items()
             if k != "histogram"}
    return html.escape(json.dumps(short, indent=1, ensure_ascii=False)[:6000])


def write_html(report: AuditReport, path: Path, overwrite: bool = False) -> None:
    refuse_existing(path, overwrite)
    e = html.escape
    rows = "".join(
        f"<tr class='{f.severity}'><td>{e(f.name)}</td><td>{f.severity}</td><td>{f.count}</td>"
        f"<td>{e(sample(f.rows, 10))}</td><td>{e(_fix(f))}</td></tr>" for f in report.checks)
    sections = "".join(
        f"<details><summary>{e(f.name)}: {f.severity}, {f.count} rows</summary>"
        f"<p>rows: {e(sample(f.rows, 200))}</p>"
        + (f"<p>groups: {e(json.dumps(f.groups[:50], ensure_ascii=False))}</p>" if f.groups else "")
        + f"<pre>{_details(f.details)}</pre></details>" for f in report.checks)
    files = ", ".join(f"{k}: {v}" for k, v in report.files.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tunesmith audit</title><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top}}tr.ok td:nth-child(2){{color:#2a7a2a}}tr.warning td:nth-child(2){{color:#b8860b}}
tr.error td:nth-child(2){{color:#c00;font-weight:bold}}pre{{background:#f6f6f6;padding:8px;overflow:auto}}
.charts svg{{max-width:100%;height:auto}}</style></head><body>
<h1>tunesmith audit</h1><p>{e(files)}; {report.rows} rows; model {e(report.model)}, max length {report.max_length};
{report.seconds:.1f}s. Row numbers are 0-based data rows of the file (header excluded); leakage rows are rows of
the test file.</p>
<table><tr><th>check</th><th>severity</th><th>count</th><th>rows</th><th>fix</th></tr>{rows}</table>
<div class="charts">{''.join(_charts(report))}</div>{sections}</body></html>"""
    path.write_text(page)
