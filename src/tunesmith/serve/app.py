"""FastAPI app factory: the task's route (POST `serve_route`: /predict, /generate, ...) and any it adds
(`serve_routes`), /health, /info, OpenAPI at /docs. The task supplies their schemas (tasks/base.py `serve_*`);
this module never asks which task.

Every error, whoever raises it (the guard, FastAPI, Starlette, the model), answers one JSON shape:
{"error": {"code": "...", "message": "..."}} (422 adds "details"), and the OpenAPI schema says so.

No `from __future__ import annotations` here: FastAPI must see the task's request model (made in create_app:
its limits come from create_app's arguments) as a real class, not a string."""

import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from http import HTTPStatus

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import TunesmithError
from tunesmith.serve import predictor as predictors
from tunesmith.serve.batcher import MicroBatcher, QueueFull
from tunesmith.serve.security import Guard, HostCheck, error_response


@dataclass
class Limits:
    max_body_bytes: int = 1_000_000
    max_texts: int = 64          # per request
    max_chars: int = 10_000      # per text; longer texts are cut and flagged, never refused
    max_batch: int = 32          # texts per forward pass
    max_wait_ms: float = 5.0     # how long the first request of a batch waits for company
    max_new_tokens: int = 256    # for tasks that generate: the most a request may ask for
    threads: int | None = None   # torch intra-op threads; 1 avoids OpenMP spin-waits on a shared, busy CPU
    max_queue: int | None = None        # texts waiting or in flight before 503; default 4 batches
    max_queue_bytes: int | None = None  # their UTF-8 bytes; default 8 KiB a text of max_queue (1 MiB at batch 32)

    def __post_init__(self):
        for k in ("max_body_bytes", "max_texts", "max_chars", "max_batch", "max_new_tokens", "max_queue",
                  "max_queue_bytes", "threads"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise TunesmithError(f"--{k.replace('_', '-')} {v}: must be a whole number of at least 1")
        self.max_queue = self.max_queue or 4 * self.max_batch
        self.max_queue_bytes = self.max_queue_bytes or 8192 * self.max_queue


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    code: str = Field(description="host_not_allowed, unauthorized, not_found, method_not_allowed, body_too_large, "
                                  "invalid_body, invalid_json, invalid_request, queue_full, internal_error, ...")
    message: str
    details: list[ValidationIssue] | None = Field(None, description="422 only: each field that failed")


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERRORS = {400: "Host not allowed, body not UTF-8 or not JSON", 401: "missing or wrong bearer token",
           413: "body over the size limit", 422: "body does not match the schema",
           503: "queue full: retry after `Retry-After` seconds", 500: "internal error"}


def _responses(*codes: int) -> dict:
    out = {c: {"model": ErrorResponse, "description": _ERRORS[c]} for c in codes}
    if 503 in out:
        out[503]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return out


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _message(errors) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5])


