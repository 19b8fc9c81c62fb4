"""Embedding inference (the Predictor's hooks, tasks/base.py): texts in, one unit vector each out.

A vector is the mean of the encoder's last hidden states over the text's tokens, L2-normalised: what
all-MiniLM does and what the run's model/ declares to sentence-transformers (modules.json: Transformer,
mean Pooling, Normalize), so SentenceTransformer("RUN/model") gives the same vectors."""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import input_column

TEXT_COLUMNS = ("text", "sentence", "query", "anchor", "document", "sentence1")


def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, then unit length (float32 whatever the compute precision)."""
    m = mask.unsqueeze(-1).to(torch.float32)
    mean = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(mean, dim=-1)


class Pooled(torch.nn.Module):
    """encoder(input_ids, attention_mask) → `pool` of its last hidden states: what export traces."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        return pool(self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, attention_mask)


def embed_ids(model, ids: list[list[int]], pad_id: int, batch_size: int, bf16: bool, device) -> np.ndarray:
    """(texts, dim) unit vectors of token ids, in input order; batches sorted by length."""
    from tunesmith.accel.precision import autocast
    from tunesmith.data.batching import collate, inference_batches

    out = [None] * len(ids)
    was = model.training
    model.eval()
    with torch.inference_mode():
        for b in inference_batches([len(x) for x in ids], batch_size):
            t = {k: v.to(device) for k, v in collate([ids[i] for i in b], pad_id).items()}
            with autocast(bf16, device):
                got = model(**t)
            # an exported graph (export/onnx.py's SessionModel) gives the pooled vector itself
            vecs = getattr(got, "sentence_embedding", None)
            vecs = pool(got.last_hidden_state, t["attention_mask"]) if vecs is None else vecs.float()
            for i, v in zip(b, vecs.cpu().numpy()):
                out[i] = v
    model.train(was)
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def embed_texts(model, tok, texts: list[str], max_length: int, batch_size: int, bf16: bool, device) -> np.ndarray:
    from tunesmith.data.batching import encode

    return embed_ids(model, encode(tok, texts, max_length) if texts else [], tok.pad_token_id, batch_size, bf16,
                     device)


def cosine_sim(model, tok, max_length: int, batch_size: int, bf16: bool, device):
    """sim(queries, docs) → cosine matrix, each distinct text embedded once (metrics.measure's input)."""
    def sim(queries, docs):
        uniq = list(dict.fromkeys([*queries, *docs]))
        at = {t: i for i, t in enumerate(uniq)}
        e = embed_texts(model, tok, uniq, max_length, batch_size, bf16, device)
        return e[[at[t] for t in queries]] @ e[[at[t] for t in docs]].T
    return sim


