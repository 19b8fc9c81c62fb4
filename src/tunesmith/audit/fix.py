"""--fix OUT: a cleaned copy of the training file. Inputs are never touched."""
from __future__ import annotations

from pathlib import Path

from tunesmith.audit.render import refuse_existing
from tunesmith.audit.runner import AuditReport
from tunesmith.data.io import file_format, read_table, write_table
from tunesmith.errors import TunesmithError

NEEDED = ("empty_text", "duplicates", "leakage")


def removals(report: AuditReport) -> dict[str, list[int]]:
    """Train rows to drop, by reason: empty rows, all but the first of each duplicate group, train rows
    that leak into test exactly (near leaks are often paraphrases: reported for review, not deleted)."""
    names = {f.name for f in report.checks}
    missing = [n for n in NEEDED if n not in names]
    if missing:
        raise TunesmithError(f"--fix needs the {', '.join(missing)} check(s) in the audit")
    return {"empty_text": report.get("empty_text").rows, "duplicates": report.get("duplicates").rows,
            "leakage": report.get("leakage").details.get("train_exact_rows", [])}


def write_fixed(report: AuditReport, out, overwrite: bool = False) -> dict[str, list[int]]:
    out = Path(out)
    file_format(out)  # an unknown suffix fails before any work
    for p in report.files.values():
        if Path(p).resolve() == out.resolve():
            raise TunesmithError(f"{out}: is an input file; --fix never overwrites inputs, choose another name")
    refuse_existing(out, overwrite)
    removed = removals(report)
    drop = sorted(set().union(*removed.values()))
    frame = read_table(report.files["train"])
    write_table(frame.drop(index=drop), out)
    return removed
