"""report.html and MODEL_CARD.md of an instruction-tuning run: before/after/baselines table, loss curves,
and the held-out prompts' generations side by side (base model, retrieval few-shot, fine-tuned)."""
from __future__ import annotations

from html import escape

import yaml

from tunesmith.report import charts
from tunesmith.report.card import _base_model
from tunesmith.report.html import fmt, img, page, stage_times, table

COLS = [("loss", "held-out loss"), ("perplexity", "perplexity"), ("rouge_l", "ROUGE-L"),
        ("stop_rate", "stop rate"), ("mean_new_tokens", "mean new tokens"), ("exact_match", "exact match")]


def _rows(m: dict) -> list[tuple[str, dict]]:
    b, a = m["before"], m["after"]
    rows = [("base model, zero-shot", {"loss": b["loss"], "perplexity": b["perplexity"], **b["generation"]})]
    if "few_shot_retrieval" in m.get("baselines", {}):
        fs = m["baselines"]["few_shot_retrieval"]
        rows.append((f"base model, retrieval {fs.get('k', '')}-shot", fs))
    rows.append(("fine-tuned", {"loss": a["loss"], "perplexity": a["perplexity"], **a["generation"]}))
    return rows


def render_html(name: str, m: dict, recipe_doc: dict) -> str:
    recipe = recipe_doc.get("recipe", {})
    rows = _rows(m)
    v = m.get("verdict", "")
    tone = "" if v.startswith("verdict: fine-tuning beat every") else ("bad" if "did NOT" in v else "meh")
    s = [f"<h1>tunesmith report: {escape(name)}</h1>",
         f'<div class="sub">instruction tuning ({escape(str(m.get("format")))} format) · model '
         f'{escape(str(recipe.get("model")))} · strategy {escape(str(recipe.get("strategy")))} · '
         f'{m["after"]["tokens"]} held-out response tokens · {m["after"]["generation"]["n"]} generations</div>',
         f'<section class="verdict {tone}"><b>Verdict.</b> {escape(m.get("verdict", "no verdict"))}</section>',
         "<section><h2>Fine-tuned vs prompting the base model (held-out rows)</h2>",
         table(["model"] + [c for _, c in COLS],
               [[escape(n)] + [fmt(r.get(k)) for k, _ in COLS] for n, r in rows],
               ["ft" if n == "fine-tuned" else "" for n, _ in rows]),
         '<p class="sub">Loss and perplexity are per response token. The loss is not defined for the few-shot '
         'prompt, which is a different input. Stop rate is the share of generations that ended with EOS before '
         f'{recipe.get("max_new_tokens")} new tokens. Exact match covers answers of ten words or fewer.</p></section>',
         "<section><h2>Training</h2>", img(charts.learning_curves(m.get("history", []), "none"), "loss curves"),
         f'<p>Best epoch kept: {m.get("best_epoch")}; stopped early: {m.get("stopped_early")}; '
         f'{m.get("train_tokens_per_second", 0):.0f} train tokens/s. Rows over --max-length: '
         f'{escape(str(m.get("data", {}).get("train", {})))}.{stage_times(m)}</p></section>']
    samples = m.get("samples", [])
    if samples:
        head = ["prompt", "reference", "base model"] + (["retrieval few-shot"] if "few_shot" in samples[0] else []) + \
            ["fine-tuned"]
        body = [[escape(x["prompt"][:600]), escape(x["reference"][:600]), escape(x["before"])]
                + ([escape(x["few_shot"])] if "few_shot" in x else []) + [escape(x["after"])] for x in samples]
        s += ["<section><h2>Generations side by side</h2>",
              table(head, body).replace("<td>", '<td style="text-align:left;vertical-align:top;white-space:pre-wrap">'),
              "</section>"]
    return page(name, s, recipe_doc)


def render_card(name: str, m: dict, recipe_doc: dict) -> str:
    recipe = recipe_doc.get("recipe", {})
    front = {"library_name": "transformers", "pipeline_tag": "text-generation",
             "tags": ["tunesmith", "sft", str(recipe.get("strategy"))]}
    base = _base_model(recipe.get("model", ""))
    if base:
        front["base_model"] = base
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", f"# {name}", "",
             f"Instruction-tuned from `{recipe.get('model')}` with tunesmith ({recipe.get('strategy')}) on "
             f"`{recipe.get('train')}` ({m.get('format')} format).", "", m.get("verdict", ""), "",
             "| model | " + " | ".join(c for _, c in COLS) + " |", "|---" * (len(COLS) + 1) + "|"]
    for n, r in _rows(m):
        lines.append(f"| {n} | " + " | ".join(f"{r[k]:.3f}" if isinstance(r.get(k), float) else "-" for k, _ in COLS)
                     + " |")
    lines += ["", "## Use", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              'model = AutoModelForCausalLM.from_pretrained("model")  # merged weights; the LoRA adapter is in adapter/',
              'tok = AutoTokenizer.from_pretrained("model")', "```", ""]
    return "\n".join(lines)
