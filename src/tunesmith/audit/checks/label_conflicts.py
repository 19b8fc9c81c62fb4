"""The same (or nearly the same) text with different labels: training is told both, and scoring can't win."""
from tunesmith.audit.base import AuditData, Finding, label_key

NAME = "label_conflicts"


def run(data: AuditData) -> Finding:
    t = data.train
    if t.label_column is None:
        return Finding(NAME, "ok", details={"skipped": "no label column"})
    found = {"exact": [], "near": []}
    for kind, groups in (("exact", data.exact_groups), ("near", data.near_groups)):
        for g in groups:
            labels = sorted({label_key(t.labels[i]) for i in g})
            if len(labels) > 1:
                found[kind].append({"rows": t.file_rows(g), "labels": labels})
    groups = sorted(found["exact"] + found["near"], key=lambda g: g["rows"])
    rows = sorted({r for g in groups for r in g["rows"]})
    severity = "error" if found["exact"] else "warning" if found["near"] else "ok"
    return Finding(NAME, severity, rows, [g["rows"] for g in groups],
                   details={"exact_groups": len(found["exact"]), "near_groups": len(found["near"]),
                            "threshold": data.near_threshold, "labels": [g["labels"] for g in groups]},
                   fix="pick one label per text, or drop the group")
