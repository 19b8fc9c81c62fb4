"""Classification's pipeline hooks (tasks/base.py): reading and splitting a labelled table, the audit,
baselines on frozen embeddings, the linear-probe start (LP-FT), the loop's steps and the measurements.

SingleLabel and MultiLabel (single_label.py, multilabel.py) differ only in targets, loss and decisions;
everything here is shared by both."""
from __future__ import annotations


import numpy as np

from tunesmith.data.dataset import (check_enough_rows, check_known_labels, dropped_lines, label_set, load_examples,
                                    stratified_split)
from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import Prepared, Task, say


class Classification(Task):
    peft_task_type = "SEQ_CLS"
    main_metric = "macro_f1"
    exportable = True
    mergeable = True
    tunable = True
    detect_priority = 100  # the fallback: any table with a text and a label column

    @classmethod
    def detect(cls, recipe) -> str | None:
        return ""  # decided in prepare(): the label column's values say single_label or multilabel

    # ---- data ------------------------------------------------------------------------------------------------
    @classmethod
    def prepare(cls, recipe, on_event, with_test: bool = True) -> Prepared:
        """Load train/test, decide single vs multi label, split train/validation/test. Test is never used
        for choices. with_test=False (tunesmith tune) leaves the test file unread: test is None and train
        and validation are the same rows as with it."""
        task_arg = recipe.task if recipe.task in ("single_label", "multilabel") else "auto"
        loaded = load_examples(recipe.train, recipe.text_column, recipe.label_column, task_arg)
        task = loaded.task
        for line in dropped_lines(loaded.dropped, recipe.train):
            say(on_event, line)
        if task_arg == "auto":
            say(on_event, f"task: {task} (decided from column '{loaded.label_column}')")
        ex = loaded.examples
        labels = label_set(ex.labels, task)
        if len(labels) < 2:
            raise TunesmithError(f"{recipe.train}: column '{loaded.label_column}' has a single class "
                                 f"({labels[0] if labels else 'none'}); a classifier needs at least two")
        check_enough_rows(ex, None if recipe.test else recipe.test_fraction, recipe.val_fraction, recipe.train)
        if recipe.test and not with_test:
            train, test = ex, None
        elif recipe.test:
            t = load_examples(recipe.test, recipe.text_column or loaded.text_column,
                              recipe.label_column or loaded.label_column, task)
            test = t.examples
            for line in dropped_lines(t.dropped, recipe.test):  # test rows without a label are not scored: say so
                say(on_event, line)
            check_known_labels(test, labels, task, recipe.test,
                               f"never seen in {recipe.train}; add training examples for it or remove the row")
            train = ex
        else:
            train, test = stratified_split(ex, recipe.test_fraction, recipe.seed, task)
        val = None
        if recipe.val_fraction > 0:
            train, val = stratified_split(train, recipe.val_fraction, recipe.seed + 1, task)
        return Prepared(train, val, test, labels, task=task, loaded=loaded,
                        columns={"text_column": loaded.text_column, "label_column": loaded.label_column})

    def audit(self, recipe, data: Prepared, on_event):
        from tunesmith.audit.training import audit_for_training

        return audit_for_training(recipe, self.name, data.loaded, data.train, data.validation, data.test, on_event)

    def resolve(self, recipe, data: Prepared):
        """Settings sized to the data (lr from rows per class), and a slice column checked before training."""
        if recipe.lr is None:
            from tunesmith.train.optim import default_lr

            recipe = recipe.model_copy(update={"lr": default_lr(recipe.strategy, self.targets(data.train.labels))})
        if recipe.contrastive == "auto" or recipe.contrastive == "on":  # recorded as on/off: what the run did
            from tunesmith.tasks.classification.contrastive import decide

            recipe = recipe.model_copy(update={"contrastive": decide(
                recipe.contrastive, recipe, self.targets(data.train.labels), self.multi_label)})
        if recipe.slice_column and data.test is not None:  # a typo in the column name fails now, not after training
            from tunesmith.evaluate.slices import slice_values

            slice_values(data.test.frame, recipe.slice_column, recipe.test or recipe.train)
        return recipe

    def describe(self) -> str:
        return f"{len(self.labels)} labels, "

    # ---- model -----------------------------------------------------------------------------------------------
    def load_model(self, recipe):
        # Seed before loading: the new classification head (and LoRA matrices) are drawn from the global RNG.
        from transformers import set_seed

        from tunesmith.models.load import load_classifier

        set_seed(recipe.seed)

        return load_classifier(recipe.model, self.labels, self.multi_label, pooling=recipe.pooling)

    def encode(self, tok, data: Prepared, recipe, on_event, memo=None, model_path=None) -> dict:
        """Token ids and targets per split; `memo` (tune) keeps ids across trials of the same model and length."""
        from tunesmith.data.batching import encode
        from tunesmith.train.loop import Split

        def split(ex, name):
            key = (model_path, recipe.max_length, name)  # same model and length: same token ids
            ids = memo[key] if memo is not None and key in memo else encode(tok, ex.texts, recipe.max_length)
            if memo is not None:
                memo[key] = ids
            return Split(ids, self.targets(ex.labels))

        return {"train": split(data.train, "train"),
                "validation": split(data.validation, "validation") if data.validation else None,
                "test": split(data.test, "test") if data.test else None}

    def baselines(self, model, tok, enc, data: Prepared, recipe, device, bf16, on_event) -> dict:
        """Zero-/few-shot and probes on the untouched model, before any weight moves."""
        if not recipe.baselines or data.test is None:
            return {}
        from tunesmith.evaluate import baselines
        from tunesmith.train.checkpoint import plain

        m, preds = baselines.for_run(recipe, self, data.train, data.test, model.config, recipe.max_length, on_event)
        return {"metrics": plain(m), "predictions": plain({k: np.asarray(v) for k, v in preds.items()})}

    def check_baselines(self, doc) -> None:
        if not isinstance(doc["metrics"], dict) or not isinstance(doc["predictions"], dict):
            raise TypeError("metrics and predictions must be mappings")

    def before_fit(self, model, tok, enc, recipe, device, bf16, on_event, memo=None, model_path=None) -> None:
        """The contrastive stage (contrastive.py) when the recipe resolved it on, then the probe start. Skipped
        on --resume once checkpoint/last.pt exists (pipeline.py): last.pt holds the body both produced."""
        tr = enc["train"]
        if recipe.contrastive == "on":
            self.contrastive_body(model, tok, tr, recipe, device, bf16, on_event, memo, model_path)
        if recipe.head_init != "probe":
            return
        from tunesmith.train.probe_init import init_head

        # tune: every trial starts from the same probe (on the same contrastive body, when there is one)
        key = (model_path, recipe.max_length, "probe_head", recipe.contrastive, recipe.seed)
        fitted = init_head(model, self, tr.ids, tr.targets, tok.pad_token_id, bf16, device,
                           memo.get(key) if memo is not None else None)
        if fitted is not None:
            if memo is not None:
                memo[key] = fitted
            say(on_event, "classifier started from a linear probe on the frozen model (LP-FT)")

    def contrastive_body(self, model, tok, tr, recipe, device, bf16, on_event, memo, model_path) -> None:
        """Trains the body on label pairs (contrastive.py); tune's trials share one stage through `memo`."""
        from tunesmith.tasks.classification.contrastive import train_body

        key = (model_path, recipe.max_length, "contrastive_body", recipe.seed)
        if memo is not None and key in memo:
            state, self.contrastive = memo[key]
            model.base_model.load_state_dict(state)
            return
        self.contrastive = train_body(model, tr.ids, tr.targets, tok.pad_token_id, recipe, device, bf16, on_event)
        if memo is not None:
            memo[key] = ({k: v.detach().to("cpu", copy=True) for k, v in model.base_model.state_dict().items()},
                         self.contrastive)

    def steps(self, model, tok, enc, recipe, device, bf16):
        from tunesmith.tasks.classification.steps import ClassifierSteps

        return ClassifierSteps(self, enc["train"], enc["validation"], recipe, tok.pad_token_id, bf16, device)

    def finalize_model(self, merged):
        from tunesmith.models.pooling import fold

        return fold(merged)  # mean pooling written into a stock class's weights (models/pooling.py)

    # ---- after training ----------------------------------------------------------------------------------------
    def measure(self, metrics: dict, model, tok, enc, data: Prepared, recipe, baselines: dict, device, bf16,
                on_event) -> dict:
        """Fills `metrics` (which holds the history): test and validation metrics, intervals, the best
        baseline, calibration, slices, retention, verdict. Returns arrays kept in checkpoint/."""
        from tunesmith.train.loop import evaluate_split

        test, val = enc["test"], enc["validation"]
        test_logits = val_logits = None
        if test is not None:
            import contextlib

            from tunesmith.evaluate.retention import Pooled, encoder_of

            # the scoring pass also gives retention's "after" vectors (evaluate/retention.py Pooled: one pass less)
            with Pooled(encoder_of(model)) if not recipe.retention_data else contextlib.nullcontext() as pooled:
                tm, tloss, test_logits = evaluate_split(model, self, test, tok.pad_token_id, recipe.batch_size * 2,
                                                        bf16, device)
            metrics["test"] = {**tm, "loss": tloss}
        if val is not None:
            vm, vloss, val_logits = evaluate_split(model, self, val, tok.pad_token_id, recipe.batch_size * 2,
                                                   bf16, device)
            metrics["validation"] = {**vm, "loss": vloss}
        if test is None:  # a tune trial: validation only, the test split stays unread
            return {}
        from tunesmith.evaluate import retention
        from tunesmith.evaluate.analysis import analyse
        from tunesmith.evaluate.slices import slice_values
        from tunesmith.evaluate.verdict import verdict

        te = data.test
        slices = (slice_values(te.frame, recipe.slice_column, recipe.test or recipe.train)
                  if recipe.slice_column else None)
        b_metrics = baselines.get("metrics", {})
        b_preds = {k: np.asarray(v) for k, v in baselines.get("predictions", {}).items()}
        extra = analyse(self, test.targets.numpy(), test_logits,
                        y_val=val.targets.numpy() if val is not None else None, val_logits=val_logits,
                        baseline_metrics=b_metrics, baseline_preds=b_preds, history=metrics["history"],
                        slice_values=slices, slice_column=recipe.slice_column, seed=recipe.seed)
        metrics["test"]["ci95"] = extra.pop("ci95")
        if getattr(self, "contrastive", None):  # what the stage did (absent on --resume past it)
            metrics["contrastive"] = self.contrastive
        metrics["baselines"] = b_metrics
        metrics.update(extra)
        metrics["retention"] = retention.for_run(recipe, model, tok, te.texts, recipe.max_length,
                                                 after=pooled.vectors(test.ids) if pooled is not None else None)
        metrics["verdict"] = verdict(metrics)
        # the targets beside the logits: `tunesmith compare` bootstraps both runs' predictions on these rows
        return {"test_logits.npy": test_logits, "test_targets.npy": test.targets.numpy()}

    def inference_settings(self, metrics: dict, recipe) -> dict:
        return {"temperature": metrics.get("calibration", {}).get("temperature", 1.0)}

    def report(self, name: str, metrics: dict, recipe_doc: dict, audit) -> tuple[str, str]:
        from tunesmith.report import card, html

        return (html.render(name, metrics, recipe_doc, audit, cols=list(self.summary_columns)),
                card.render(name, metrics, recipe_doc, audit))
