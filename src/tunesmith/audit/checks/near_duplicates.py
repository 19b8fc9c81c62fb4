"""Texts that are almost the same: cosine similarity of the model's frozen embeddings above a threshold.

Embeddings rather than MinHash: they see the text as the model will (truncated at --max-length), and
the same vectors serve label_noise, leakage and the baselines, so this check costs one matrix product.
"""
from tunesmith.audit.base import AuditData, Finding

NAME = "near_duplicates"


def run(data: AuditData) -> Finding:
    groups = [data.train.file_rows(g) for g in data.near_groups]
    rows = sorted(r for g in groups for r in g[1:])
    return Finding(NAME, "warning" if rows else "ok", rows, sorted(groups),
                   details={"groups": len(groups), "threshold": data.near_threshold,
                            "method": f"cosine similarity of {data.model} embeddings (max length {data.max_length}),"
                                      f" exact duplicates excluded"},
                   fix="review the groups; keep one of each")