class EmbeddingInference:
    kind = "embedder"
    serve_route = "/embed"
    public_settings = ()
    public_metrics = ("test", "validation")

    @classmethod
    def from_run(cls, run, model_config):
        return cls([])

    @classmethod
    def load_inference_model(cls, model_dir):
        from transformers import AutoModel

        from tunesmith.models.load import load_tokenizer

        return AutoModel.from_pretrained(model_dir), load_tokenizer(str(model_dir))

    def options(self, settings: dict) -> dict:
        return {}

    def read_inputs(self, data, text_column: str | None = None):
        """(frame the vectors are added to, texts) of a list, a .txt file (a text a line) or a table."""
        import pandas as pd
        from pathlib import Path

        from tunesmith.data.io import read_table

        if isinstance(data, (list, tuple)):
            return pd.DataFrame({"text": list(data)}), [str(x) for x in data]
        path = Path(data)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise TunesmithError(f"{path}: file not found")
            texts = [t for t in path.read_text(encoding="utf-8-sig").splitlines() if t.strip()]
            return pd.DataFrame({"text": texts}), texts
        frame = read_table(path)
        col = input_column(frame, path, text_column, TEXT_COLUMNS)
        texts = []
        for i, v in enumerate(frame[col]):
            if not isinstance(v, str):
                raise TunesmithError(f"{path}: row {i + 1}, column '{col}' is {type(v).__name__}, not a text")
            texts.append(v)
        return frame, texts

    def read_labelled(self, data, text_column: str | None = None, label_column: str | None = None,
                      known: str = ""):
        """(every text of an embedding file, its Examples): `tunesmith evaluate` scores them as at training."""
        from tunesmith.tasks.embedding.data import read

        ex = read(data).examples
        return list(ex.a) + list(ex.b or []), ex

    def encode_inputs(self, tok, items: list, max_length: int, with_cut: bool = True):
        ids = tok(list(items), truncation=True, max_length=max_length)["input_ids"] if items else []
        if not with_cut:
            return ids, [False] * len(items)
        full = tok(list(items), verbose=False)["input_ids"] if items else []
        return ids, [len(f) > max_length for f in full]

    def outputs(self, model, tok, enc, batch_size: int, bf16: bool, device, **options) -> np.ndarray:
        if options:
            raise TunesmithError(f"an embedding model takes no generation settings ({', '.join(options)})")
        return embed_ids(model, enc, tok.pad_token_id, batch_size, bf16, device)

    def records(self, outputs, temperature: float = 1.0) -> list[dict]:
        return [{"vector": v.astype(float).tolist()} for v in outputs]

    def columns(self, records: list[dict]) -> dict:
        return {"vector": [r["vector"] for r in records]}

    # ---- export (export/parity.py compares these arrays) -----------------------------------------------------------
    graph_output = "sentence_embedding"  # the graph's output: pooled and normalised in it (graph_module)

    def graph_module(self, model):
        """The encoder with mean pooling over the attention mask and L2 normalisation folded in: whoever loads the
        .onnx gets the sentence vector (sentence-transformers' name for it), not token states to pool."""
        return Pooled(model)

    def probabilities(self, outputs, temperature: float = 1.0) -> np.ndarray:
        """The unit vectors themselves: parity holds every component to its tolerance."""
        return np.asarray(outputs, dtype=np.float64)

    def agreement(self, want: np.ndarray, got: np.ndarray) -> dict:
        """Mean cosine distance between a text's two vectors, and the share of texts whose nearest other sample
        text is the same under both (what a search would return)."""
        dist = float((1 - (want * got).sum(1)).mean()) if len(want) else 0.0
        if len(want) < 2:
            return {"mean_top_prob_diff": dist, "label_agreement": 1.0}
        near = []
        for v in (want, got):
            s = v @ v.T
            np.fill_diagonal(s, -np.inf)
            near.append(s.argmax(1))
        return {"mean_top_prob_diff": dist, "label_agreement": float((near[0] == near[1]).mean())}

    def score(self, outputs, targets, with_loss: bool = True) -> dict:
        """The metrics of training's test split (metrics.measure) on a file's texts."""
        from tunesmith.tasks.embedding.metrics import measure

        vec = dict(zip(list(targets.a) + list(targets.b or []), outputs))
        m, _ = measure(targets, lambda q, d: np.stack([vec[t] for t in q]) @ np.stack([vec[t] for t in d]).T,
                       with_ci=False)
        return m

    @classmethod
    def serve_request(cls, limits):
        from tunesmith.tasks.base import texts_request

        return texts_request("EmbedRequest", limits, ["How do I reset my password?", "Where is my parcel?"])

    @classmethod
    def serve_response(cls):
        return _response()

    def serve_routes(self, predictor, limits, options: dict):
        """/search over the corpus serve was given (tasks/embedding/serving.py); none without one."""
        from tunesmith.tasks.embedding.serving import search_route

        rest = {k: v for k, v in options.items() if k != "corpus"}
        super().serve_routes(predictor, limits, rest)  # refuses what it does not know
        return [search_route(self, predictor, options["corpus"])] if options.get("corpus") else []


@functools.cache
def _response():
    from pydantic import BaseModel, Field

    class Embedding(BaseModel):
        vector: list[float] = Field(description="unit-length embedding (cosine similarity = dot product)")
        truncated: bool = Field(description="the text was cut to the server's --max-chars or the model's length")

    class EmbedResponse(BaseModel):
        predictions: list[Embedding]
        model: str
        seconds: float

    return EmbedResponse


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per query, the k corpus rows of highest cosine (unit vectors: the dot product), best first."""
    if not len(corpus):
        return [[] for _ in queries]
    s = queries @ corpus.T
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return [[(int(i), float(s[q, i])) for i in row] for q, row in enumerate(top)]
