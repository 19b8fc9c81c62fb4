"""compare.html: the comparison of runs in report.html's style (report/html.py's page, table and fmt: inline
CSS, a Content-Security-Policy that blocks every request, no scripts)."""
from __future__ import annotations

from html import escape
from pathlib import Path

from tunesmith.compare.pairwise import points
from tunesmith.evaluate.verdict import metric_name
from tunesmith.report.html import fmt, page, table


TOP_CLASSES = 20  # per-class rows shown open; the rest behind a <details>


def _v(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return '<span class="sub">-</span>'
    return escape(str(v))


def _pts(x: float) -> str:
    return points(100 * x)


def _delta(x) -> str:
    if not isinstance(x, (int, float)):
        return "-"
    cls = "ok" if x > 0.0005 else "flag" if x < -0.0005 else ""
    return f'<span class="{cls}">{x:+.3f}</span>'


def render(doc: dict) -> str:
    runs, pairs = doc["runs"], doc["pairs"]
    names = [r["name"] for r in runs]
    title = " vs ".join(names)
    metric, shown = doc["metric"], doc["metrics"]
    s = [f"<h1>tunesmith compare: {escape(title)}</h1>",
         f'<div class="sub">task {escape(str(doc["task"]))} · {doc["n"]} test rows · measured on '
         f'{escape(str(doc["data"]["how"]))} · paired bootstrap, {doc["n_boot"]} resamples of the test rows</div>']
    for p in pairs:
        tone = "" if p["significant"] else "meh"
        s.append(f'<section class="verdict {tone}"><b>Verdict.</b> {escape(p["verdict"])}.</section>')

    # the test metrics of every run, and each later run's difference with the first
    rows = []
    for i, r in enumerate(runs):
        cells = [escape(r["name"]) + (' <span class="sub">(reference)</span>' if i == 0 else "")]
        cells += [fmt(r["scores"].get(c), r["ci95"].get(c)) for c in shown]
        if i == 0:
            cells.append("")
        else:
            d = pairs[i - 1]["diffs"][metric]
            cells.append(f'{_pts(d["diff"])} <span class="sub">[{_pts(d["ci95"][0])}, {_pts(d["ci95"][1])}]</span>')
        rows.append(cells)
    head = ["run"] + [metric_name(c) + " [95% CI]" for c in shown] + [f"Δ {metric_name(metric)} vs {names[0]} (points) [95% CI]"]
    s += ["<section><h2>Test metrics</h2>", table(head, rows, ["ft"] + [""] * (len(rows) - 1))]

    rows = []
    for p in pairs:
        for c, d in p["diffs"].items():
            sig = d["ci95"][0] > 0 or d["ci95"][1] < 0
            rows.append([escape(f'{p["b"]} − {p["a"]}'), escape(metric_name(c)), _pts(d["diff"]),
                         f'{_pts(d["ci95"][0])} to {_pts(d["ci95"][1])}',
                         fmt(d.get("p_not_better")) if "p_not_better" in d else "-",
                         f'<span class="{"ok" if sig else ""}">{"yes" if sig else "no"}</span>'])
    s.append("<p>Each resample draws test rows with replacement and scores both runs on the same rows, so "
             "the noise of the test set they share cancels. A difference is significant when its 95% "
             "interval leaves out zero.</p>")
    s.append(table(["difference", "metric", "points", "95% CI (points)", "share of resamples where the second is not better",
                    "significant"], rows))
    agree = [p for p in pairs if "agreement" in p]
    if agree:
        rows = [[escape(f'{p["a"]} / {p["b"]}'), f'{100 * p["agreement"]:.1f}%', str(p["only_a_right"]),
                 str(p["only_b_right"])] for p in agree]
        s.append(table(["runs", "same prediction", "rows only the first gets right", "rows only the second gets right"],
                       rows))
    s.append("</section>")

    diffs = doc.get("recipe_differences") or []
    s.append("<section><h2>Recipe differences</h2>")
    if diffs:
        s.append(table(["setting"] + [escape(n) for n in names],
                       [[escape(d["setting"])] + [_v(v) for v in d["values"]] for d in diffs]))
    else:
        s.append("<p>The runs' recipes are the same (but for their folders).</p>")
    env = doc.get("environment_differences") or []
    if env:
        s.append("<details><summary>environment differences (versions, device, engine)</summary>"
                 + table(["fact"] + [escape(n) for n in names],
                         [[escape(d["setting"])] + [_v(v) for v in d["values"]] for d in env]) + "</details>")
    s.append("</section>")

    pc = doc.get("per_class")
    if pc:
        head = ["label", "support"] + [f"F1 {escape(n)}" for n in names] + [f"Δ {escape(n)}" for n in names[1:]]
        rows = [[escape(str(r["label"])), str(r["support"])] + [fmt(f) for f in r["f1"]] + [_delta(x) for x in r["delta"]]
                for r in pc]
        s += ["<section><h2>Per class</h2>",
              f'<p class="sub">F1 per class on the same test rows, largest change first ({len(rows)} classes).</p>',
              table(head, rows[:TOP_CLASSES])]
        if len(rows) > TOP_CLASSES:
            s.append(f"<details><summary>the other {len(rows) - TOP_CLASSES} classes</summary>"
                     + table(head, rows[TOP_CLASSES:]) + "</details>")
        s.append("</section>")
    sl = doc.get("slices")
    if sl:
        head = ["slice", "rows"] + [f"{metric_name(sl['metric'])} {escape(n)}" for n in names] + \
               [f"Δ {escape(n)}" for n in names[1:]]
        rows = [[escape(str(r["slice"])), str(r["n"])] + [fmt(v, c) for v, c in zip(r["values"], r["ci95"])]
                + [_delta(x) for x in r["delta"]] for r in sl["rows"]]
        s += [f"<section><h2>Slices by '{escape(str(sl['column']))}'</h2>", table(head, rows), "</section>"]
    return page(f"compare {title}", s, doc.get("recipes") or {})


def write_compare(doc: dict, out: Path) -> Path:
    from tunesmith.run import write_text_atomic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, render(doc))  # written beside and renamed: never half a page under the final name
    return out
