"""report.html and MODEL_CARD.md of an embedding run, drawn with report/'s primitives: the test metrics of
the fine-tuned encoder against the untouched one and BM25, the paired differences, the learning curves."""
from __future__ import annotations

from html import escape

import yaml

from tunesmith.report import charts
from tunesmith.report.card import _base_model
from tunesmith.report.html import audit_section, fmt, img, page, stage_times, table
from tunesmith.tasks.embedding.metrics import MAIN, RETRIEVAL


def _cols(m: dict) -> list[str]:
    t = m.get("test", {})
    return [c for c in (*RETRIEVAL, "spearman", "knn_accuracy") if c in t]


def _rows(m: dict) -> list[tuple[str, dict]]:
    return [(k, v) for k, v in m.get("baselines", {}).items()] + [("fine-tuned", m.get("test", {}))]


def render_html(name: str, m: dict, recipe_doc: dict, audit=None) -> str:
    recipe = recipe_doc.get("recipe", {})
    cols, form = _cols(m), m.get("form", "pairs")
    comps = m.get("comparisons", {})
    tone = "" if comps and all(c["ci95"][0] > 0 for c in comps.values()) else "meh"
    s = [f"<h1>tunesmith report: {escape(name)}</h1>",
         f'<div class="sub">sentence embedding · {escape(form)} · model {escape(str(recipe.get("model")))} · '
         f'strategy {escape(str(recipe.get("strategy")))}</div>',
         f'<section class="verdict {tone}"><b>Verdict.</b> {escape(m.get("verdict", "no verdict"))}</section>',
         "<section><h2>Fine-tuned vs baselines (test set)</h2>",
         table(["model"] + [c + " [95% CI]" for c in cols],
               [[escape(n)] + [fmt(r.get(c), r.get("ci95", {}).get(c)) for c in cols] for n, r in _rows(m)],
               ["ft" if n == "fine-tuned" else "" for n, _ in _rows(m)]),
         '<p class="sub">Retrieval: each distinct test anchor queries all distinct test positives (labelled texts: '
         'every other test text, same label relevant); recall@k is capped at the number relevant. Intervals '
         'resample queries (scored pairs: pairs). Untouched: the base encoder, mean-pooled. BM25: bm25s.</p>']
    if comps:
        key = MAIN.get(form, "mrr@10")
        s.append(table(["baseline", f"fine-tuned minus baseline, {key}", "95% CI"],
                       [[escape(n), f"{c['diff']:+.3f}", f"{c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f}"]
                        for n, c in comps.items()]))
    s.append("</section>")
    s += ["<section><h2>Training</h2>", img(charts.learning_curves(m.get("history", []), recipe.get("metric", "")),
                                            "learning curves"),
          f'<p>Best epoch kept: {m.get("best_epoch")}; stopped early: {m.get("stopped_early")}; '
          f'{m.get("train_samples_per_second", 0):.0f} training rows/s.{stage_times(m)}</p></section>', _retention(m.get("retention")),
          audit_section(audit)]
    return page(name, s, recipe_doc)


def _retention(r: dict | None) -> str:
    """What fine-tuning kept of the untouched encoder (evaluate/retention.py's STS Spearman or linear CKA)."""
    if r and r.get("kind") == "sts_spearman":
        return (f'<section><h2>Knowledge retention</h2><p>Spearman of cosine similarity against the scores of '
                f'{r["n"]} pairs of <code>{escape(str(r.get("file")))}</code>: {r["before"]:.3f} before, '
                f'<b>{r["after"]:.3f}</b> after ({r["change"]:+.3f}).</p></section>')
    if r and r.get("kind") == "linear_cka":
        return (f'<section><h2>Knowledge retention</h2><p>No <code>--retention-data</code> given: linear CKA between '
                f'the untouched and the fine-tuned encoder on {r["n"]} test texts: <b>{r["cka"]:.3f}</b> (1 = '
                f'unchanged).</p></section>')
    return ""


def render_card(name: str, m: dict, recipe_doc: dict) -> str:
    recipe = recipe_doc.get("recipe", {})
    cols = _cols(m)
    front = {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
             "tags": ["tunesmith", "sentence-transformers", "feature-extraction", str(recipe.get("strategy"))]}
    base = _base_model(recipe.get("model", ""))
    if base:
        front["base_model"] = base
    L = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "", f"# {name}", "",
         f"A sentence-embedding model fine-tuned from `{recipe.get('model')}` with tunesmith on "
         f"`{recipe.get('train')}` ({m.get('form')}).", "", f"**Verdict:** {m.get('verdict', '-')}", "",
         "## Evaluation", "", "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for n, r in _rows(m):
        L.append(f"| {n} | " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else "-" for c in cols) + " |")
    L += ["", "## How to use", "", "```python", "from sentence_transformers import SentenceTransformer", "",
          'model = SentenceTransformer("path/to/run/model")', 'vectors = model.encode(["your text"])', "```", "",
          "Vectors are mean-pooled and unit length: cosine similarity is their dot product.", "",
          "## Training procedure", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", ""]
    return "\n".join(L)
