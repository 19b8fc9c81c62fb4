"""Sentence-embedding fine-tuning's pipeline hooks (tasks/base.py): pairs, triplets, scored pairs or labelled
texts in; an encoder whose mean-pooled, normalised vectors put related texts close, saved as a
sentence-transformers folder; measured by retrieval (MRR@10, nDCG@10, recall@k) or Spearman against the
untouched model and BM25, with bootstrap intervals."""
from __future__ import annotations

import numpy as np

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import Prepared, Task, say
from tunesmith.tasks.embedding import data as emb_data
from tunesmith.tasks.embedding import metrics as M
from tunesmith.tasks.embedding import negatives
from tunesmith.tasks.embedding.inference import EmbeddingInference, cosine_sim

METRICS = {"scored": ("spearman",), "labelled": M.RETRIEVAL + ("knn_accuracy",)}
BASELINES = ("untouched", "bm25")


class Embedding(EmbeddingInference, Task):
    name = "embedding"
    peft_task_type = "FEATURE_EXTRACTION"
    main_metric = "mrr@10"
    detect_priority = 30  # after sft's and token's columns, before classification's fallback (text, label)
    summary_columns = ("mrr@10", "ndcg@10", "recall@10", "spearman")
    recipe_defaults = {"metric": "auto"}
    exportable = True  # ONNX giving the sentence vector (pooling and normalising in the graph), checked to 1e-4
    tunable = True     # validation MRR@10 (Spearman for scored pairs) is the objective (tune_recipe)
    mergeable = True   # tunesmith merge: WiSE-FT between the untouched and the tuned encoder, scored below
    merge_auto_class = "AutoModel"  # merge/run.py: the encoder alone is what a merge interpolates
    row_audit = False  # pairs, not text and label rows: `tunesmith audit` runs this task's audit (audit/pairs.py)

    def __init__(self, labels: list[str] | None = None, form: str = "pairs"):
        super().__init__(labels)
        self.form = form  # pairs | triplets | scored | labelled
        self.tok = self.max_length = None
        self.mined = None  # --hard-negatives: what before_fit (or resume) mined (negatives.py)

    # ---- choosing the task and reading the data --------------------------------------------------------------
    @classmethod
    def detect(cls, recipe) -> str | None:
        kind = emb_data.detect(recipe.train, recipe.text_column, recipe.label_column)
        return f"task: embedding ({emb_data.KINDS[kind]} detected; --task to choose another)" if kind else None

    @classmethod
    def prepare(cls, recipe, on_event, with_test: bool = True) -> Prepared:
        loaded = emb_data.read(recipe.train, recipe.text_column, recipe.label_column)
        ex = loaded.examples
        say(on_event, f"{recipe.train}: {len(ex)} rows of {emb_data.KINDS[ex.kind]} ({', '.join(loaded.columns.values())})")
        test = None
        if recipe.test and with_test:
            test = emb_data.read(recipe.test, recipe.text_column, recipe.label_column).examples
            if test.kind != ex.kind:
                raise TunesmithError(f"{recipe.test}: holds {emb_data.KINDS[test.kind]} but {recipe.train} holds "
                                     f"{emb_data.KINDS[ex.kind]}; give both files the same columns")
        elif not recipe.test:
            ex, test = emb_data.split(ex, recipe.test_fraction, recipe.seed)
        train, val = ex, None
        if recipe.val_fraction > 0:
            train, val = emb_data.split(ex, recipe.val_fraction, recipe.seed + 1)
        info = {"format": ex.kind, "columns": loaded.columns}
        return Prepared(train, val, test, [], task=cls.name, info=info)

    @classmethod
    def texts(cls, split) -> list[str]:
        return list(dict.fromkeys([*split.a, *(split.b or []), *(split.neg or [])]))

    @classmethod
    def tune_recipe(cls, recipe):
        """--metric auto made the form's main metric before tune prepares the data: trials report it."""
        if recipe.metric != "auto":
            return recipe
        kind = emb_data.read(recipe.train, recipe.text_column, recipe.label_column).examples.kind
        return recipe.model_copy(update={"metric": M.MAIN[kind]})

    @classmethod
    def from_data(cls, data: Prepared) -> "Embedding":
        return cls([], data.info["format"])

    def audit(self, recipe, data: Prepared, on_event):
        from tunesmith.audit import pairs

        cols = data.info["columns"]
        if self.form == "labelled":  # text and label rows: the row audit's checks apply as they are
            return pairs.row_audit(recipe, cols["a"], cols["label"], on_event)
        rows = lambda ex: pairs.PairRows(ex.a, ex.b, ex.rows, ex.neg, ex.score)  # noqa: E731
        known = [rows(x) for x in (data.train, data.validation) if x is not None]
        return pairs.audit(pairs.PairRows.join(known), rows(data.test) if data.test is not None else None,
                           kind="embedding", names=cols, recipe=recipe, on_event=on_event)

    def resolve(self, recipe, data: Prepared):
        allowed = METRICS.get(self.form, M.RETRIEVAL)
        metric = M.MAIN[self.form] if recipe.metric == "auto" else recipe.metric
        if metric not in allowed:
            raise TunesmithError(f"--metric {recipe.metric}: {emb_data.KINDS[self.form]} choose epochs by "
                                 f"{', '.join(allowed)}")
        negatives.check(recipe.hard_negatives, self.form)
        lr = recipe.lr or {"head": 1e-3, "lora": 5e-4}.get(recipe.strategy.split(":")[0], 2e-5)
        return recipe.model_copy(update={"metric": metric, "lr": lr})

    def describe(self) -> str:
        return f"{emb_data.KINDS[self.form]}, "

    # ---- model -----------------------------------------------------------------------------------------------
    def load_model(self, recipe):
        from transformers import AutoModel, set_seed

        from tunesmith.models.load import load_tokenizer
        from tunesmith.models.registry import check_hub, resolve

        set_seed(recipe.seed)  # LoRA's matrices come from the global RNG
        path = resolve(recipe.model)
        check_hub(path)
        tok = load_tokenizer(path)
        try:
            model = AutoModel.from_pretrained(path)
        except ValueError as e:
            raise TunesmithError(f"model '{recipe.model}' cannot be used as an encoder: {str(e).splitlines()[0]}") from None
        return model, tok, path

    def apply_strategy(self, model, recipe):
        model = super().apply_strategy(model, recipe)
        pooler = getattr(model, "pooler", None)  # a plain encoder's (LoRA's wrapper reaches it too)
        if pooler is not None:
            # The vectors are mean-pooled: BERT's [CLS] pooler gets no gradient, which DDP counts as an error.
            pooler.requires_grad_(False)
        return model

    def encode(self, tok, data: Prepared, recipe, on_event, memo=None, model_path=None) -> dict:
        from tunesmith.data.batching import encode
        from tunesmith.tasks.embedding.steps import Units

        self.tok, self.max_length = tok, recipe.max_length
        ex = data.train
        texts = list(dict.fromkeys([*ex.a, *(ex.b or []), *(ex.neg or [])]))
        at = {t: i for i, t in enumerate(texts)}
        group = score = None
        if ex.kind == "labelled":
            units, group = self._label_pairs(ex, at, recipe.seed)
            if not units:
                raise TunesmithError(f"{recipe.train}: no label has two texts; texts sharing a label are the "
                                     f"positives an embedding learns from")
        else:
            cols = [ex.a, ex.b] + ([ex.neg] if ex.neg else [])
            units = [tuple(at[c[i]] for c in cols) for i in range(len(ex))]
            score = list(ex.score) if ex.score else None
        ids = encode(tok, texts, recipe.max_length)
        cut = sum(len(x) >= recipe.max_length for x in ids)
        if cut:
            say(on_event, f"{cut} of {len(texts)} training texts reach --max-length {recipe.max_length} tokens and are cut")
        return {"train": Units(texts, ids, units, score, group), "validation": data.validation, "test": data.test}

    @staticmethod
    def _label_pairs(ex, at, seed):
        """Each text with another of its label (a cycle through the label's texts in a seeded order)."""
        rng = np.random.default_rng(seed)
        names = sorted(set(ex.label))
        members = {l: [] for l in names}
        for t, l in zip(ex.a, ex.label):
            members[l].append(at[t])
        group = [0] * len(at)
        units = []
        for g, l in enumerate(names):
            m = list(dict.fromkeys(members[l]))
            for t in m:
                group[t] = g
            if len(m) > 1:
                p = [m[i] for i in rng.permutation(len(m))]
                units += [(p[k], p[(k + 1) % len(p)]) for k in range(len(p))]
        return units, group

    # ---- baselines -------------------------------------------------------------------------------------------
    def evaluate(self, model, tok, ex, recipe, device, bf16, with_ci: bool = True, memory=None):
        sim = cosine_sim(model, tok, recipe.max_length, recipe.batch_size * 2, bf16, device)
        return M.measure(ex, sim, memory, seed=recipe.seed, with_ci=with_ci)

    def baselines(self, model, tok, enc, data: Prepared, recipe, device, bf16, on_event) -> dict:
        """The untouched encoder (what fine-tuning must beat to be worth it) and BM25 (words alone)."""
        if not recipe.baselines or data.test is None:
            return {}
        memory = data.train if self.form == "labelled" else None
        found = {"untouched": self.evaluate(model, tok, data.test, recipe, device, bf16, memory=memory),
                 "bm25": M.measure(data.test, M.bm25_sim, memory, seed=recipe.seed)}
        key = M.MAIN[self.form]
        say(on_event, "baselines: " + ", ".join(f"{n} {key} {m[key]:.3f}" for n, (m, _) in found.items()))
        return {"metrics": {n: m for n, (m, _) in found.items()}, "items": {n: i for n, (_, i) in found.items()}}

    def check_baselines(self, doc) -> None:
        if not isinstance(doc["metrics"], dict) or not isinstance(doc["items"], dict):
            raise TypeError("metrics and items must be mappings")

    def before_fit(self, model, tok, enc, recipe, device, bf16, on_event, memo=None, model_path=None) -> None:
        """--hard-negatives: mined with the untouched encoder, before any strategy wraps it."""
        self.mined = negatives.before_fit(model, tok, enc, recipe, device, bf16, on_event)

    def fit(self, model, tok, enc, recipe, *, device, bf16, ckpt_dir, resume, on_event, stop):
        if resume and self.mined is None:  # resumed past before_fit: the rows it mined, as they were
            self.mined = negatives.restore(enc, recipe, ckpt_dir)
        return super().fit(model, tok, enc, recipe, device=device, bf16=bf16, ckpt_dir=ckpt_dir, resume=resume,
                           on_event=on_event, stop=stop)

    def steps(self, model, tok, enc, recipe, device, bf16):
        from tunesmith.tasks.embedding.steps import EmbeddingSteps

        val = enc["validation"]
        return EmbeddingSteps(self, enc["train"], val, recipe, tok.pad_token_id,
                              lambda m: self.evaluate(m, tok, val, recipe, device, bf16, with_ci=False)[0])

    def finalize_model(self, merged):
        from tunesmith.tasks.embedding.saved import SentenceTransformerFolder

        return SentenceTransformerFolder(merged, self.tok, self.max_length)

    # ---- tunesmith merge (merge/run.py's optional hooks) -----------------------------------------------------------
    @staticmethod
    def merge_metric(targets) -> str:
        """What picks a sweep point: the --eval file's form's main metric (MRR@10, or Spearman for scored pairs)."""
        return M.MAIN[targets.kind]

    def merge_model(self, merged, tok, max_length: int):
        """The merged encoder saved as training saves one: a sentence-transformers folder."""
        self.tok, self.max_length = tok, max_length
        return self.finalize_model(merged)

    # ---- measuring -------------------------------------------------------------------------------------------
    def measure(self, metrics: dict, model, tok, enc, data: Prepared, recipe, baselines: dict, device, bf16,
                on_event) -> dict:
        val, test = enc["validation"], enc["test"]
        memory = data.train if self.form == "labelled" else None
        if self.mined:
            metrics["hard_negatives"] = self.mined
        if val is not None and len(val):
            metrics["validation"] = self.evaluate(model, tok, val, recipe, device, bf16, with_ci=False)[0]
        if test is None:
            return {}
        metrics["test"], items = self.evaluate(model, tok, test, recipe, device, bf16, memory=memory)
        metrics["form"] = self.form
        metrics["data"] = {"format": self.form, "columns": data.info.get("columns"),
                           "rows": {k: len(getattr(data, k) or []) for k in ("train", "validation", "test")}}
        metrics["baselines"] = baselines.get("metrics", {})
        metrics["comparisons"] = {n: M.compare(self.form, test, items, theirs, seed=recipe.seed)
                                  for n, theirs in baselines.get("items", {}).items()}
        metrics["retention"] = retention(recipe, model, tok, self.texts(data.test))
        metrics["verdict"] = verdict(metrics)
        return {}

    def summary(self, metrics: dict) -> str | None:
        return metrics.get("verdict")

    def report(self, name: str, metrics: dict, recipe_doc: dict, audit) -> tuple[str, str]:
        from tunesmith.tasks.embedding import report

        return report.render_html(name, metrics, recipe_doc, audit), report.render_card(name, metrics, recipe_doc)


