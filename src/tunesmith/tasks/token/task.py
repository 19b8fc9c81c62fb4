"""Token classification's pipeline hooks (tasks/base.py): sentences of tagged words in, an encoder with a
tag per word out (named entities: parties, dates, drugs, doses...), measured by entity-level F1 against a
majority, a dictionary and a probe baseline."""
from __future__ import annotations

import numpy as np

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import Prepared, Task, say
from tunesmith.tasks.token import data as token_data
from tunesmith.tasks.token.inference import TokenInference, load_tokenizer

METRICS = ("f1", "precision", "recall", "token_accuracy", "loss")  # what --metric may choose epochs by
# Training words the probe baseline is fitted on, at most: a logistic regression's cost grows with them, and
# 20,000 words (about 1,000 sentences) fit in seconds on one core; the probe is a reference, not the product.
PROBE_WORDS = 20_000
FORMATS = {"conll": "CoNLL columns", "tokens": "tokens and tags", "spans": "text and character spans"}


class TokenClassification(TokenInference, Task):
    name = "token"
    peft_task_type = "TOKEN_CLS"
    main_metric = "f1"
    detect_priority = 20  # after sft's instruction columns, before classification's fallback
    summary_columns = ("precision", "recall", "f1")
    recipe_defaults = {"metric": "f1"}
    tunable = True     # entity F1 on validation is the objective (recipe_defaults' metric)
    exportable = True  # ONNX (per-token logits) and HF folders, checked word by word (export/parity.py)
    row_audit = False  # tagged sentences, not text and label rows: `tunesmith audit` runs this task's audit

    def __init__(self, labels: list[str] | None = None):
        super().__init__(labels)
        self.types = sorted({l[2:] for l in self.labels if l != "O"})

    # ---- choosing the task and reading the data --------------------------------------------------------------
    @classmethod
    def detect(cls, recipe) -> str | None:
        fmt = token_data.detect(recipe.train, recipe.text_column, recipe.label_column)
        return f"task: token ({FORMATS[fmt]} detected; --task to choose another)" if fmt else None

    @classmethod
    def prepare(cls, recipe, on_event, with_test: bool = True) -> Prepared:
        loaded = token_data.read(recipe.train, recipe.text_column, recipe.label_column)
        _tell(loaded, on_event)
        sentences, test, tl = loaded.sentences, None, None
        if recipe.test and with_test:
            tl = token_data.read(recipe.test, recipe.text_column, recipe.label_column)
            _tell(tl, on_event)
            test = tl.sentences
        elif not recipe.test:
            sentences, test = token_data.split(sentences, recipe.test_fraction, recipe.seed)
        train, val = sentences, None
        if recipe.val_fraction > 0:
            train, val = token_data.split(sentences, recipe.val_fraction, recipe.seed + 1)
        labels = token_data.bio_labels(loaded.sentences)
        if len(labels) < 3:
            raise TunesmithError(f"{recipe.train}: no word is tagged with an entity (every tag is O); tag the "
                                 f"entities to learn (B-type on their first word, I-type on the rest)")
        if tl is not None:
            new = sorted({t[2:] for s in tl.sentences for t in s.tags if t != "O"} - {l[2:] for l in labels})
            if new:
                say(on_event, f"{recipe.test}: entity types never tagged in {recipe.train}: {', '.join(new)}; "
                               f"they cannot be predicted and count as missed")
        info = {"format": loaded.format, "scheme": loaded.scheme,
                "test_format": tl.format if tl else None, "test_scheme": tl.scheme if tl else None}
        cols = loaded.columns
        return Prepared(train, val, test, labels, task=cls.name, info=info,
                        columns={"text_column": cols.get("tokens") or cols.get("text"),
                                 "label_column": cols.get("tags") or cols.get("entities")},
                        loaded={"train": loaded, "test": tl})

    @classmethod
    def texts(cls, split) -> list[str]:
        return [s.text for s in split]

    def audit(self, recipe, data: Prepared, on_event):
        from tunesmith.tasks.token.audit import audit

        return audit(self, recipe, data, on_event)

    def resolve(self, recipe, data: Prepared):
        if recipe.metric not in METRICS:
            raise TunesmithError(f"--metric {recipe.metric}: token classification chooses epochs by "
                                 f"{', '.join(METRICS)}")
        if recipe.lr is None:
            # full and freeze:K take the Trainer's default, head and LoRA, which move far fewer weights, the
            # usual larger rates (the head starts as a probe either way: before_fit).
            lr = {"head": 1e-3, "lora": 5e-4}.get(recipe.strategy.split(":")[0], 5e-5)
            recipe = recipe.model_copy(update={"lr": lr})
        return recipe

    def describe(self) -> str:
        return f"{len(self.types)} entity types, "

    # ---- model -----------------------------------------------------------------------------------------------
    def load_model(self, recipe):
        import logging
        import warnings

        from transformers import AutoConfig, AutoModelForTokenClassification, set_seed

        from tunesmith.models.registry import check_hub, resolve
        from tunesmith.tasks.token.encoding import check_tokenizer

        set_seed(recipe.seed)  # the new head (and LoRA's matrices) come from the global RNG
        path = resolve(recipe.model)
        check_hub(path)
        tok = load_tokenizer(path)
        check_tokenizer(tok, recipe.model)
        config = AutoConfig.from_pretrained(path)
        # The tag names go into the config: transformers.pipeline("token-classification",
        # aggregation_strategy="simple") groups B-/I- of a type under its real name.
        config.num_labels = len(self.labels)
        config.id2label = dict(enumerate(self.labels))
        config.label2id = {l: i for i, l in enumerate(self.labels)}
        if config.pad_token_id is None:
            config.pad_token_id = tok.pad_token_id
        prev = logging.getLogger("transformers").level
        logging.getLogger("transformers").setLevel(logging.ERROR)  # "newly initialized classifier" is expected
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = AutoModelForTokenClassification.from_pretrained(path, config=config)
        except ValueError as e:
            raise TunesmithError(f"model '{recipe.model}' ({config.model_type}) cannot be used for token "
                                 f"classification: {str(e).splitlines()[0]}") from None
        finally:
            logging.getLogger("transformers").setLevel(prev)
        return model, tok, path

    def tag_ids(self, sentences) -> list[list[int]]:
        """Targets of the loss; a test tag the model does not have is O here (metrics read the tags)."""
        return [[self.index.get(t, 0) for t in s.tags] for s in sentences]

    def encode(self, tok, data: Prepared, recipe, on_event, memo=None, model_path=None) -> dict:
        from tunesmith.tasks.token.encoding import encode, overlap

        out = {}
        for name, sents in (("train", data.train), ("validation", data.validation), ("test", data.test)):
            if not sents:
                out[name] = None
                continue
            key = (model_path, recipe.max_length, recipe.stride, name)
            w = memo[key] if memo is not None and key in memo else encode(tok, sents, recipe.max_length,
                                                                            self.tag_ids(sents), recipe.stride)
            if memo is not None:
                memo[key] = w
            if w.windowed:
                say(on_event, f"{name}: {w.windowed} of {len(w)} sentences are over --max-length "
                               f"{recipe.max_length} tokens: read in windows overlapping by "
                               f"{overlap(recipe.max_length, recipe.stride)} tokens, each word predicted once")
            out[name] = w
        return out

    def inference_settings(self, metrics: dict, recipe) -> dict:
        return {} if recipe.stride is None else {"stride": recipe.stride}  # predict windows as training did

    # ---- baselines -------------------------------------------------------------------------------------------
    def baselines(self, model, tok, enc, data: Prepared, recipe, device, bf16, on_event) -> dict:
        """Before any weight moves: every word O (majority); every training entity's words tagged wherever
        they appear (dictionary: how much of the test set is memorisation); a linear probe on the frozen
        encoder's word embeddings (what the representation knows before fine-tuning)."""
        if not recipe.baselines or data.test is None:
            return {}
        from tunesmith.tasks.token import metrics as M

        known = list(data.train) + list(data.validation or [])
        lexicon = M.dictionary(known)
        gold = [s.tags for s in data.test]
        types = self.metric_types(data.test)
        preds = {"majority": [["O"] * len(s) for s in data.test],
                 "dictionary": [M.dictionary_tags(lexicon, s.tokens) for s in data.test]}
        probe = self.probe(model, tok, enc, recipe, device, bf16)
        if probe is not None:
            preds["probe"] = probe
        out = {"metrics": {}, "predictions": {}}
        for name, tags in preds.items():
            m, _ = M.measure(gold, tags, types, seed=recipe.seed)
            out["metrics"][name] = m
            out["predictions"][name] = [[self.index[t] for t in x] for x in tags]
        bm = out["metrics"]
        say(on_event, f"baselines: majority (all O) F1 {bm['majority']['f1']:.3f}, dictionary of {len(lexicon)} "
                       f"training entities F1 {bm['dictionary']['f1']:.3f}"
                       + (f", probe on frozen token embeddings F1 {bm['probe']['f1']:.3f}" if "probe" in bm else ""))
        return out

    def probe(self, model, tok, enc, recipe, device, bf16) -> list[list[str]] | None:
        """Test tags from a logistic regression on the untouched encoder's embedding of each word (its first
        sub-token's last hidden state), fitted on up to PROBE_WORDS training words: what the frozen
        representation already knows."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        from tunesmith.tasks.token.encoding import word_features
        from tunesmith.tasks.token.metrics import decode

        bs, pad = recipe.batch_size * 2, tok.pad_token_id
        x = np.concatenate(word_features(model, enc["train"], pad, bs, bf16, device))
        y = np.concatenate(enc["train"].gold)
        if len(np.unique(y)) < 2:
            return None
        if len(y) > PROBE_WORDS:
            keep = np.random.default_rng(recipe.seed).choice(len(y), PROBE_WORDS, replace=False)
            x, y = x[keep], y[keep]
        scale = StandardScaler().fit(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(max_iter=200).fit(scale.transform(x), y)
        test = word_features(model, enc["test"], pad, bs, bf16, device)
        ids = [clf.classes_[clf.predict_proba(scale.transform(z)).argmax(1)] if len(z) else np.zeros(0, np.int64)
               for z in test]
        return decode(ids, self.labels)

    def check_baselines(self, doc) -> None:
        if not isinstance(doc["metrics"], dict) or not isinstance(doc["predictions"], dict):
            raise TypeError("metrics and predictions must be mappings")

    def before_fit(self, model, tok, enc, recipe, device, bf16, on_event, memo=None, model_path=None) -> None:
        """LP-FT, as classification does (train/probe_init.py): the tag classifier starts as a softmax probe
        fitted on exactly what it reads, each training word's first sub-token's last hidden state (up to
        PROBE_WORDS words), instead of at random."""
        if recipe.head_init != "probe" or not len(enc["train"]):
            return
        import torch
        import torch.nn.functional as F

        from tunesmith.tasks.token.encoding import word_features
        from tunesmith.train.probe_init import classifier_linear, fit, set_linear

        lin = classifier_linear(model)
        if lin is None or lin.in_features != model.config.hidden_size:
            return
        key = (model_path, recipe.max_length, recipe.stride, "probe_head")  # tune: every trial starts alike
        fitted = memo.get(key) if memo is not None else None
        if fitted is None:
            x = np.concatenate(word_features(model, enc["train"], tok.pad_token_id, recipe.batch_size * 2, bf16,
                                             device))
            y = np.concatenate(enc["train"].gold)
            if len(y) > PROBE_WORDS:
                keep = np.random.default_rng(recipe.seed).choice(len(y), PROBE_WORDS, replace=False)
                x, y = x[keep], y[keep]
            fitted = fit(torch.from_numpy(x), torch.from_numpy(y), F.cross_entropy, lin.out_features)
            if memo is not None:
                memo[key] = fitted
        set_linear(lin, fitted)
        say(on_event, "tag classifier started from a linear probe on the frozen encoder (LP-FT)")

    def steps(self, model, tok, enc, recipe, device, bf16):
        from tunesmith.tasks.token.steps import TokenSteps

        return TokenSteps(self, enc["train"], enc["validation"], recipe, tok.pad_token_id, bf16, device)

    # ---- measuring -------------------------------------------------------------------------------------------
    def metric_types(self, sentences) -> list[str]:
        """The model's entity types, and any the (test) sentences tag besides (counted as missed)."""
        return sorted(set(self.types) | {t[2:] for s in sentences for t in s.tags if t != "O"})

    def predict_split(self, model, w, pad_id, batch_size, bf16, device) -> tuple[list[np.ndarray], list[list[str]]]:
        """(word logits, predicted BIO tags) per sentence of a split's windows."""
        from tunesmith.tasks.token.encoding import word_logits
        from tunesmith.tasks.token.metrics import decode

        z = word_logits(model, w, pad_id, batch_size, bf16, device, len(self.labels))
        return z, decode([x.argmax(1) if len(x) else np.zeros(0, dtype=np.int64) for x in z], self.labels)

    def evaluate(self, model, w, pad_id, batch_size, bf16, device, with_ci: bool = True, seed: int = 0):
        """Entity metrics (and the word loss) of a split; `last` keeps (counts, predicted tags)."""
        from tunesmith.tasks.token.metrics import measure
        from tunesmith.tasks.token.steps import word_loss

        z, pred = self.predict_split(model, w, pad_id, batch_size, bf16, device)
        m, c = measure([s.tags for s in w.items], pred, self.metric_types(w.items), seed=seed, with_ci=with_ci)
        m["loss"] = word_loss(z, w.gold)
        self.last = (c, pred)
        return m

    def measure(self, metrics: dict, model, tok, enc, data: Prepared, recipe, baselines: dict, device, bf16,
                on_event) -> dict:
        from tunesmith.evaluate import retention
        from tunesmith.tasks.token import metrics as M

        bs, pad = recipe.batch_size * 2, tok.pad_token_id
        test, val = enc["test"], enc["validation"]
        if val is not None:
            metrics["validation"] = self.evaluate(model, val, pad, bs, bf16, device, with_ci=False)
        if test is None:  # a tune trial: validation only
            return {}
        metrics["test"] = self.evaluate(model, test, pad, bs, bf16, device, seed=recipe.seed)
        c, pred = self.last
        types = self.metric_types(data.test)
        gold_sets, pred_sets = M.entity_sets([s.tags for s in data.test]), M.entity_sets(pred)
        known = list(data.train) + list(data.validation or [])
        metrics["seen_unseen"] = M.seen_unseen(data.test, gold_sets, pred_sets, M.train_surfaces(known))
        metrics["confusion"] = M.confusion(gold_sets, pred_sets, types)
        metrics["types"] = types
        metrics["data"] = {**{k: v for k, v in data.info.items() if v is not None},
                           "windowed": {k: w.windowed for k, w in enc.items() if w is not None},
                           "sentences": {k: len(w) for k, w in enc.items() if w is not None}}
        b_metrics = baselines.get("metrics", {})
        metrics["baselines"] = b_metrics
        if b_metrics:
            # the best baseline by F1; on a tie the dictionary, then the probe (the more telling ones)
            order = sorted(b_metrics, key=lambda k: ("dictionary", "probe", "majority").index(k)
                           if k in ("dictionary", "probe", "majority") else 3)
            best = max(order, key=lambda k: b_metrics[k]["f1"])
            tags = [[self.labels[i] for i in x] for x in baselines["predictions"][best]]
            c_base = M.counts(gold_sets, M.entity_sets(tags), types)
            metrics["comparison"] = {"baseline": best, **M.paired(c, c_base, recipe.seed)}
        metrics["retention"] = retention.for_run(recipe, model, tok, [s.text for s in data.test], recipe.max_length)
        metrics["verdict"] = verdict(metrics)
        return {}

    def report(self, name: str, metrics: dict, recipe_doc: dict, audit) -> tuple[str, str]:
        from tunesmith.tasks.token import report

        return report.render_html(name, metrics, recipe_doc, audit), report.render_card(name, metrics, recipe_doc)


