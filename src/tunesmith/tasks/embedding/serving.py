"""Serving an embedding run: POST /embed (the task's route: texts in, unit vectors out) and, with a corpus
given at start-up (`tunesmith serve RUN --corpus docs.csv`), POST /search: the k corpus texts of highest
cosine to a query. The corpus is embedded once at start-up; each search is one exact matrix-vector product
(numpy), no approximate index: at 10k-100k texts it costs less than embedding the query."""
from __future__ import annotations

import functools

import numpy as np

from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import ServeRoute

MAX_K = 1000


def nearest(query: np.ndarray, corpus: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k rows of `corpus` of highest dot product with `query`, best first (argpartition: O(n), not a sort)."""
    s = corpus @ query
    k = min(k, len(s))
    idx = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
    idx = idx[np.argsort(-s[idx], kind="stable")]
    return [(int(i), float(s[i])) for i in idx]


def search_route(task, predictor, corpus) -> ServeRoute:
    _, texts = task.read_inputs(str(corpus))
    if not texts:
        raise TunesmithError(f"{corpus}: no texts to search")
    vectors = np.ascontiguousarray(predictor.outputs(texts), dtype=np.float32)
    request, response = _models()

    def inputs(req, limits, settings):
        return [req.query], {}

    def body(req, records):
        q = np.asarray(records[0]["vector"], dtype=np.float32)
        hits = [{"index": i, "text": texts[i], "score": s} for i, s in nearest(q, vectors, req.k)]
        return {"hits": hits, "corpus": len(texts), "truncated": records[0]["truncated"]}

    return ServeRoute("/search", request, response, inputs, body)


@functools.cache
def _models():
    from pydantic import BaseModel, ConfigDict, Field, StrictStr

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"query": "Where is my card?",
                                                                                   "k": 5}]})
        query: StrictStr = Field(min_length=1)
        k: int = Field(10, ge=1, le=MAX_K, description="how many texts (at most the corpus's size)")

    class Hit(BaseModel):
        index: int = Field(description="the text's row in the corpus (0-based)")
        text: str
        score: float = Field(description="cosine similarity to the query")

    class SearchResponse(BaseModel):
        hits: list[Hit]
        corpus: int = Field(description="texts searched")
        truncated: bool = Field(description="the query was cut to the server's --max-chars or the model's length")
        model: str
        seconds: float

    return SearchRequest, SearchResponse