def retention(recipe, model, tok, texts: list[str]) -> dict:
    """evaluate/retention.py's: STS Spearman before/after with --retention-data, else linear CKA on the test texts.
    It reads the encoder (model.base_model): the saved folder's, not the folder module."""
    from tunesmith.evaluate import retention as R
    from tunesmith.tasks.embedding.saved import SentenceTransformerFolder

    enc = model.encoder if isinstance(model, SentenceTransformerFolder) else model
    return R.for_run(recipe, enc, tok, texts, recipe.max_length)  # embed_with computes in eval mode


def verdict(m: dict) -> str:
    """Whether fine-tuning beat each baseline, by the paired interval of the main metric."""
    t, form = m["test"], m.get("form", "pairs")
    key = M.MAIN[form]
    ci = t.get("ci95", {}).get(key)
    parts = []
    beat = []
    for name, c in m.get("comparisons", {}).items():
        d, (lo, hi) = c["diff"], c["ci95"]
        span = f"({d:+.3f}, CI {lo:+.3f} to {hi:+.3f})"
        if lo > 0:
            beat.append(name)
            parts.append(f"fine-tuning beat the {name} baseline on {key} {span}")
        elif hi < 0:
            parts.append(f"fine-tuning did WORSE than the {name} baseline on {key} {span}")
        else:
            parts.append(f"fine-tuning did not beat the {name} baseline on {key} by more than the noise {span}")
    if m.get("comparisons"):
        parts.insert(0, "fine-tuning beat both baselines" if len(beat) == len(m["comparisons"])
                     else f"fine-tuning beat {len(beat)} of {len(m['comparisons'])} baselines")
    parts.append(f"{key} {t[key]:.3f}" + (f" (95% CI {ci[0]:.3f} to {ci[1]:.3f})" if ci else "")
                 + (f" on {t['queries']} queries over {t['docs']} texts" if "queries" in t else f" on {t['n']} pairs"))
    if "knn_accuracy" in t:
        parts.append(f"kNN accuracy {t['knn_accuracy']:.3f}")
    from tunesmith.evaluate.verdict import retention_phrase

    kept = retention_phrase(m.get("retention") or {})
    if kept:
        parts.append(kept)
    return "; ".join(parts) + "."
