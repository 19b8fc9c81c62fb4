"""The HTTP server: answers, limits, bad input, calibration, micro-batching, a loopback load test and a
schemathesis run over its OpenAPI spec, with the token on and off."""
import asyncio
import json
import shutil

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from tunesmith.run import write_inference_settings
from tunesmith.serve.app import Limits, create_app
from tunesmith.serve.runner import load_test, running

LIMITS = Limits(max_texts=8, max_chars=200, max_body_bytes=20_000, max_wait_ms=20)


@pytest.fixture(scope="module")
def calibrated_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run with a calibration temperature, so the test can see it applied."""
    path = tmp_path_factory.mktemp("serve") / "run"
    shutil.copytree(tiny_run.path, path)
    m = json.loads((path / "metrics.json").read_text())
    m["calibration"] = {"temperature": 0.25}
    (path / "metrics.json").write_text(json.dumps(m))
    write_inference_settings(path / "model", temperature=0.25)  # model/tunesmith.json: what inference reads
    return path


@pytest.fixture(scope="module")
def client(calibrated_run):
    with TestClient(create_app(calibrated_run, LIMITS), base_url="http://localhost") as c:
        yield c


def test_predict_uses_the_calibrated_temperature(client, calibrated_run):
    import tunesmith
    from tunesmith.api import _load_for_inference, _logits, open_run

    texts = ["my invoice is wrong", "where is the courier", "password locked"]
    r = client.post("/predict", json={"texts": texts})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    run = open_run(calibrated_run)
    model, tok, task = _load_for_inference(run)
    want = task.probabilities(_logits(run, model, tok, texts), 0.25)
    got = np.array([[p["scores"][l] for l in task.labels] for p in preds])
    assert np.allclose(got, want, atol=1e-3) and not np.allclose(got, task.probabilities(_logits(run, model, tok, texts)), atol=1e-3)
    frame = tunesmith.predict(calibrated_run, texts)  # same labels and scores as the Python API
    assert [p["label"] for p in preds] == list(frame["prediction"])
    assert np.allclose([p["score"] for p in preds], frame["score"], atol=1e-3)


def test_long_text_is_cut_and_flagged_never_refused(client):
    r = client.post("/predict", json={"texts": ["refund " * 1000, "short"]})
    assert r.status_code == 200
    assert [p["truncated"] for p in r.json()["predictions"]] == [True, False]
    r = client.post("/predict", json={"texts": ["word " * 150]})  # under max_chars, over 128 tokens
    assert r.json()["predictions"][0]["truncated"] is True


@pytest.mark.parametrize("body,why", [
    (b'{"texts": "one string"}', "valid list"),
    (b'{"texts": [1, 2]}', "valid string"), (b'{"texts": []}', "at least 1"),
    (b'{"texts": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}', "at most 8"),
    (b'{"text": ["a"]}', "texts"), (b'[]', "valid dictionary"), (b'null', "")])
def test_bad_input_is_422_with_a_message(client, body, why):
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and why in r.json()["error"]["message"]


def test_body_limit_lone_surrogates_and_info(client):
    assert client.post("/predict", json={"texts": ["x" * 30_000]}).status_code == 413
    r = client.post("/predict", content=b'{"texts": ["\\ud800 odd", "\\u0000"]}', headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["labels"] == ["billing", "login", "shipping"] and info["temperature"] == 0.25
    assert info["limits"]["max_texts"] == 8 and "metrics" not in info  # test metrics only with info_details
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/info"} <= set(spec["paths"]) and client.get("/docs").status_code == 200


def test_concurrent_requests_share_forward_passes(calibrated_run):
    app = create_app(calibrated_run, Limits(max_wait_ms=50, max_batch=64))
    transport = httpx.ASGITransport(app=app)

    async def burst():
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            rs = await asyncio.gather(*[c.post("/predict", json={"texts": [f"my parcel {i}"]}) for i in range(12)])
            return rs, (await c.get("/info")).json()["batching"]

    rs, stats = asyncio.run(burst())
    assert all(r.status_code == 200 for r in rs)
    assert [r.json()["predictions"][0]["label"] for r in rs] and stats["requests"] == 12
    assert stats["batches"] < 12 and stats["largest_batch"] > 1


def test_loopback_load_test_has_no_errors(calibrated_run):
    with running(create_app(calibrated_run)) as url:
        res = load_test(url, ["my invoice", "a parcel", "locked out"], clients=4, requests=40, max_seconds=60)
    assert res["errors"] == 0 and res["ok"] > 0 and res["p99_ms"] >= res["p50_ms"] > 0


TOKEN = "fuzz-token-0123456789abcdef"


@pytest.mark.parametrize("token", [None, TOKEN], ids=["token-off", "token-on"])
def test_openapi_fuzz_conforms_to_the_schema(calibrated_run, token):
    # Driven by hand, not by schemathesis' pytest plugin (its from_fixture breaks on pytest 9).
    from hypothesis import given
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                     response_schema_conformance, status_code_conformance)
    from schemathesis.generation import GenerationMode

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance]
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    # schemathesis' ASGI client sends Host: testserver
    app = create_app(calibrated_run, LIMITS, token=token, allow_hosts=["testserver"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=auth)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in ops} >= {"/predict", "/health", "/info"}
    statuses = []
    # With the token on: requests that carry it, then requests that do not (401, documented, on all but /health).
    for headers in [auth] + ([{}] if token else []):
        for op in ops:
            # valid bodies, and for /predict also bodies that break the schema (those must get 4xx, not 5xx)
            for mode in [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if op.method.upper() == "POST" else []):
                @given(case=op.as_strategy(generation_mode=mode))
                @settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
                def fuzz(case):
                    r = case.call_and_validate(headers=headers, checks=checks)
                    statuses.append((op.path, bool(headers), r.status_code))

                fuzz()
    assert any(s == 200 for p, h, s in statuses if p == "/predict" and (h or not token))
    if token:
        assert {s for p, h, s in statuses if not h and p != "/health"} == {401}
