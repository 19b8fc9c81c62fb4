"""Rows whose text or label is empty, white space only or missing: training drops them silently."""
from tunesmith.audit.base import AuditData, Finding
from tunesmith.data.dataset import _is_missing, _missing_label

NAME = "empty_text"


def run(data: AuditData) -> Finding:
    t = data.train
    text = [i for i, v in enumerate(t.frame[t.text_column].tolist()) if _is_missing(v)]
    label = []
    if t.label_column is not None:
        empty = set(text)
        label = [i for i, v in enumerate(t.frame[t.label_column].tolist()) if _missing_label(v) and i not in empty]
    rows = sorted(set(text) | set(label))
    return Finding(NAME, "warning" if rows else "ok", rows,
                   details={"empty_text": len(text), "missing_label": len(label), "text_rows": text,
                            "label_rows": label},
                   fix="drop them (--fix) or fill them in")
