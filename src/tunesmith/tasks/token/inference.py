"""Token classification's inference hooks (the Predictor's, tasks/base.py): a token-classification model,
raw texts in, entities with character offsets out.

A text is cut into words as the span format's texts are (data.split_words), its words into windows when it
is longer than the model reads (encoding.py), and each word's tag comes from the one window that answers
for it: nothing is cut and nothing is counted twice, so `truncated` is always false. Entities are runs of
B-/I- tags of one type (an I- after O starts one, as seqeval reads it); their score is the mean probability
of the tags chosen for their words."""
from __future__ import annotations

import functools

import numpy as np

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import input_column
from tunesmith.tasks.token.data import Sentence, entities, repair, words_of

TEXT_COLUMNS = ("text", "tokens", "words", "sentence")


def load_tokenizer(path: str):
    """The model's tokenizer (encoding.check_tokenizer: it must be a fast one, for word_ids)."""
    from tunesmith.models.load import load_tokenizer as load

    return load(path)


class TokenInference:
    kind = "tagger"
    public_settings = ()
    public_metrics = ("test", "validation")
    stride: int | None = None  # the run's --stride (model/tunesmith.json); None: a quarter of --max-length

    @classmethod
    def from_run(cls, run, model_config):
        from tunesmith.run import inference_settings

        task = cls([model_config.id2label[i] for i in range(model_config.num_labels)])
        task.stride = inference_settings(run).get("stride")
        return task

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load_inference_model(cls, model_dir):
        from transformers import AutoModelForTokenClassification

        from tunesmith.tasks.token.encoding import check_tokenizer

        tok = load_tokenizer(str(model_dir))
        check_tokenizer(tok, str(model_dir))
        return AutoModelForTokenClassification.from_pretrained(model_dir), tok

    def options(self, settings: dict) -> dict:
        return {}

    # ---- inputs ----------------------------------------------------------------------------------------------
    def read_inputs(self, data, text_column: str | None = None):
        """(frame the entities are added to, texts) of a .txt file (one text per line), a table with a text
        column (or a column of word lists), or a list of texts."""
        import pandas as pd
        from pathlib import Path

        if isinstance(data, (list, tuple)):
            return pd.DataFrame({"text": [x if isinstance(x, str) else " ".join(x) for x in data]}), list(data)
        path = Path(data)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise TunesmithError(f"{path}: file not found")
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
            except UnicodeDecodeError:
                raise TunesmithError(f"{path}: not UTF-8 text; re-save the file as UTF-8") from None
            texts = [t for t in lines if t.strip()]
            if not texts:
                raise TunesmithError(f"{path}: no text; write one text per line")
            return pd.DataFrame({"text": texts}), texts
        from tunesmith.data.io import read_table
        from tunesmith.tasks.token import data as token_data

        if token_data.is_conll(path):
            sents = token_data.read(path).sentences
            return pd.DataFrame({"text": [s.text for s in sents]}), [s.tokens for s in sents]
        frame = read_table(path)
        col = input_column(frame, path, text_column, TEXT_COLUMNS)
        items = []
        for i, v in enumerate(frame[col]):
            if isinstance(v, (list, tuple, np.ndarray)):
                items.append([str(t) for t in v])
            elif isinstance(v, str):
                items.append(v)
            elif v is None or (isinstance(v, float) and np.isnan(v)):
                items.append("")
            else:
                raise TunesmithError(f"{path}: row {i}, column '{col}' is {type(v).__name__}, not a text")
        return frame, items

    def read_labelled(self, data, text_column: str | None = None, label_column: str | None = None,
                      known: str = "which the model was not trained on"):
        """(sentences, tag ids per word) of a labelled file (any format of data.read). An entity type the model
        does not know is scored (as missed), like a test file's at training; its tag id is O's for the loss."""
        from tunesmith.tasks.token import data as token_data

        loaded = token_data.read(data, text_column, label_column)
        return loaded.sentences, [[self.index.get(t, 0) for t in s.tags] for s in loaded.sentences]

    def encode_inputs(self, tok, items: list, max_length: int, with_cut: bool = True):
        """(windows of the items, which were cut: none, long texts are windowed)."""
        from tunesmith.tasks.token.encoding import encode

        return encode(tok, list(items), max_length, stride=self.stride), [False] * len(items)

    # ---- forward and records -------------------------------------------------------------------------------------
    def outputs(self, model, tok, enc, batch_size: int, bf16: bool, device, **options) -> list:
        """Per item: (word logits, the item). Windows answer for their words (encoding.merge)."""
        if options:
            raise TunesmithError(f"a token classifier takes no generation settings ({', '.join(options)})")
        from tunesmith.tasks.token.encoding import word_logits

        z = word_logits(model, enc, tok.pad_token_id, batch_size, bf16, device, len(self.labels))
        return list(zip(z, enc.items))

    def records(self, outputs, temperature: float = 1.0) -> list[dict]:
        """Per text: `entities`, each {start, end, label, text, score} with character offsets into the text."""
        out = []
        for z, item in outputs:
            words, text, offsets = words_of(item)
            ents = []
            if len(z):
                p = _softmax(z / temperature)
                ids = p.argmax(1)
                tags, _ = repair([self.labels[i] for i in ids])
                for typ, a, b in entities(tags):
                    s, e = offsets[a][0], offsets[b - 1][1]
                    ents.append({"start": int(s), "end": int(e), "label": typ, "text": text[s:e],
                                 "score": float(p[np.arange(a, b), ids[a:b]].mean())})
            out.append({"entities": ents})
        return out

    # ---- export parity (export/parity.py compares these arrays) ---------------------------------------------------
    def probabilities(self, outputs, temperature: float = 1.0) -> np.ndarray:
        """Every word's tag probabilities, the items' words one after another: (words, tags)."""
        rows = [_softmax(z / temperature) for z, _ in outputs if len(z)]
        return np.concatenate(rows) if rows else np.zeros((0, len(self.labels)), dtype=np.float32)

    def agreement(self, want: np.ndarray, got: np.ndarray) -> dict:
        """Share of words given the same tag, and the mean change of that tag's probability."""
        a, b = want.argmax(1), got.argmax(1)
        rows = np.arange(len(a))
        return {"mean_top_prob_diff": float(np.abs(want[rows, a] - got[rows, a]).mean()) if len(a) else 0.0,
                "label_agreement": float((a == b).mean()) if len(a) else 1.0}

    def columns(self, records: list[dict]) -> dict:
        return {"entities": [r["entities"] for r in records]}

    def score(self, outputs, targets, with_loss: bool = True) -> dict:
        """Entity P/R/F1 (micro, strict), F1 per type (f1_<type>), token accuracy, and the word loss."""
        from tunesmith.tasks.token.metrics import decode, measure
        from tunesmith.tasks.token.steps import word_loss

        z = [o[0] for o in outputs]
        # the file's own tags where the items are its sentences (types the model lacks count as missed)
        gold = [o[1].tags if isinstance(o[1], Sentence) else [self.labels[t] for t in g] for o, g in zip(outputs, targets)]
        types = sorted(set(self.types) | {t[2:] for g in gold for t in g if t != "O"})
        m, _ = measure(gold, decode([x.argmax(1) if len(x) else np.zeros(0, int) for x in z], self.labels),
                       types, with_ci=False)
        m.update({f"f1_{t}": v["f1"] for t, v in m.pop("per_type").items()})  # flat: `tunesmith evaluate`'s table
        if with_loss:
            m["loss"] = word_loss(z, [np.asarray(t, dtype=np.int64) for t in targets])
        return m

    # ---- serving: POST /predict {texts} → {predictions: [{entities}]} (tasks/base.py, serve/app.py) -------------
    @classmethod
    def serve_request(cls, limits):
        from tunesmith.tasks.base import texts_request

        return texts_request("EntitiesRequest", limits, ["Aspirin 100 mg was given to Jane Doe in Boston on 3 May."])

    @classmethod
    def serve_response(cls):
        return _entities_response()

    # serve_inputs / serve_body: tasks.base.Task's defaults (a request of `texts`, an answer of `predictions`)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@functools.cache
def _entities_response():
    """/predict's answer model, made once (pydantic imported only when serving)."""
    from pydantic import BaseModel, Field

    class Entity(BaseModel):
        start: int = Field(description="first character of the entity in the text (0-based)")
        end: int = Field(description="one past its last character")
        label: str = Field(description="entity type")
        text: str = Field(description="text[start:end]")
        score: float = Field(description="mean probability of the tags chosen for its words")

    class EntityPrediction(BaseModel):
        entities: list[Entity]
        truncated: bool = Field(description="the text was over the server's --max-chars and was cut (texts over "
                                            "the model's length are read whole, in overlapping windows)")

    class EntitiesResponse(BaseModel):
        predictions: list[EntityPrediction]
        model: str
        seconds: float

    return EntitiesResponse
