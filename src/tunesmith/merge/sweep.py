"""Score a merged model on task data and on retention pairs; pick a sweep point; draw the trade-off."""
from __future__ import annotations

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.retention import encoder_of, load_pairs, sts_spearman
from tunesmith.models.embed import embed_with

TOLERANCE = 0.01  # "within 1 point" of the best task metric, on a 0-1 scale


def parse_sweep(s: str) -> list[float]:
    try:
        start, stop, step = (float(x) for x in s.split(":"))
    except ValueError:
        raise TunesmithError(f"--sweep {s}: expected START:STOP:STEP, e.g. 0:1:0.1") from None
    if step <= 0 or stop < start:
        raise TunesmithError(f"--sweep {s}: need STOP >= START and STEP > 0")
    n = int(round((stop - start) / step))
    if n > 100:
        raise TunesmithError(f"--sweep {s}: {n + 1} points; use a step that gives at most 101")
    return [round(start + i * step, 10) for i in range(n + 1)]


class TaskData:
    """Labelled task data, read and encoded once, scored at every sweep point by the Predictor holding the
    merged model (its weights change in place between points)."""

    def __init__(self, path, predictor, text_column=None, label_column=None):
        texts, targets = predictor.task.read_labelled(path, text_column, label_column,
                                                      known="which the tuned model was not trained on")
        self.predictor, self.path, self.targets = predictor, str(path), targets
        self.ids = predictor.encode(texts)[0]
        self.n = len(targets)  # labels (a tensor), or an embedding file's Examples

    def score(self) -> dict:
        return self.predictor.task.score(self.predictor.forward(self.ids), self.targets, with_loss=False)


class Retention:
    def __init__(self, path, tok, max_length):
        self.path, self.tok, self.max_length = str(path), tok, max_length
        self.s1, self.s2, self.score_ = load_pairs(path)

    def score(self, model) -> float:
        enc = encoder_of(model)
        a = embed_with(enc, self.tok, self.s1, self.max_length)
        b = embed_with(enc, self.tok, self.s2, self.max_length)
        return sts_spearman(a, b, self.score_)


def choose(rows: list[dict], metric: str) -> int:
    """Index of the point with the most retention among those within TOLERANCE of the best task metric."""
    best = max(r[metric] for r in rows)
    near = [i for i, r in enumerate(rows) if r[metric] >= best - TOLERANCE]
    if all(r.get("retention") is not None for r in rows):
        return max(near, key=lambda i: (rows[i]["retention"], rows[i][metric]))
    return max(near, key=lambda i: rows[i][metric])


def plot(rows: list[dict], metric: str, chosen: int, path, title: str) -> None:
    """Left: both scores against the weight. Right: the trade-off curve itself, retention vs task metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, m = [r["weight"] for r in rows], [r[metric] for r in rows]
    ret = [r.get("retention") for r in rows]
    has_ret = all(x is not None for x in ret)
    fig, axes = plt.subplots(1, 2 if has_ret else 1, figsize=(11 if has_ret else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(w, m, "o-", color="tab:blue", label=f"task {metric}")
    ax.set_xlabel("merge weight (0 = base)")
    ax.set_ylabel(f"task {metric}", color="tab:blue")
    ax.axvline(w[chosen], color="grey", ls=":", label=f"chosen w={w[chosen]:g}")
    ax.set_title(title)
    if has_ret:
        ax2 = ax.twinx()
        ax2.plot(w, ret, "s--", color="tab:orange")
        ax2.set_ylabel("retention: STS Spearman", color="tab:orange")
        tr = axes[0][1]
        tr.plot(m, ret, "o-", color="tab:green")
        for x, y, wt in zip(m, ret, w):
            tr.annotate(f"{wt:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        tr.plot([m[chosen]], [ret[chosen]], "r*", ms=14, label=f"chosen w={w[chosen]:g}")
        tr.axvspan(max(m) - TOLERANCE, max(m), color="tab:blue", alpha=0.08, label="within 1 point of best")
        tr.set_xlabel(f"task {metric}")
        tr.set_ylabel("retention: STS Spearman")
        tr.set_title("trade-off (labels: weight)")
        tr.legend(fontsize=8)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
