"""Classification's inference hooks (the Predictor's, tasks/base.py): a sequence-classification model,
texts in, label scores out with the run's calibrated temperature.

Single-label and multilabel share all of it: they differ only in `probabilities` and `decide` (their own
classes), and a row's decision names its labels (`chosen`): a class id, or a 0/1 row of the label set."""
from __future__ import annotations

import functools

import numpy as np

from tunesmith.errors import TunesmithError


class ClassifierInference:
    kind = "classifier"
    # What serve's /info shows besides the task and its labels: settings, and held-out metrics (--info-details).
    public_settings = ("temperature",)
    public_metrics = ("test", "validation")

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load_inference_model(cls, model_dir):
        """(model, tokenizer) of a run's model/ folder (or an exported Hugging Face folder)."""
        from transformers import AutoModelForSequenceClassification

        from tunesmith.models.load import load_tokenizer

        return AutoModelForSequenceClassification.from_pretrained(model_dir), load_tokenizer(str(model_dir))

    @classmethod
    def from_run(cls, run, model_config):
        return cls([model_config.id2label[i] for i in range(model_config.num_labels)])

    def options(self, settings: dict) -> dict:
        """The forward's settings a caller may leave out: none."""
        return {}

    # ---- inputs ----------------------------------------------------------------------------------------------
    def read_inputs(self, data, text_column: str | None = None):
        """(frame the predictions are added to, texts) of a data file, or of a list of texts."""
        if isinstance(data, (list, tuple)):
            import pandas as pd

            return pd.DataFrame({"text": list(data)}), [str(t) for t in data]
        from tunesmith.data.dataset import load_examples

        ex = load_examples(data, text_column, None, self.name, need_labels=False).examples
        return ex.frame.copy(), ex.texts

    def read_labelled(self, data, text_column: str | None = None, label_column: str | None = None,
                      known: str = "which the model was not trained on"):
        """(texts, targets) of a labelled file whose labels are all the model's."""
        from tunesmith.data.dataset import check_known_labels, load_examples

        ex = load_examples(data, text_column, label_column, self.name).examples
        check_known_labels(ex, self.labels, self.name, data, f"{known}; known labels: {', '.join(self.labels[:20])}")
        return ex.texts, self.targets(ex.labels)

    def encode_inputs(self, tok, items: list[str], max_length: int,
                      with_cut: bool = True) -> tuple[list[list[int]], list[bool]]:
        """Token ids cut to max_length, and which texts were cut. Only texts that fill max_length can have been
        cut: those alone are tokenized again in full (with_cut=False: not asked, all False)."""
        from tunesmith.data.batching import encode

        ids = encode(tok, items, max_length)
        full = [i for i, x in enumerate(ids) if len(x) >= max_length] if with_cut else []
        cut = [False] * len(ids)
        if full:
            lens = tok([items[i] for i in full], truncation=False)["input_ids"]
            for i, x in zip(full, lens):
                cut[i] = len(x) > max_length
        return ids, cut

    # ---- forward and records -------------------------------------------------------------------------------------
    def outputs(self, model, tok, ids, batch_size: int, bf16: bool, device, **options) -> np.ndarray:
        """Logits in input order (batched, length-grouped: evaluate/predict.py)."""
        if options:
            raise TunesmithError(f"a classifier takes no generation settings ({', '.join(options)})")
        from tunesmith.evaluate.predict import predict_logits

        return predict_logits(model, ids, tok.pad_token_id, batch_size, bf16, device)

    def chosen(self, decided) -> list[int]:
        """The label indices a row's decision picks: a class id (one label) or a 0/1 row (a set of labels)."""
        return [int(decided)] if np.ndim(decided) == 0 else np.flatnonzero(decided).tolist()

    def records(self, outputs, temperature: float = 1.0) -> list[dict]:
        """label ('|'-joined for several), labels, score (the calibrated probability of the prediction: the
        least sure of its labels; with none chosen, that none applies) and every label's probability."""
        probs = self.probabilities(outputs, temperature)
        out = []
        for p, d in zip(probs, self.decide(probs)):
            idx = self.chosen(d)
            labels = [self.labels[j] for j in idx]
            score = float(p[idx].min()) if idx else float(1 - p.max())
            out.append({"label": "|".join(labels), "labels": labels, "score": score,
                        "scores": {l: float(v) for l, v in zip(self.labels, p)}})
        return out

    def columns(self, records: list[dict]) -> dict:
        """The columns `tunesmith predict` adds to the input table."""
        return {"prediction": [r["label"] for r in records],
                "score": np.array([r["score"] for r in records], dtype=np.float32)}

    def score(self, outputs, targets, with_loss: bool = True) -> dict:
        """Metrics of logits against targets (decisions at temperature 1: calibration moves no argmax and no
        sigmoid across 0.5), and the loss of the uncalibrated logits."""
        import torch

        m = self.metrics(targets.numpy().astype(int), self.decide(self.probabilities(outputs)))
        if with_loss:
            m["loss"] = float(self.loss(torch.from_numpy(outputs), targets))
        return m

    def agreement(self, want: np.ndarray, got: np.ndarray) -> dict:
        """How far two models' probabilities of the same rows are apart, as export parity judges them: the
        share of rows with the same decision, and the mean change of the probability a user reads (the
        predicted class's; every label's for label sets)."""
        a, b = self.decide(want), self.decide(got)
        agree = float((a == b).reshape(len(a), -1).all(axis=1).mean()) if len(a) else 1.0
        if np.ndim(a) == 2:
            top = float(np.abs(want - got).mean())
        else:
            rows = np.arange(len(want))
            top = float(np.abs(want[rows, a] - got[rows, a]).mean())
        return {"mean_top_prob_diff": top, "label_agreement": agree}

    # ---- serving: POST /predict {texts} → {predictions} (tasks/base.py, serve/app.py) ------------------------------
    @classmethod
    def serve_request(cls, limits):
        from tunesmith.tasks.base import texts_request

        return texts_request("PredictRequest", limits, ["where is my card?"])

    @classmethod
    def serve_response(cls):
        return _predict_response()

    # serve_inputs / serve_body: tasks.base.Task's defaults (a request of `texts`, an answer of `predictions`)


@functools.cache
def _predict_response():
    """/predict's answer model, made once (pydantic imported only when serving)."""
    from pydantic import BaseModel, Field

    class Prediction(BaseModel):
        label: str = Field(description="predicted label (multilabel: labels joined by '|')")
        labels: list[str]
        score: float = Field(description="calibrated probability of the prediction")
        scores: dict[str, float] = Field(description="calibrated probability of every label")
        truncated: bool = Field(description="the text was longer than the model reads and was cut")

    class PredictResponse(BaseModel):
        predictions: list[Prediction]
        model: str
        seconds: float

    return PredictResponse
