"""report.html, MODEL_CARD.md and the CLI summary of a sequence-to-sequence run: the metrics of the tuned
model against copying the source and the untouched model (with intervals and paired differences), the
learning curves, and test pairs side by side (source, reference, before, after) with the largest chrF
regressions marked."""
from __future__ import annotations

from html import escape

import yaml

from tunesmith.report import charts
from tunesmith.report.card import _base_model
from tunesmith.report.html import audit_section, fmt, img, page, stage_times, table
from tunesmith.tasks.seq2seq.metrics import METRICS, NAMES

ROWS = {"copy_source": "copy the source", "zero_shot": "untouched model (zero-shot)",
        "few_shot_retrieval": "untouched model (retrieval few-shot)"}


def _search(g: dict) -> str:
    if g.get("prompt_template") is not None:  # a decoder-only run (tasks/seq2seq/decoder.py)
        return (f'greedy, at most {g.get("max_new_tokens")} new tokens, prompt template '
                f'{escape(repr(g["prompt_template"]))}')
    return (f'beam search of {g.get("num_beams")} beams, at most {g.get("max_new_tokens")} new tokens, length '
            f'penalty {g.get("length_penalty")}')


def _rows(m: dict) -> list[tuple[str, dict]]:
    return [(ROWS.get(k, k), v) for k, v in m.get("baselines", {}).items()] + [("fine-tuned", m.get("test", {}))]


def render_html(name: str, m: dict, recipe_doc: dict, audit=None) -> str:
    recipe = recipe_doc.get("recipe", {})
    t, g = m.get("test", {}), m.get("generation", {})
    v = m.get("verdict", "")
    tone = "" if v.startswith("fine-tuning beat every") else ("bad" if "WORSE" in v else "meh")
    cols = list(METRICS) + ["loss"]
    s = [f"<h1>tunesmith report: {escape(name)}</h1>",
         f'<div class="sub">sequence to sequence · model {escape(str(recipe.get("model")))} · strategy '
         f'{escape(str(recipe.get("strategy")))} · {t.get("n", "?")} test pairs · {_search(g)}</div>',
         f'<section class="verdict {tone}"><b>Verdict.</b> {escape(v or "no verdict")}</section>',
         "<section><h2>Fine-tuned vs baselines (test pairs)</h2>",
         table(["model"] + [NAMES.get(c, "teacher-forced loss") + (" [95% CI]" if c != "loss" else "") for c in cols],
               [[escape(n)] + [fmt(r.get(c), r.get("ci95", {}).get(c)) for c in cols] for n, r in _rows(m)],
               ["ft" if n == "fine-tuned" else "" for n, _ in _rows(m)])]
    comp = m.get("comparison", {})
    if comp:
        s.append(table(["fine-tuned minus"] + [NAMES[c] + " [95% CI]" for c in METRICS],
                       [[escape(ROWS.get(k, k))] + [f'{c[x]["diff"]:+.3f} <span class="sub">[{c[x]["ci95"][0]:+.3f}, '
                                                   f'{c[x]["ci95"][1]:+.3f}]</span>' for x in METRICS]
                        for k, c in comp.items()]))
    sig = m.get("signatures", {})
    s.append(f'<p class="sub">chrF and BLEU are corpus scores on 0-100 from sacrebleu ({escape(sig.get("chrf", ""))}; '
             f'{escape(sig.get("bleu", ""))}); ROUGE-L is rouge-score\'s LCS F-measure over lower-cased Unicode words, '
             f'averaged over pairs; exact match compares texts with whitespace collapsed. Intervals and paired '
             f'differences resample test pairs (1000 paired bootstrap draws). The loss is per target token, '
             f'teacher-forced.</p></section>')
    h = m.get("history", [])
    vals = ", ".join(f'{x["epoch"]}: {x["val_chrf"]:.1f}' for x in h if "val_chrf" in x)
    s += ["<section><h2>Training</h2>", img(charts.learning_curves(h, "none"), "loss curves"),
          f'<p>Best epoch kept: {m.get("best_epoch")}; stopped early: {m.get("stopped_early")}; '
          f'{m.get("train_tokens_per_second", 0):.0f} train tokens/s.'
          + (f" Validation chrF (greedy) by epoch: {escape(vals)}." if vals else "")
          + f' Texts over --max-length, cut: {escape(str(m.get("data", {}).get("cut", {})))}.{stage_times(m)}</p></section>']
    rows = m.get("samples", [])
    if rows:
        body, classes = [], []
        for x in rows:
            mark = f'<span class="flag">regression #{x["regression"]}</span><br>' if x.get("regression") else ""
            body.append([f'{mark}{x["row"]}', escape(x["source"]), escape(x["reference"]),
                         escape(x["before"] or "-") + (f' <span class="sub">{x["chrf_before"]:.1f}</span>'
                                                       if x.get("chrf_before") is not None else ""),
                         escape(x["after"]) + f' <span class="sub">{x["chrf_after"]:.1f}</span>'])
            classes.append("")
        s += ["<section><h2>Test pairs side by side</h2>",
              f'<p class="sub">The first test pairs and the {sum(1 for x in rows if x.get("regression"))} whose '
              f'sentence chrF (small grey figure) fell most from the untouched model\'s, marked.</p>',
              table(["row", "source", "reference", "before (untouched)", "after (fine-tuned)"], body, classes)
              .replace("<td>", '<td style="text-align:left;vertical-align:top">'), "</section>"]
    s.append(audit_section(audit))
    return page(name, s, recipe_doc)


