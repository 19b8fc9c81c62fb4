"""report.html: one self-contained page (inline CSS, images as data: URIs, no scripts, no network)."""
from __future__ import annotations

from html import escape

import yaml

from tunesmith.evaluate.verdict import baseline_name, metric_name
from tunesmith.report import charts

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1f2937}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:0 0 12px}
.sub{color:#6b7280;font-size:13px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:18px 22px;margin:16px 0}
.verdict{border-left:6px solid #2563eb;font-size:17px;line-height:1.5}
.verdict.bad{border-left-color:#dc2626} .verdict.meh{border-left-color:#f59e0b}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left} th{background:#f3f4f6}
tr.ft td{font-weight:600;background:#eff6ff}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px;align-items:start}
pre{background:#f3f4f6;padding:10px;border-radius:6px;font-size:12px;overflow:auto;max-height:420px}
.flag{color:#dc2626;font-weight:600} .ok{color:#059669;font-weight:600}
details summary{cursor:pointer;color:#2563eb}
"""


# Enforced by the browser: the page cannot fetch anything, so it is the same offline as online.
CSP = ('<meta http-equiv="Content-Security-Policy" '
       'content="default-src \'none\'; img-src data:; style-src \'unsafe-inline\'">')


def img(b64: str | None, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/svg+xml;base64,{b64}">' if b64 else ""


def fmt(v, ci=None) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    s = f"{v:.3f}" if isinstance(v, float) else str(v)
    return s + (f' <span class="sub">[{ci[0]:.3f}, {ci[1]:.3f}]</span>' if ci else "")


def stages_shown(m: dict) -> list[tuple[str, float]]:
    """(stage, seconds) of metrics.json's stage_seconds worth showing (0.1 s or more), in the order they ran."""
    return [(k.replace("_", " "), v) for k, v in (m.get("stage_seconds") or {}).items() if v >= 0.1]


def stage_times(m: dict) -> str:
    """' Time by stage: audit 1.3 s, ... (wall 19 s).' from metrics.json's stage_seconds; '' without them."""
    spent = [f"{escape(k)} {v:.1f} s" for k, v in stages_shown(m)]
    since = ", since the resume" if m.get("resumed") else ""
    return f" Time by stage: {', '.join(spent)} (wall {m.get('wall_seconds', 0):.0f} s{since})." if spent else ""


def table(head: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    body = "".join(f'<tr class="{(classes or [""] * len(rows))[i]}">' + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                   for i, r in enumerate(rows))
    return f"<table><tr>{h}</tr>{body}</table>"


def metrics_table(m: dict, cols: list[str]) -> str:
    rows, classes = [], []
    for name, b in m.get("baselines", {}).items():
        if "skipped" in b:
            rows.append([escape(baseline_name(name))] + ["-"] * len(cols) + [f'<span class="sub">skipped: {escape(b["skipped"])}</span>'])
        else:
            rows.append([escape(baseline_name(name))] + [fmt(b.get(c), b.get("ci95", {}).get(c)) for c in cols] + [""])
        classes.append("")
    t = m.get("test", {})
    rows.append(["fine-tuned"] + [fmt(t.get(c), t.get("ci95", {}).get(c)) for c in cols] + [""])
    classes.append("ft")
    return table(["model"] + [metric_name(c) + " [95% CI]" for c in cols] + [""], rows, classes)


SEVERITY = {"error": 0, "warning": 1, "info": 2, "ok": 3}


def audit_section(audit) -> str:
    """The audit's checks (audit.json, or the summary kept in metrics) worst first, then the full document."""
    if not audit:
        return ""
    checks = audit if isinstance(audit, list) else audit.get("checks", []) if isinstance(audit, dict) else []
    checks = [c for c in checks if isinstance(c, dict)]
    parts = []
    if isinstance(audit, dict):
        facts = [f"{k}: {escape(str(v))}" for k, v in audit.items() if k in ("rows", "model", "seconds")]
        parts.append(f'<p class="sub">{" · ".join(facts)}</p>' if facts else "")
    if checks:
        rows = []
        for c in sorted(checks, key=lambda c: SEVERITY.get(c.get("severity"), 9)):
            sev = escape(str(c.get("severity", "")))
            where = ", ".join(map(str, (c.get("rows") or [])[:5])) + (" …" if len(c.get("rows") or []) > 5 else "")
            rows.append([escape(str(c.get("name", ""))), f'<span class="{"flag" if sev == "error" else "ok" if sev == "ok" else ""}">{sev}</span>',
                         str(c.get("count", "")), escape(where), escape(str(c.get("fix") or ""))[:160]])
        parts.append(table(["check", "severity", "count", "rows", "what to do"], rows))
    parts.append(f"<details><summary>full audit</summary><pre>{escape(yaml.safe_dump(audit, sort_keys=False, allow_unicode=True))}</pre></details>")
    return "<section><h2>Data audit</h2>" + "".join(parts) + "</section>"


def render(name: str, m: dict, recipe_doc: dict, audit=None, cols=("accuracy", "macro_f1")) -> str:
    """A classification run's page; `cols`: the test metrics its task shows."""
    metric = "macro_f1"
    cols = list(cols)
    comp = m.get("comparison") or {}
    tone = "" if comp.get("significant") else ("bad" if comp and comp["ci95"][1] < 0 else "meh")
    s = [f"<h1>tunesmith report: {escape(name)}</h1>",
         f'<div class="sub">task {escape(str(m.get("task")))} · {len(m.get("labels", []))} labels · '
         f'{m.get("test", {}).get("n", "?")} test rows · model {escape(str(recipe_doc.get("recipe", {}).get("model")))}'
         f' · strategy {escape(str(recipe_doc.get("recipe", {}).get("strategy")))}</div>',
         f'<section class="verdict {tone}"><b>Verdict.</b> {escape(m.get("verdict", "no verdict"))}</section>',
         "<section><h2>Fine-tuned vs baselines (test set)</h2>", metrics_table(m, cols),
         img(charts.comparison(m, metric), "baselines vs fine-tuned"),
         ]
    if comp:
        s.append(f'<p>Paired bootstrap against <b>{escape(baseline_name(comp["baseline"]))}</b> on the same test rows: '
                 f'difference {100 * comp["diff"]:+.1f} {metric_name(comp["metric"])} points, 95% CI '
                 f'{100 * comp["ci95"][0]:.1f} to {100 * comp["ci95"][1]:.1f}; share of resamples where the fine-tune '
                 f'was not better: {comp["p_not_better"]:.3f}.</p>')
    s.append("</section>")
    of = m.get("overfitting", {})
    s += ["<section><h2>Training</h2>", img(charts.learning_curves(m.get("history", []), metric), "learning curves"),
          f'<p>Overfitting: <span class="{"flag" if of.get("flag") else "ok"}">{"yes" if of.get("flag") else "no"}</span>'
          f' — {escape(of.get("reason", "no validation history"))}. Best epoch kept: {m.get("best_epoch")}; '
          f'stopped early: {m.get("stopped_early")}; {m.get("train_samples_per_second", 0):.0f} train samples/s.'
          f'{stage_times(m)}</p></section>']
    cal = m.get("calibration", {})
    s += ['<section><h2>Errors and calibration</h2><div class="grid"><div>',
          img(charts.reliability(cal), "reliability diagram"),
          f'<p>Expected calibration error on test: {fmt(cal.get("test_ece_before"))} raw, {fmt(cal.get("test_ece_after"))} '
          f'with temperature {cal.get("temperature", 1.0):.2f} '
          f'({escape("fitted on validation" if cal.get("fitted_on") else cal.get("note", "not fitted"))}). '
          f'<code>tunesmith predict</code> uses this temperature for its scores.</p></div><div>',
          img(charts.per_class(m.get("per_class", {})), "per-class F1"), "</div></div>",
          img(charts.confusion(m["confusion"], m.get("labels", [])), "confusion matrix") if m.get("confusion") else ""]
    pc = m.get("per_class", {})
    rows = [[escape(k), fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), str(v["support"])]
            for k, v in sorted(pc.items(), key=lambda kv: kv[1]["f1"])]
    s.append(f"<details><summary>per-class precision / recall / F1 ({len(rows)} classes)</summary>"
             + table(["label", "precision", "recall", "F1", "support"], rows) + "</details></section>")
    sl = m.get("slices")
    if sl:
        rows = [[escape(str(k)), str(v["n"])] + [fmt(v.get(c), v.get("ci95", {}).get(c)) for c in cols] for k, v in sl["slices"].items()]
        gap = f'<p>Gap between best (<b>{escape(str(sl["best"]))}</b>) and worst (<b>{escape(str(sl["worst"]))}</b>) slice: ' \
              f'{sl["gap"]:.3f} {metric_name(sl["metric"])}.</p>' if "gap" in sl else ""
        s += [f"<section><h2>Slices by '{escape(str(sl.get('column')))}'</h2>", img(charts.slices(sl), "per-slice chart"),
              gap, table(["slice", "rows"] + [metric_name(c) for c in cols], rows), "</section>"]
    r = m.get("retention")
    if r:
        s.append("<section><h2>Knowledge retention</h2>")
        if r.get("kind") == "sts_spearman":
            s += [img(charts.retention(r), "retention"),
                  f'<p>Spearman correlation of cosine similarity with human scores on {r["n"]} pairs of '
                  f'<code>{escape(r["file"])}</code>: {r["before"]:.3f} before, {r["after"]:.3f} after '
                  f'({r["change"]:+.3f}).</p>']
        else:
            s.append(f'<p>No retention data given (<code>--retention-data</code>). Representation drift on {r["n"]} of your '
                     f'test texts: linear CKA between base and fine-tuned encoder = <b>{r["cka"]:.3f}</b> '
                     f'(1 = unchanged; lower means the encoder moved further from what it knew).</p>')
        s.append("</section>")
    s.append(audit_section(audit))
    return page(name, s, recipe_doc)


def page(name: str, sections: list[str], recipe_doc: dict) -> str:
    """The whole document: the sections, then the recipe, in the shared style."""
    recipe = f"<section><h2>Recipe</h2><pre>{escape(yaml.safe_dump(recipe_doc, sort_keys=False, allow_unicode=True))}</pre></section>"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tunesmith report: {escape(name)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{CSP}<style>{CSS}</style></head>'
            f'<body><main>{"".join(sections)}{recipe}</main></body></html>')