def create_app(run_path, limits: Limits | None = None, *, token: str | None = None,
               allow_hosts: HostCheck | list[str] | None = None, info_details: bool = False,
               task_options: dict | None = None) -> FastAPI:
    """`token`: every path but /health then needs `Authorization: Bearer <token>`. `allow_hosts`: Host
    names accepted besides the localhost names (or a HostCheck). `info_details`: /info also shows the run's
    path and held-out metrics. `task_options`: given to the task's serve_routes (e.g. a corpus to search)."""
    limits = limits or Limits()
    hosts = allow_hosts if isinstance(allow_hosts, HostCheck) else HostCheck(extra=allow_hosts or ())
    model = predictors.load(run_path)
    name = model.run.path.name
    batcher = MicroBatcher(model.batch, limits.max_batch, limits.max_wait_ms, limits.threads, limits.max_queue,
                           limits.max_queue_bytes)

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    # /docs is served below from swagger-ui-bundle's files (the default loads them from a CDN); ReDoc has no
    # local copy, so it is off. The body limit is set per route, not here: an app-wide one sits outside Guard
    # and swaps any answer to a request declaring a large body (Guard's 401, its JSON 413) for a plain-text 413.
    app = FastAPI(title=f"tunesmith: {name}", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Predictions of a tunesmith run. Texts longer than the model reads are cut and "
                              "flagged `truncated`. Errors are JSON `{\"error\": {\"code\", \"message\"}}`: "
                              "a bad Host or a body that is not UTF-8 JSON 400, a missing token 401, a body "
                              "over the limit 413, bad types 422, a full queue 503 with `Retry-After`.")
    app.state.batcher = batcher
    app.add_middleware(Guard, hosts=hosts, token=token, max_body_bytes=limits.max_body_bytes)
    started = time.time()
    # Documents the scheme in OpenAPI (Swagger UI's "Authorize"); Guard does the checking, on every path.
    auth = [Security(HTTPBearer(auto_error=False))] if token else []
    denied = (401,) if token else ()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        bad_json = next((e for e in errors if e["type"] == "json_invalid"), None)
        if bad_json:
            where = bad_json["loc"][-1] if bad_json["loc"] else "?"
            return error_response(400, "invalid_json", f"the body is not valid JSON (at character {where})")
        return error_response(422, "invalid_request", _message(errors), details=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # FastAPI, Starlette and StaticFiles raise these for 404, 405, 413 and bodies it cannot parse.
        code, message = _code(exc.status_code), str(exc.detail)
        if isinstance(exc.__cause__, UnicodeDecodeError):
            code, message = "invalid_body", "the body is not valid UTF-8"
        elif exc.status_code == 413:
            code, message = "body_too_large", (f"the body is over the limit of {limits.max_body_bytes} bytes: "
                                               "send fewer or shorter texts per request")
        return error_response(exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull):
        return error_response(503, "queue_full", f"the server is busy ({exc.pending} texts waiting or in flight): "
                              f"retry after {exc.retry_after} s", headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        # The details go to the server's log (uvicorn prints the traceback), never to the client.
        return error_response(500, "internal_error", "the server failed on this request; its log has the details")

    @app.get("/health", responses=_responses(400, 500))
    def health() -> dict:
        return {"status": "ok", "uptime_seconds": round(time.time() - started, 1)}

    @app.get("/info", dependencies=auth, responses=_responses(400, *denied, 500))
    def info() -> dict:
        details = model.info()
        metrics = details.pop("metrics", None)
        out = {"model": name, "kind": model.kind, **details, "limits": asdict(limits),
               "batching": dict(batcher.stats), "auth": token is not None}
        if info_details:  # absolute paths and test metrics only when the operator asks (--info-details)
            out.update(run=str(model.run.path), metrics=metrics)
        return out

    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path())), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - docs",
                                   swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # no call to swagger.io

    # The task's route, and any it adds (tasks/base.ServeRoute). A route's name gives the OpenAPI operation id
    # and summary (/predict: predict_predict_post, "Predict"), as the hand-written routes before it did.
    def post(route, RequestModel, response, inputs, body):
        @app.post(route, name=route.strip("/").replace("/", "_"), response_model=response,
                  dependencies=auth, max_body_size=limits.max_body_bytes,
                  responses=_responses(400, *denied, 413, 422, 503, 500))
        async def answer(req: RequestModel):
            t0 = time.perf_counter()
            items, cut = model.items(req, limits, inputs)
            records = await batcher.submit(items, sum(len(t.encode("utf-8")) for t, _ in items))
            for r, c in zip(records, cut):
                r["truncated"] = r["truncated"] or c
            return {**body(req, records), "model": name, "seconds": round(time.perf_counter() - t0, 4)}

    task = model.task
    post(task.serve_route, task.serve_request(limits), task.serve_response(), None,
         lambda req, records: task.serve_body(records))
    for r in task.serve_routes(model.predictor, limits, task_options or {}):
        post(r.path, r.request, r.response, r.inputs, r.body)
    return app


def swagger_ui_path():
    from swagger_ui_bundle import swagger_ui_path as path  # pinned swagger-ui-bundle-v2: Swagger UI 5

    return path
