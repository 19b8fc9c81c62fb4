"""Test rows whose text (exact or near) is also in train, or in validation when given: inflated test scores."""
from tunesmith.audit.base import AuditData, Finding, Table, similar_pairs

NAME = "leakage"


def _matches(data: AuditData, test: Table, other: Table) -> dict[int, dict]:
    """test position -> {"rows": positions in other, "match": exact|near}."""
    where: dict[str, list[int]] = {}
    for i, t in enumerate(data.norm(other)):
        where.setdefault(t, []).append(i)
    out = {i: {"rows": where[t], "match": "exact"} for i, t in enumerate(data.norm(test)) if t in where}
    ii, jj = similar_pairs(data.embeddings(test), data.embeddings(other), data.near_threshold)
    for i, j in zip(ii.tolist(), jj.tolist()):
        m = out.setdefault(i, {"rows": [], "match": "near"})
        if m["match"] == "near":
            m["rows"].append(j)
    return out


def run(data: AuditData) -> Finding:
    test = data.test
    if test is None:
        return Finding(NAME, "ok", details={"skipped": "no --test file"})
    groups, details = [], {"threshold": data.near_threshold}
    for name, other in (("train", data.train), ("validation", data.validation)):
        if other is None:
            continue
        m = _matches(data, test, other)
        for i, v in sorted(m.items()):
            groups.append({"test": test.rows[i], name: other.file_rows(v["rows"]), "match": v["match"]})
        details[f"{name}_exact"] = sum(v["match"] == "exact" for v in m.values())
        details[f"{name}_near"] = sum(v["match"] == "near" for v in m.values())
        details[f"{name}_rows"] = sorted({r for v in m.values() for r in other.file_rows(v["rows"])})
        # --fix drops only these: a near match is often a paraphrase, worth a look but not a deletion
        details[f"{name}_exact_rows"] = sorted({r for v in m.values() if v["match"] == "exact"
                                                for r in other.file_rows(v["rows"])})
    rows = sorted({g["test"] for g in groups})
    exact = any(g["match"] == "exact" for g in groups)
    return Finding(NAME, "error" if exact else "warning" if rows else "ok", rows, groups, details,
                   fix="drop exact ones from train (--fix) or test; review near ones")
