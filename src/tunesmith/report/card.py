"""MODEL_CARD.md in the Hugging Face model card format: YAML front matter (model-index) + sections."""
from __future__ import annotations

from pathlib import Path

import yaml

from tunesmith.evaluate.verdict import baseline_name, metric_name

# what the built-in names are on the Hub
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "mpnet": "sentence-transformers/all-mpnet-base-v2",
           "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _base_model(name: str) -> str | None:
    if name in HUB_IDS:
        return HUB_IDS[name]
    return name if name.count("/") == 1 and not Path(name).exists() else None


def front_matter(name: str, m: dict, recipe: dict) -> dict:
    t = m.get("test", {})
    ci = t.get("ci95", {})
    results = [{"type": k, "name": f"test {metric_name(k)}", "value": round(t[k], 4),
                **({"args": {"ci95": [round(x, 4) for x in ci[k]]}} if k in ci else {})}
               for k in ("accuracy", "macro_f1", "micro_f1") if isinstance(t.get(k), float)]
    doc = {"library_name": "transformers", "pipeline_tag": "text-classification",
           "tags": ["tunesmith", "text-classification", m.get("task", "text-classification")]}
    base = _base_model(recipe.get("model", ""))
    if base:
        doc["base_model"] = base
    doc["model-index"] = [{"name": name, "results": [{
        "task": {"type": "text-classification", "name": "Text Classification"},
        "dataset": {"name": Path(recipe.get("train", "data")).parent.name or "data", "type": "custom",
                    "split": "test"},
        "metrics": results}]}]
    return doc


def render(name: str, m: dict, recipe_doc: dict, audit=None) -> str:
    recipe, prov = recipe_doc.get("recipe", {}), recipe_doc.get("provenance", {})
    t = m.get("test", {})
    cols = [c for c in ("accuracy", "macro_f1", "micro_f1") if isinstance(t.get(c), float)]
    L = ["---", yaml.safe_dump(front_matter(name, m, recipe), sort_keys=False, allow_unicode=True).strip(), "---", "",
         f"# {name}", "",
         f"A {str(m.get('task', '')).replace('_', '-')} text classifier fine-tuned from `{recipe.get('model')}` "
         f"with tunesmith (strategy `{recipe.get('strategy')}`, "
         f"{len(m.get('labels', []))} labels).", "",
         f"**Verdict:** {m.get('verdict', '-')}", "",
         "## Intended use", "",
         f"Assigning one of these labels to short texts like those in the training file: "
         f"{', '.join('`%s`' % l for l in m.get('labels', [])[:30])}{' …' if len(m.get('labels', [])) > 30 else ''}. "
         "It is not meant for texts from another domain or language, or for labels it was not trained on; "
         "check the limitations below before relying on its scores.", "",
         "## Training data", ""]
    for k, d in prov.get("data", {}).items():
        L.append(f"- {k}: `{d['path']}` (sha256 `{d['sha256'][:16]}…`)")
    rows = prov.get("rows", {})
    L += [f"- rows: {rows.get('train', '?')} train / {rows.get('validation', '?')} validation / {rows.get('test', '?')} test", "",
          "## Evaluation", "", "Test-set metrics with 95% bootstrap intervals, next to baselines on the untouched model:", "",
          "| model | " + " | ".join(metric_name(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for n, b in m.get("baselines", {}).items():
        if "skipped" in b:
            L.append(f"| {baseline_name(n)} | " + " | ".join("skipped" for _ in cols) + " |")
        else:
            L.append(f"| {baseline_name(n)} | " + " | ".join(_cell(b, c) for c in cols) + " |")
    L.append("| **fine-tuned** | " + " | ".join(f"**{_cell(t, c)}**" for c in cols) + " |")
    comp = m.get("comparison")
    if comp:
        L += ["", f"Paired bootstrap vs {baseline_name(comp['baseline'])}: {100 * comp['diff']:+.1f} "
                  f"{metric_name(comp['metric'])} points (95% CI {100 * comp['ci95'][0]:.1f} to {100 * comp['ci95'][1]:.1f})."]
    L += ["", "## Limitations found", ""]
    L += [f"- {x}" for x in limitations(m)] or ["- none measured"]
    if audit:
        L += ["", "## Data audit", "", "An audit of the training data ran; see `audit.json` / `report.html` in the run folder."]
    L += ["", "## Training procedure", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", "",
          "## How to use", "", "```python", "from transformers import pipeline", "",
          'clf = pipeline("text-classification", model="path/to/run/model")', 'print(clf("your text"))', "```", "",
          f"Scores from `tunesmith predict` are divided by the fitted temperature "
          f"({m.get('calibration', {}).get('temperature', 1.0):.2f}, in `model/tunesmith.json`); the raw pipeline does not apply it.", ""]
    return "\n".join(L)


def _cell(m: dict, c: str) -> str:
    v, ci = m.get(c), m.get("ci95", {}).get(c)
    return f"{v:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "") if isinstance(v, float) else "-"


def limitations(m: dict) -> list[str]:
    out = []
    s = m.get("slices")
    if s and "gap" in s:
        sl = s["slices"]
        out.append(f"Slices of `{s['column']}`: {metric_name(s['metric'])} ranges from {sl[s['worst']][s['metric']]:.3f} "
                   f"(`{s['worst']}`, n={sl[s['worst']]['n']}) to {sl[s['best']][s['metric']]:.3f} (`{s['best']}`).")
    cal = m.get("calibration", {})
    if "test_ece_before" in cal:
        out.append(f"Calibration: expected calibration error on test {cal['test_ece_before']:.3f} raw, "
                   f"{cal.get('test_ece_after', cal['test_ece_before']):.3f} after temperature scaling (T = {cal.get('temperature', 1):.2f}).")
    r = m.get("retention", {})
    if r.get("kind") == "sts_spearman":
        out.append(f"Retention: general sentence similarity (Spearman on {r['n']} pairs) {r['before']:.3f} before, {r['after']:.3f} after.")
    elif r.get("kind") == "linear_cka":
        out.append(f"Representation drift: linear CKA {r['cka']:.3f} between the base and tuned encoder on {r['n']} test texts; "
                   "general-purpose uses of the encoder (search, similarity) may have changed.")
    if m.get("overfitting", {}).get("flag"):
        out.append(f"Overfitting during training: {m['overfitting']['reason']}.")
    pc = m.get("per_class", {})
    weak = sorted(pc, key=lambda k: pc[k]["f1"])[:3]
    if weak:
        out.append("Weakest classes: " + ", ".join(f"`{k}` (F1 {pc[k]['f1']:.2f})" for k in weak) + ".")
    return out