def _tell(loaded, on_event) -> None:
    say(on_event, f"{loaded.path}: {len(loaded.sentences)} sentences, {FORMATS[loaded.format]}, "
                   f"{loaded.scheme} tags")
    if loaded.skipped:
        say(on_event, f"{loaded.path}: skipped {loaded.skipped} rows without words")
    if loaded.started_by_i and loaded.scheme == "BIO":
        rows = ", ".join(map(str, loaded.started_by_i[:5]))
        say(on_event, f"{loaded.path}: {len(loaded.started_by_i)} sentences have an entity starting with I- "
                       f"(lines {rows}{' …' if len(loaded.started_by_i) > 5 else ''}): read as B-, as seqeval does")


def verdict(m: dict) -> str:
    from tunesmith.evaluate.verdict import baseline_name, retention_phrase

    t = m["test"]
    ci = t.get("ci95", {}).get("f1")
    parts = []
    c = m.get("comparison")
    if c:
        name = baseline_name(c["baseline"])
        p, (lo, hi) = 100 * c["diff"], (100 * c["ci95"][0], 100 * c["ci95"][1])
        span = f"(CI {lo:.1f} to {hi:.1f})"
        if lo > 0:
            parts.append(f"fine-tuning beat the {name} baseline by {p:.1f} entity-F1 points {span}")
        elif hi < 0:
            parts.append(f"fine-tuning did WORSE than the {name} baseline by {-p:.1f} entity-F1 points {span}: "
                         f"ship the baseline")
        else:
            parts.append(f"fine-tuning did not beat the {name} baseline by more than the noise ({p:+.1f} entity-F1 "
                         f"points {span})")
    parts.append(f"entity F1 {t['f1']:.3f}" + (f" (95% CI {ci[0]:.3f} to {ci[1]:.3f})" if ci else "")
                 + f", precision {t['precision']:.3f}, recall {t['recall']:.3f} on {t['n']} test sentences with "
                   f"{t['entities']} entities")
    su = m.get("seen_unseen")
    if su and su["unseen"]["entities"]:
        parts.append(f"on entities never tagged in training F1 {su['unseen']['f1']:.3f} "
                     f"({100 * su['share_seen']:.0f}% of test entities were seen in training, F1 {su['seen']['f1']:.3f})")
    r = m.get("retention")
    if r and retention_phrase(r):
        parts.append(retention_phrase(r))
    return "; ".join(parts) + "."
