"""What a study shows: the live table, the leaderboard, tune.json and the plots of tune_report.html."""
from __future__ import annotations

import html
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.table import Table

from tunesmith.run import write_json

SHOWN = ("lr", "batch_size", "epochs", "max_length", "weight_decay", "warmup_ratio", "label_smoothing", "lora_r")


def trial_row(t: optuna.trial.FrozenTrial, now: datetime | None = None) -> dict:
    s = t.user_attrs.get("settings", {})
    end = t.datetime_complete or now or datetime.now()
    steps = t.intermediate_values
    value = t.value if t.value is not None else (steps[max(steps)] if steps else None)
    return {"trial": t.number, "state": t.state.name.lower(), "model": s.get("model"), "strategy": s.get("strategy"),
            "params": {k: s[k] for k in SHOWN if k in s}, "metric": value,
            "epochs_run": max(steps) if steps else 0,
            "seconds": round((end - t.datetime_start).total_seconds(), 1) if t.datetime_start else None,
            "started": t.datetime_start.isoformat() if t.datetime_start else None,
            "host": t.user_attrs.get("host"), "run": t.user_attrs.get("run"),
            "note": t.user_attrs.get("stopped") or t.system_attrs.get("fail_reason", "")[:80] or None}


def _fmt_params(p: dict) -> str:
    return " ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


def _trials(study) -> list:
    # WAITING: queued first guesses not started yet; not trials of the leaderboard
    return [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]


def trials_table(study: optuna.Study, metric: str, title: str, best_first: bool = False, limit: int = 20) -> Table:
    trials = _trials(study)
    rows = [trial_row(t) for t in trials]
    multi_model = len({r["model"] for r in rows}) > 1
    sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
    if best_first:
        rows.sort(key=lambda r: (r["state"] != "complete", r["metric"] is None, sign * (r["metric"] or 0)))
    else:
        rows = rows[-limit:]
    t = Table(title=title)
    for c in ["trial", *(["model"] if multi_model else []), "strategy", "params", metric, "state", "time"]:
        t.add_column(c, justify="right" if c in ("trial", metric, "time") else "left")
    best = _best_number(study)
    for r in rows[:limit]:
        state = r["state"] + (f" e{r['epochs_run']}" if r["state"] in ("running", "pruned") else "")
        cells = [str(r["trial"]) + (" *" if r["trial"] == best else ""), *([str(r["model"])] if multi_model else []),
                 str(r["strategy"]), _fmt_params(r["params"]),
                 f"{r['metric']:.4f}" if r["metric"] is not None else "-", state,
                 f"{r['seconds']:.0f}s" if r["seconds"] is not None else "-"]
        t.add_row(*cells, style="bold green" if r["trial"] == best else None)
    return t


def _best_number(study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:
        return None


def write_tune_json(study: optuna.Study, out: Path, extra: dict) -> dict:
    trials = _trials(study)
    rows = [trial_row(t) for t in trials]
    for r, t in zip(rows, trials):
        r["optuna_params"] = t.params
        r["settings"] = t.user_attrs.get("settings", {})
    counts = {s.name.lower(): sum(r["state"] == s.name.lower() for r in rows) for s in TrialState}
    doc = {"study": study.study_name, "direction": study.direction.name.lower(), "best_trial": _best_number(study),
           "counts": {k: v for k, v in counts.items() if v}, **extra, "trials": rows}
    write_json(out / "tune.json", doc)
    return doc


def write_plots(study: optuna.Study, out: Path, metric: str) -> list[str]:
    """PNG plots next to tune.json. Importances need two finished trials with varying parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    made = []
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, draw in [("optimization_history", ovm.plot_optimization_history),
                           ("param_importances", ovm.plot_param_importances)]:
            if len(done) < (2 if name == "param_importances" else 1):
                continue
            try:
                ax = draw(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. a parameter that never varied: nothing to rank
            ax.figure.set_size_inches(8, 5)
            ax.figure.tight_layout()
            ax.figure.savefig(out / f"{name}.png", dpi=90)
            plt.close(ax.figure)
            made.append(f"{name}.png")
    if done:
        t0 = min(t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start)
        pts = sorted(((t.datetime_complete - t0).total_seconds() / 60, t.value) for t in done)
        pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
        best, running = [], None
        for _, v in pts:
            running = v if running is None else pick(running, v)
            best.append(running)
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.6, label="trial")
        ax.step([p[0] for p in pts], best, where="post", color="C3", label="best so far")
        ax.set(xlabel="minutes since the study started", ylabel=f"validation {metric}", title="metric vs time")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "metric_vs_time.png", dpi=90)
        plt.close(fig)
        made.append("metric_vs_time.png")
    return made


def _num(v) -> str:
    return "" if v is None else f"{v:.4f}"


def write_html(doc: dict, out: Path, plots: list[str], metric: str) -> None:
    rows = sorted(doc["trials"], key=lambda r: (r["state"] != "complete", -(r["metric"] or 0)
                                               if doc["direction"] == "maximize" else (r["metric"] or 0)))
    cells = "".join(
        f"<tr><td>{r['trial']}</td><td>{html.escape(str(r['model']))}</td><td>{html.escape(str(r['strategy']))}</td>"
        f"<td>{html.escape(_fmt_params(r['params']))}</td><td>{_num(r['metric'])}</td>"
        f"<td>{r['state']}</td><td>{r['seconds']}</td></tr>" for r in rows)
    winner = doc.get("winner") or {}
    test = winner.get("test") or {}
    summary = (f"<p>Winner: trial {winner.get('trial')} &rarr; <a href=\"best/report.html\">its run report</a> "
               f"(<code>{html.escape(str(winner.get('run')))}</code>); test "
               + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float)) + "</p>") if winner else ""
    imgs = "".join(f'<h2>{p[:-4].replace("_", " ")}</h2><img src="{p}" width="720">' for p in plots)
    (out / "tune_report.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>tunesmith tune</title><style>body{{font-family:sans-serif;"
        f"max-width:1000px;margin:auto}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>"
        f"<h1>tunesmith tune: {html.escape(doc['study'])}</h1>{summary}<p>Trials: {doc['counts']}. Selection used "
        f"validation {html.escape(metric)} only; the winner was measured once on test.</p><table><tr><th>trial</th>"
        f"<th>model</th><th>strategy</th><th>params</th><th>val {html.escape(metric)}</th><th>state</th><th>seconds</th>"
        f"</tr>{cells}</table>{imgs}")
