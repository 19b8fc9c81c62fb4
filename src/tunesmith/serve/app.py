"""FastAPI app factory: /predict (or /generate for SFT runs), /health, /info, OpenAPI at /docs.

No `from __future__ import annotations` here: FastAPI must see the request models defined in
create_app (their limits come from its arguments) as real classes, not strings."""

import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from tunesmith.serve import predictor as predictors
from tunesmith.serve.batcher import MicroBatcher


@dataclass
class Limits:
    max_body_bytes: int = 1_000_000
    max_texts: int = 64          # per request
    max_chars: int = 10_000      # per text; longer texts are cut and flagged, never refused
    max_batch: int = 32          # texts per forward pass
    max_wait_ms: float = 5.0     # how long the first request of a batch waits for company
    max_new_tokens: int = 256    # /generate
    threads: int | None = None   # torch intra-op threads; 1 avoids OpenMP spin-waits on a shared, busy CPU


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


class Generation(BaseModel):
    text: str
    tokens: int
    stopped: bool
    truncated: bool


class GenerateResponse(BaseModel):
    generations: list[Generation]
    model: str
    seconds: float


def _message(errors) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5])


def create_app(run_path, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    model = predictors.load(run_path)
    name = model.run.path.name
    batcher = MicroBatcher(model, limits.max_batch, limits.max_wait_ms, limits.threads)

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = FastAPI(title=f"tunesmith: {name}", version="1", lifespan=lifespan, max_body_size=limits.max_body_bytes,
                  description="Predictions of a tunesmith run. Texts longer than the model reads are cut and "
                              "flagged `truncated`; bad JSON or types get 422, a body over the limit 413.")
    started = time.time()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors, "message": _message(errors)}, status_code=422)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "uptime_seconds": round(time.time() - started, 1)}

    @app.get("/info")
    def info() -> dict:
        return {"run": str(model.run.path), "model": name, "kind": model.kind, **model.info(),
                "limits": asdict(limits), "batching": dict(batcher.stats)}

    Texts = Annotated[list[StrictStr], Field(min_length=1, max_length=limits.max_texts)]

    if model.kind == "classifier":
        class PredictRequest(BaseModel):
            model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["where is my card?"]}]})
            texts: Texts

        @app.post("/predict", response_model=PredictResponse)
        async def predict(req: PredictRequest):
            t0 = time.perf_counter()
            cleaned = [predictors.clean(t, limits.max_chars) for t in req.texts]
            preds = await batcher.submit([t for t, _ in cleaned])
            for p, (_, cut) in zip(preds, cleaned):
                p["truncated"] = p["truncated"] or cut
            return {"predictions": preds, "model": name, "seconds": round(time.perf_counter() - t0, 4)}
    else:
        class GenerateRequest(BaseModel):
            model_config = ConfigDict(extra="forbid")
            prompts: Texts
            max_new_tokens: StrictInt | None = Field(None, ge=1, le=limits.max_new_tokens)

        @app.post("/generate", response_model=GenerateResponse)
        async def generate(req: GenerateRequest):
            t0 = time.perf_counter()
            n = req.max_new_tokens or min(model.default_new, limits.max_new_tokens)
            cleaned = [predictors.clean(t, limits.max_chars) for t in req.prompts]
            gens = await batcher.submit([(t, n) for t, _ in cleaned])
            for g, (_, cut) in zip(gens, cleaned):
                g["truncated"] = g["truncated"] or cut
            return {"generations": gens, "model": name, "seconds": round(time.perf_counter() - t0, 4)}

    return app
