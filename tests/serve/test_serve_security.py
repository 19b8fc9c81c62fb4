"""Issue #20, serving: bearer token, Host allow-list, bounded queue, body limits, one JSON error schema,
/info without paths or metrics, /docs without a CDN, and the `serve` command's refusals and warnings."""
import asyncio
import logging
import os
import re
import shutil
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tunesmith.serve.app import Limits, create_app

TOKEN = "tsk-4f1d9a7c2e8b6053d1a9c7e2f4b8"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = Limits(max_texts=8, max_chars=200, max_body_bytes=20_000, max_wait_ms=5)
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def run_path(tiny_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("serve_security") / "run"
    shutil.copytree(tiny_run.path, path)
    return path


@pytest.fixture(scope="module")
def open_client(run_path):
    with TestClient(create_app(run_path, LIMITS), base_url="http://localhost") as c:
        yield c


@pytest.fixture(scope="module")
def token_client(run_path):
    with TestClient(create_app(run_path, LIMITS, token=TOKEN), base_url="http://localhost") as c:
        yield c


def assert_error(r, status: int, code: str | None = None) -> dict:
    """Every error answers the same JSON: {"error": {"code": str, "message": str}}."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    err = r.json()["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    if code:
        assert err["code"] == code, err
    return err


# --- 7. authentication -------------------------------------------------------------------------------

def test_without_a_token_everything_is_open(open_client):
    assert open_client.get("/info").status_code == 200
    assert open_client.post("/predict", json={"texts": ["my parcel"]}).status_code == 200
    assert open_client.get("/info").json()["auth"] is False


def test_with_a_token_only_health_is_open_and_401_is_json(token_client):
    assert token_client.get("/health").status_code == 200
    for method, path in [("GET", "/info"), ("POST", "/predict"), ("GET", "/openapi.json"), ("GET", "/docs"),
                         ("GET", "/docs/assets/swagger-ui.css"), ("GET", "/no/such/path"), ("DELETE", "/predict")]:
        for headers in [{}, {"Authorization": "Bearer wrong-token-wrong-token-1234"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}]:
            r = token_client.request(method, path, headers=headers, json={"texts": ["a"]})
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in r.text
    r = token_client.post("/predict", json={"texts": ["my parcel"]}, headers=AUTH)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    # the scheme name is case-insensitive
    assert token_client.get("/info", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    info = token_client.get("/info", headers=AUTH)
    assert info.json()["auth"] is True and TOKEN not in info.text
    spec = token_client.get("/openapi.json", headers=AUTH).json()  # Swagger UI's "Authorize" knows the scheme
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "401" in spec["paths"]["/predict"]["post"]["responses"]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_the_token_never_reaches_the_log(run_path, capfd, caplog):
    import uvicorn

    from tunesmith.serve.runner import LOOPBACK, free_port

    caplog.set_level(logging.DEBUG)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run_path, LIMITS, token=TOKEN), host=LOOPBACK, port=port,
                                           log_level="debug", access_log=True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://{LOOPBACK}:{port}"
        for _ in range(200):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        assert httpx.post(url + "/predict", json={"texts": ["a"]}, headers=AUTH).status_code == 200
        assert httpx.post(url + "/predict", json={"texts": ["a"]},
                          headers={"Authorization": f"Bearer {TOKEN[:-1]}"}).status_code == 401
        assert httpx.get(url + "/info", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    assert "POST /predict" in logged  # the access log was on, and still holds no token
    assert TOKEN not in logged and TOKEN[:-1] not in logged


def serve_cli(monkeypatch, capsys, *args, env_token=None):
    """`tunesmith serve ...` in this process with uvicorn.run stubbed: (exit code, stderr, uvicorn.run kwargs)."""
    import uvicorn

    from tunesmith import cli

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw, app=app))
    if env_token is None:
        monkeypatch.delenv("TUNESMITH_SERVE_TOKEN", raising=False)
    else:
        monkeypatch.setenv("TUNESMITH_SERVE_TOKEN", env_token)
    monkeypatch.setattr(sys, "argv", ["tunesmith", "serve", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code or 0, capsys.readouterr().err, started


@pytest.mark.parametrize("host,warned", [("0.0.0.0", True), ("::", True), ("192.168.1.5", True),
                                         ("myhost.example", True), ("127.0.0.1", False), ("localhost", False),
                                         ("::1", False)])
def test_serve_warns_when_binding_beyond_localhost_without_a_token(monkeypatch, capsys, run_path, host, warned):
    code, err, started = serve_cli(monkeypatch, capsys, run_path, "--host", host)
    assert code == 0 and started["host"] == host
    lines = [l for l in err.splitlines() if "warning" in l]
    assert len(lines) == (1 if warned else 0), err
    if warned:
        assert host in lines[0] and "token" in lines[0]
        code, err, _ = serve_cli(monkeypatch, capsys, run_path, "--host", host, env_token=TOKEN)
        assert code == 0 and "warning" not in err and TOKEN not in err


def test_serve_reads_the_token_from_a_file_or_the_environment(monkeypatch, capsys, run_path, tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    for args, env in [(["--token-file", f], None), ([], TOKEN)]:
        code, err, started = serve_cli(monkeypatch, capsys, run_path, *args, env_token=env)
        assert code == 0 and err == ""
        with TestClient(started["app"], base_url="http://localhost") as c:
            assert c.get("/info").status_code == 401 and c.get("/info", headers=AUTH).status_code == 200


def test_bad_token_files_are_one_line_errors(monkeypatch, capsys, run_path, tmp_path):
    empty, short, loose = tmp_path / "empty", tmp_path / "short", tmp_path / "loose"
    empty.write_text(" \n")
    short.write_text("abc\n")
    loose.write_text(TOKEN)
    for f in (empty, short):
        f.chmod(0o600)
    loose.chmod(0o644)
    for args, env, want in [(["--token-file", tmp_path / "missing"], None, "not found"),
                            (["--token-file", empty], None, "empty"), (["--token-file", short], None, "16"),
                            ([], "", "empty"), ([], "short", "16")]:
        code, err, started = serve_cli(monkeypatch, capsys, run_path, *args, env_token=env)
        assert code == 2 and not started and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and want in err and "error" in err, err
    # World-readable: a warning, not a refusal (container secrets are often mounted 0644), and it serves.
    code, err, started = serve_cli(monkeypatch, capsys, run_path, "--token-file", loose)
    assert code == 0 and started and len(err.strip().splitlines()) == 1 and "readable" in err, err
    assert TOKEN not in err


def test_serve_port_out_of_range_is_one_line_exit_2(monkeypatch, capsys, run_path):
    for port in ("99999", "-1", "0"):
        code, err, started = serve_cli(monkeypatch, capsys, run_path, "--port", port)
        assert code == 2 and not started and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and "port" in err and "65535" in err, err


# --- 8. bounded queue, Host allow-list, /info -----------------------------------------------------------

def test_a_full_queue_answers_503_with_retry_after(run_path):
    # The first request waits up to 1.5 s for company, so it is still in flight when the others arrive.
    cases = {"texts": Limits(max_wait_ms=1500, max_queue=3, max_queue_bytes=10_000),
             "bytes": Limits(max_wait_ms=1500, max_queue=100, max_queue_bytes=40)}
    for why, limits in cases.items():
        app = create_app(run_path, limits)
        transport = httpx.ASGITransport(app=app)

        async def burst():
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                first = asyncio.ensure_future(c.post("/predict", json={"texts": ["my parcel is late", "refund"]}))
                await asyncio.sleep(0.3)
                second = await c.post("/predict", json={"texts": ["where is my invoice", "another one"]})
                return await first, second, (await c.get("/info")).json()

        first, second, info = asyncio.run(burst())
        assert first.status_code == 200, why
        err = assert_error(second, 503, "queue_full")
        assert 1 <= int(second.headers["retry-after"]) <= 60 and "busy" in err["message"]
        assert info["batching"]["rejected"] == 1 and info["limits"]["max_queue"] == limits.max_queue
    # Alone, a request larger than the whole budget is still served: the per-request limits bound it.
    with TestClient(create_app(run_path, Limits(max_queue=1, max_queue_bytes=5)), base_url="http://localhost") as c:
        assert c.post("/predict", json={"texts": ["a long text " * 5, "b"]}).status_code == 200


def test_queue_defaults_follow_the_batch_size():
    assert Limits(max_batch=32).max_queue == 128 and Limits(max_batch=8).max_queue == 32
    assert Limits(max_batch=8).max_queue_bytes > 0 and Limits(max_queue=10, max_queue_bytes=7).max_queue_bytes == 7


def test_host_header_allow_list(run_path):
    with TestClient(create_app(run_path, LIMITS), base_url="http://localhost") as c:
        for host in ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"]:
            assert c.get("/health", headers={"host": host}).status_code == 200, host
        for host in ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example",
                     "10.0.0.7:8000", ""]:
            err = assert_error(c.get("/info", headers={"host": host}), 400, "host_not_allowed")
            assert "--allow-host" in err["message"]
    app = create_app(run_path, LIMITS, allow_hosts=["api.example.com", "*.internal.example"])
    with TestClient(app, base_url="http://localhost") as c:
        for host in ["api.example.com", "api.example.com:443", "gpu1.internal.example", "localhost"]:
            assert c.get("/health", headers={"host": host}).status_code == 200, host
        assert_error(c.get("/health", headers={"host": "evil.example"}), 400, "host_not_allowed")


def test_host_check_from_the_bind_address(monkeypatch, capsys, run_path):
    # serve adds the bind address; a wildcard bind accepts IP literals (DNS rebinding needs a name).
    _, _, started = serve_cli(monkeypatch, capsys, run_path, "--host", "192.168.1.5", env_token=TOKEN)
    with TestClient(started["app"], base_url="http://localhost") as c:
        assert c.get("/health", headers={"host": "192.168.1.5:8000"}).status_code == 200
        assert c.get("/health", headers={"host": "10.0.0.7"}).status_code == 400
    _, _, started = serve_cli(monkeypatch, capsys, run_path, "--host", "0.0.0.0", "--allow-host", "api.example.com",
                              env_token=TOKEN)
    with TestClient(started["app"], base_url="http://localhost") as c:
        for host in ["10.0.0.7:8000", "[fd00::1]:8000", "api.example.com", "localhost"]:
            assert c.get("/health", headers={"host": host}).status_code == 200, host
        assert c.get("/health", headers={"host": "evil.example"}).status_code == 400


def test_info_hides_paths_and_metrics_unless_asked(run_path):
    with TestClient(create_app(run_path, LIMITS), base_url="http://localhost") as c:
        r = c.get("/info")
        info = r.json()
        assert "metrics" not in info and "run" not in info and info["labels"] == ["billing", "login", "shipping"]
        assert str(run_path) not in r.text and str(run_path.parent) not in r.text and os.sep + "tmp" not in r.text
    with TestClient(create_app(run_path, LIMITS, info_details=True), base_url="http://localhost") as c:
        info = c.get("/info").json()
        assert info["run"] == str(run_path) and "test" in info["metrics"]


# --- 9. /docs offline, body limits, one error schema ------------------------------------------------------

def test_docs_are_served_from_local_assets(open_client):
    r = open_client.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    assert not re.search(r"https?://", r.text), re.findall(r"https?://[^\"' ]+", r.text)
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for a in assets:
        got = open_client.get(a)
        assert got.status_code == 200 and len(got.content) > 100, a
    assert open_client.get("/openapi.json").json()["openapi"].startswith("3.1")  # Swagger UI 5 shows 3.1
    assert_error(open_client.get("/redoc"), 404)  # ReDoc would need a CDN: off


def test_oversized_body_is_json_413(open_client):
    big = b'{"texts": ["' + b"x" * 30_000 + b'"]}'
    assert_error(open_client.post("/predict", content=big, headers=JSON), 413, "body_too_large")

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(30):
            yield b"x" * 1000

    assert_error(open_client.post("/predict", content=chunks(), headers=JSON), 413, "body_too_large")
    assert_error(open_client.post("/no/such/path", content=big, headers=JSON), 413, "body_too_large")


@pytest.mark.parametrize("body,code", [(b'{"texts": ["\xff\xfe caf\xe9"]}', "invalid_body"),
                                       (b"{not json", "invalid_json"), (b'{"texts": ["a"]', "invalid_json")])
def test_bad_utf8_and_bad_json_are_json_400(open_client, body, code):
    err = assert_error(open_client.post("/predict", content=body, headers=JSON), 400, code)
    assert ("UTF-8" if code == "invalid_body" else "JSON") in err["message"]


def test_every_error_has_one_schema(run_path, open_client, token_client):
    assert_error(open_client.get("/nope"), 404, "not_found")
    r = open_client.get("/predict")
    assert_error(r, 405, "method_not_allowed") and "POST" in r.headers["allow"]
    err = assert_error(open_client.post("/predict", json={"texts": []}), 422, "invalid_request")
    assert "at least 1" in err["message"] and err["details"][0]["loc"] == ["body", "texts"]
    assert_error(token_client.get("/info"), 401, "unauthorized")
    app = create_app(run_path, LIMITS)

    def broken(items):
        raise RuntimeError("secret internals /home/user/model")

    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        c.app.state.batcher.fn = broken
        err = assert_error(c.post("/predict", json={"texts": ["a"]}), 500, "internal_error")
        assert "secret" not in err["message"] and "/home" not in err["message"]
    # and the OpenAPI schema says so, for every operation
    spec = open_client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for status in ["400", "500"] + (["413", "422", "503"] if path == "/predict" else []):
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (path, status)
