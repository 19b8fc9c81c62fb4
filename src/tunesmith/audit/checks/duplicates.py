"""The same text more than once, after normalising case, white space and punctuation."""
from tunesmith.audit.base import AuditData, Finding

NAME = "duplicates"


def run(data: AuditData) -> Finding:
    groups = [data.train.file_rows(g) for g in data.exact_groups]
    rows = sorted(r for g in groups for r in g[1:])  # the first of each group is the one to keep
    return Finding(NAME, "warning" if rows else "ok", rows, sorted(groups),
                   details={"groups": len(groups), "largest_group": max(map(len, groups), default=0),
                            "normalised": "case, white space and punctuation"},
                   fix="keep the first of each (--fix): copies over-weight a text and straddle splits")
