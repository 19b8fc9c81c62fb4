"""report.html and MODEL_CARD.md of a token-classification run, drawn with report/'s primitives: entity
P/R/F1 against the baselines, per-type F1 with intervals, entities seen vs unseen in training, a confusion
matrix of entity types with "missed" and "spurious", the learning curves and the audit."""
from __future__ import annotations

from html import escape

import yaml

from tunesmith.evaluate.verdict import baseline_name
from tunesmith.report import charts
from tunesmith.report.card import _base_model
from tunesmith.report.html import audit_section, fmt, img, page, stage_times, table

COLS = ("precision", "recall", "f1", "token_accuracy")
NAMES = {"precision": "entity precision", "recall": "entity recall", "f1": "entity F1",
         "token_accuracy": "token accuracy (side figure)"}


def _rows(m: dict) -> list[tuple[str, dict]]:
    rows = [(baseline_name(k), v) for k, v in m.get("baselines", {}).items()]
    return rows + [("fine-tuned", m.get("test", {}))]


def render_html(name: str, m: dict, recipe_doc: dict, audit=None) -> str:
    recipe = recipe_doc.get("recipe", {})
    t = m.get("test", {})
    comp = m.get("comparison") or {}
    tone = "" if comp.get("significant") else ("bad" if comp and comp["ci95"][1] < 0 else "meh")
    d = m.get("data", {})
    s = [f"<h1>tunesmith report: {escape(name)}</h1>",
         f'<div class="sub">token classification · {len(m.get("types", []))} entity types · {t.get("n", "?")} test '
         f'sentences, {t.get("entities", "?")} entities · {escape(str(d.get("format")))} data, '
         f'{escape(str(d.get("scheme")))} tags · model {escape(str(recipe.get("model")))} · strategy '
         f'{escape(str(recipe.get("strategy")))}</div>',
         f'<section class="verdict {tone}"><b>Verdict.</b> {escape(m.get("verdict", "no verdict"))}</section>',
         "<section><h2>Fine-tuned vs baselines (test set)</h2>",
         table(["model"] + [NAMES[c] + " [95% CI]" for c in COLS],
               [[escape(n)] + [fmt(r.get(c), r.get("ci95", {}).get(c)) for c in COLS] for n, r in _rows(m)],
               ["ft" if n == "fine-tuned" else "" for n, _ in _rows(m)]),
         '<p class="sub">Entities count when type and span both match (seqeval, micro over all entities); '
         'intervals resample test sentences. Majority: every word O. Dictionary: every training entity\'s '
         'words tagged wherever they appear. Probe: a logistic regression on the frozen encoder\'s embedding of '
         'each word.</p>']
    if comp:
        s.append(f'<p>Paired bootstrap against <b>{escape(baseline_name(comp["baseline"]))}</b> on the same test '
                 f'sentences: {100 * comp["diff"]:+.1f} entity-F1 points, 95% CI {100 * comp["ci95"][0]:.1f} to '
                 f'{100 * comp["ci95"][1]:.1f}.</p>')
    s.append("</section>")
    per = t.get("per_type", {})
    rows = [[escape(k), fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"], v.get("ci95")), str(v["support"])]
            for k, v in sorted(per.items(), key=lambda kv: -kv[1]["support"])]
    s += ["<section><h2>Per entity type (test)</h2>",
          table(["type", "precision", "recall", "F1 [95% CI]", "gold entities"], rows)]
    su = m.get("seen_unseen")
    if su:
        s += ["<h2>Entities seen vs unseen in training</h2>",
              table(["test entities", "count", "precision", "recall", "F1"],
                    [[side, str(su[side]["entities"]), fmt(su[side]["precision"]), fmt(su[side]["recall"]),
                      fmt(su[side]["f1"])] for side in ("seen", "unseen")]),
              f'<p class="sub">{100 * su["share_seen"]:.1f}% of the test entities were tagged (as any type) in '
              f'training. Unseen-entity F1 is what generalises.</p>']
    cm = m.get("confusion")
    if cm:
        head = ["gold \\ predicted"] + [escape(c) for c in cm["columns"]]
        body = [[escape(r)] + [str(x) for x in row] for r, row in zip(cm["rows"], cm["matrix"])]
        s += ["<h2>Entity types confused</h2>", table(head, body),
              '<p class="sub">Entities matched by span. "missed": no predicted entity with the gold span; '
              '"spurious": no gold entity with the predicted span (a wrong boundary is one of each).</p>']
    s.append("</section>")
    win = d.get("windowed", {})
    s += ["<section><h2>Training</h2>", img(charts.learning_curves(m.get("history", []), "f1"), "learning curves"),
          f'<p>Best epoch kept: {m.get("best_epoch")}; stopped early: {m.get("stopped_early")}; '
          f'{m.get("train_samples_per_second", 0):.0f} train sentences/s. Sentences over --max-length read in '
          f'windows: {escape(", ".join(f"{k} {v}" for k, v in win.items()) or "none")}.{stage_times(m)}</p></section>']
    r = m.get("retention")
    if r and r.get("kind") == "linear_cka":
        s.append(f'<section><h2>Knowledge retention</h2><p>Linear CKA between the base and fine-tuned encoder on '
                 f'{r["n"]} test texts: <b>{r["cka"]:.3f}</b> (1 = unchanged).</p></section>')
    elif r and r.get("kind") == "sts_spearman":
        s.append(f'<section><h2>Knowledge retention</h2><p>Spearman on {r["n"]} pairs: {r["before"]:.3f} before, '
                 f'{r["after"]:.3f} after.</p></section>')
    s.append(audit_section(audit))
    return page(name, s, recipe_doc)


def render_card(name: str, m: dict, recipe_doc: dict) -> str:
    recipe = recipe_doc.get("recipe", {})
    t = m.get("test", {})
    ci = t.get("ci95", {})
    front = {"library_name": "transformers", "pipeline_tag": "token-classification",
             "tags": ["tunesmith", "token-classification", "ner", str(recipe.get("strategy"))]}
    base = _base_model(recipe.get("model", ""))
    if base:
        front["base_model"] = base
    front["model-index"] = [{"name": name, "results": [{
        "task": {"type": "token-classification", "name": "Token Classification"},
        "metrics": [{"type": k, "name": f"test entity {k}", "value": round(t[k], 4),
                     **({"args": {"ci95": [round(x, 4) for x in ci[k]]}} if k in ci else {})}
                    for k in ("precision", "recall", "f1") if isinstance(t.get(k), float)]}]}]
    L = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "", f"# {name}", "",
         f"A named-entity tagger fine-tuned from `{recipe.get('model')}` with tunesmith (strategy "
         f"`{recipe.get('strategy')}`) on `{recipe.get('train')}`; entity types: "
         f"{', '.join('`%s`' % x for x in m.get('types', []))}.", "", f"**Verdict:** {m.get('verdict', '-')}", "",
         "## Evaluation", "", "Entity-level scores (type and span must match; 95% bootstrap intervals over test "
         "sentences):", "", "| model | " + " | ".join(NAMES[c] for c in COLS) + " |", "|---|" + "---|" * len(COLS)]
    for n, r in _rows(m):
        L.append(f"| {n} | " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else "-" for c in COLS) + " |")
    L += ["", "| type | precision | recall | F1 | gold entities |", "|---|---|---|---|---|"]
    for k, v in sorted(t.get("per_type", {}).items(), key=lambda kv: -kv[1]["support"]):
        L.append(f"| {k} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |")
    su = m.get("seen_unseen")
    if su:
        L += ["", f"Entities seen in training: F1 {su['seen']['f1']:.3f} ({su['seen']['entities']} entities); "
                  f"unseen: F1 {su['unseen']['f1']:.3f} ({su['unseen']['entities']}).", ""]
    L += ["## How to use", "", "```python", "from transformers import pipeline", "",
          'ner = pipeline("token-classification", model="path/to/run/model", aggregation_strategy="simple")',
          'print(ner("your text"))', "```", "",
          "`tunesmith predict` and `tunesmith serve` give the same entities with character offsets, and read "
          "texts longer than the model's length in overlapping windows.", "",
          "## Training procedure", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", ""]
    return "\n".join(L)