def render_card(name: str, m: dict, recipe_doc: dict) -> str:
    recipe = recipe_doc.get("recipe", {})
    template = m.get("generation", {}).get("prompt_template")
    front = {"library_name": "transformers",
             "pipeline_tag": "text2text-generation" if template is None else "text-generation",
             "tags": ["tunesmith", "seq2seq", str(recipe.get("strategy"))]}
    base = _base_model(recipe.get("model", ""))
    if base:
        front["base_model"] = base
    L = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", f"# {name}", "",
         (f"A decoder fine-tuned from `{recipe.get('model')}` with tunesmith ({recipe.get('strategy')}) on "
          f"`{recipe.get('train')}`, each source given as the user turn {template!r}." if template is not None else
          f"An encoder-decoder fine-tuned from `{recipe.get('model')}` with tunesmith ({recipe.get('strategy')}) on "
          f"`{recipe.get('train')}`."), "", m.get("verdict", ""), "",
         "| model | " + " | ".join(NAMES[c] for c in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for n, r in _rows(m):
        L.append(f"| {n} | " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else "-" for c in METRICS) + " |")
    if template is not None:  # a decoder-only run: the prompt is the template's user turn, chat-rendered
        L += ["", "## Use", "", "```python", "from transformers import pipeline", "",
              'gen = pipeline("text-generation", model="model")  # generation_config.json holds the run\'s greedy search',
              f"turn = {template!r}.replace(\"{{source}}\", \"your text\")",
              'print(gen([{"role": "user", "content": turn}])[0]["generated_text"][-1]["content"])',
              "```", "", "(A tokenizer without a chat template: prompt with tunesmith's plain `### Instruction:` / "
              "`### Response:` headers, as `tunesmith predict` does.)", ""]
        return "\n".join(L)
    L += ["", "## Use", "", "```python", "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer", "",
          'model = AutoModelForSeq2SeqLM.from_pretrained("model")  # generation_config.json holds the run\'s search',
          'tok = AutoTokenizer.from_pretrained("model")',
          'out = model.generate(**tok(["your text"], return_tensors="pt", return_token_type_ids=False))',
          "print(tok.batch_decode(out, skip_special_tokens=True))", "```", ""]
    return "\n".join(L)


def summary(m: dict, n_samples: int = 3) -> str:
    """What `tunesmith train --task seq2seq` prints at the end."""
    lines = []
    for n, r in _rows(m):
        lines.append(f"{n:28s} " + "  ".join(f"{NAMES[c]} {r.get(c, 0):.3f}" for c in METRICS))
    for x in m.get("samples", [])[:n_samples]:
        lines += [f"--- row {x['row']}: {x['source'][:200]}", f"  reference: {x['reference'][:200]}",
                  f"  after:     {x['after'][:200]}"]
    if m.get("verdict"):
        lines.append(m["verdict"])
    return "\n".join(lines)
