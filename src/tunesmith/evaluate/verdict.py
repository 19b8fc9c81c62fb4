"""The verdict: one line in plain words that says whether the fine-tune is worth shipping."""
from __future__ import annotations

import re

NAMES = {"majority": "majority", "zero_shot": "zero-shot", "few_shot_all": "few-shot (all training data)"}


def baseline_name(name: str) -> str:
    m = re.fullmatch(r"few_shot_(\d+)", name)
    return f"{m.group(1)}-shot" if m else NAMES.get(name, name.replace("_", " "))


def metric_name(metric: str) -> str:
    return {"macro_f1": "macro-F1", "micro_f1": "micro-F1", "accuracy": "accuracy"}.get(metric, metric)


def comparison_phrase(c: dict) -> str:
    name, metric = baseline_name(c["baseline"]), metric_name(c["metric"])
    p, (lo, hi) = 100 * c["diff"], (100 * c["ci95"][0], 100 * c["ci95"][1])
    ci = f"(CI {lo:.1f} to {hi:.1f})"
    if lo > 0:
        return f"fine-tuning beat the {name} baseline by {p:.1f} {metric} points {ci}"
    if hi < 0:
        return f"fine-tuning did WORSE than the {name} baseline by {-p:.1f} {metric} points {ci}: ship the baseline"
    return f"fine-tuning did not beat the {name} baseline by more than the noise ({p:+.1f} {metric} points {ci})"


def retention_phrase(r: dict) -> str | None:
    if r.get("kind") == "sts_spearman":
        b, a = r["before"], r["after"]
        move = "fell" if a < b - 0.005 else "rose" if a > b + 0.005 else "held"
        return f"general similarity (Spearman) {move} from {b:.2f} to {a:.2f}"
    if r.get("kind") == "linear_cka":
        return f"the encoder's representations of your texts kept a linear CKA of {r['cka']:.2f} with the base (1 = unchanged)"
    return None


def verdict(m: dict) -> str:
    parts = []
    if m.get("comparison"):
        parts.append(comparison_phrase(m["comparison"]))
    else:
        t = m.get("test", {})
        parts.append(f"fine-tuned model: {metric_name('macro_f1')} {t.get('macro_f1', float('nan')):.3f} "
                     f"on {t.get('n', '?')} test rows (no baseline to compare with)")
    if m.get("retention") and retention_phrase(m["retention"]):
        parts.append(retention_phrase(m["retention"]))
    cal = m.get("calibration")
    if cal and cal.get("fitted_on"):
        parts.append(f"temperature {cal['temperature']:.2f} changed calibration error on test from "
                     f"{cal['test_ece_before']:.3f} to {cal['test_ece_after']:.3f}")
    if m.get("overfitting", {}).get("flag"):
        parts.append(f"overfitting: {m['overfitting']['reason']} (the best epoch was kept)")
    s = m.get("slices")
    if s and "gap" in s:
        sl = s["slices"]
        parts.append(f"weakest {s['column']} slice '{s['worst']}' {metric_name(s['metric'])} "
                     f"{sl[s['worst']][s['metric']]:.2f} vs '{s['best']}' {sl[s['best']][s['metric']]:.2f}")
    return "; ".join(parts) + "."
