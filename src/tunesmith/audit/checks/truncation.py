"""With the model's own tokenizer: rows longer than --max-length and the tokens training never sees."""
import numpy as np

from tunesmith.audit.base import AuditData, Finding

NAME = "truncation"
TOLERATED = 0.01  # under 1% of rows cut: worth knowing, not worth a longer (slower) max length


def suggest(lengths: np.ndarray, limit: int) -> int:
    """The 95th percentile length rounded up to a multiple of 32 (tensor-friendly), within the model's limit."""
    p95 = int(np.ceil(np.percentile(lengths, 95)))
    return int(min(limit, max(32, -(-p95 // 32) * 32)))


def run(data: AuditData) -> Finding:
    t, ml = data.train, data.max_length
    tok = data.tokenizer
    lengths = np.array([len(x) for x in tok(t.texts, truncation=False, verbose=False)["input_ids"]])
    lost = np.maximum(lengths - ml, 0)
    cut = np.flatnonzero(lost)
    share = len(cut) / max(len(t.texts), 1)
    lost_share = float(lost.sum() / max(lengths.sum(), 1))
    hist, edges = np.histogram(lengths, bins=min(40, max(5, len(set(lengths.tolist())))))
    details = {"max_length": ml, "model_limit": data.model_limit, "truncated_rows": int(len(cut)),
               "truncated_share": round(share, 4), "tokens_lost": int(lost.sum()), "tokens_lost_share": round(lost_share, 4),
               "tokens_lost_p95": int(np.percentile(lost[cut], 95)) if len(cut) else 0,
               "length_p50": int(np.percentile(lengths, 50)), "length_p95": int(np.percentile(lengths, 95)),
               "length_max": int(lengths.max()), "suggested_max_length": suggest(lengths, data.model_limit),
               "histogram": {"counts": hist.tolist(), "edges": [round(float(e), 1) for e in edges]}}
    bad = share >= TOLERATED or lost_share >= TOLERATED
    fix = (f"--max-length {details['suggested_max_length']} (95% of rows fit)"
           if details["suggested_max_length"] > ml else "shorten or split the longest texts")
    if details["suggested_max_length"] == data.model_limit and details["length_p95"] > data.model_limit:
        fix = f"model stops at {data.model_limit} tokens: chunk long texts"
    return Finding(NAME, "warning" if bad else "ok", t.file_rows(cut.tolist()), details=details, fix=fix)
