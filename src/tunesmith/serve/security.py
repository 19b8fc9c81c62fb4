"""What `serve` checks before a request reaches the model: the Host header (DNS rebinding), the bearer token,
and a declared body size. Also where the token comes from and the warnings about the bind address."""
from __future__ import annotations

import hmac
import ipaddress
import os
import re
import socket
import stat
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from tunesmith.errors import TunesmithError

TOKEN_ENV = "TUNESMITH_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16  # there is no per-client rate limit, so the token itself must resist guessing
OPEN_PATHS = frozenset({"/health"})  # load balancers probe it without credentials
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
_TOKEN_HINT = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    """The one error shape of the server: {"error": {"code": ..., "message": ...}}."""
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status, headers=headers)


def _ip(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host.lower() == "localhost" if ip is None else ip.is_loopback


def _check_token(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise TunesmithError(f"{source} is empty: put the bearer token in it ({_TOKEN_HINT})")
    # Printable ASCII without spaces: it must survive an HTTP header unchanged.
    if not re.fullmatch(r"[\x21-\x7e]+", token):
        raise TunesmithError(f"{source}: the token must be printable ASCII without spaces ({_TOKEN_HINT})")
    if len(token) < MIN_TOKEN_CHARS:
        raise TunesmithError(f"{source}: the token has {len(token)} characters, use at least {MIN_TOKEN_CHARS} "
                             f"({_TOKEN_HINT})")
    return token


def read_token(token_file: str | os.PathLike | None) -> tuple[str | None, list[str]]:
    """The token from --token-file, else from $TUNESMITH_SERVE_TOKEN, else None; and warnings about it.
    Messages name the source, never the token."""
    if token_file is None:
        if TOKEN_ENV not in os.environ:
            return None, []
        # Set but empty is a mistake (a secret that did not arrive), not a wish to serve without a token.
        return _check_token(os.environ[TOKEN_ENV], f"${TOKEN_ENV}"), []
    path = Path(token_file)
    if not path.is_file():
        raise TunesmithError(f"--token-file {path}: not found (or not a file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TunesmithError(f"--token-file {path}: cannot be read ({type(e).__name__})") from None
    token = _check_token(text, f"--token-file {path}")
    warnings = []
    # A warning, not a refusal: container secrets (Kubernetes, Docker) are mounted 0644 by default, where no
    # other user exists. On a shared machine the warning says what to do.
    if os.name == "posix" and path.stat().st_mode & stat.S_IROTH:
        warnings.append(f"--token-file {path} is readable by every user of this machine: chmod 600 {path}")
    return token, warnings


def bind_warnings(host: str, token: str | None) -> list[str]:
    if token or is_loopback(host):
        return []
    return [f"serving on {host or '0.0.0.0'} without a token: anyone who can reach this port can use the model; "
            f"set ${TOKEN_ENV} or --token-file (or bind 127.0.0.1)"]


class HostCheck:
    """Allowed Host headers. A DNS-rebinding page reaches the server under the attacker's own domain name,
    so only names the operator chose are accepted: the localhost names, the bind address and --allow-host
    (`*.example.com` matches subdomains, `*` turns the check off). An IP-literal Host cannot be rebound, so a
    wildcard bind (0.0.0.0, ::) also accepts any IP address and this machine's host name."""

    def __init__(self, bind: str = "127.0.0.1", extra: Iterable[str] = ()):
        names = {*LOCAL_NAMES, *(x.strip().lower().rstrip(".") for x in extra if x.strip())}
        self.any_ip = bind in WILDCARDS
        if self.any_ip:
            names.add(socket.gethostname().lower())
        else:
            names.add(bind.strip("[]").lower())
        self.any = "*" in names
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))
        self.names = frozenset(n for n in names if not n.startswith("*"))

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        try:
            host = (urlsplit("//" + (header or "")).hostname or "").rstrip(".")
        except ValueError:  # e.g. an unclosed "[" bracket
            return False
        if not host:
            return False
        return (host in self.names or (self.any_ip and _ip(host) is not None)
                or any(host.endswith(s) for s in self.suffixes))


class Guard:
    """ASGI middleware in front of every route, mount and error page: Host (400), token (401), then a declared
    Content-Length over the limit (413; bodies without one are cut by FastAPI's max_body_size while read)."""

    def __init__(self, app, hosts: HostCheck, token: str | None, max_body_bytes: int):
        self.app, self.hosts, self.max_body = app, hosts, max_body_bytes
        self.token = token.encode("ascii") if token else None

    def _authorized(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        # Headers arrive as latin-1; compare_digest takes time independent of where the bytes differ.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"), self.token)

    def refuse(self, path: str, headers: Headers) -> JSONResponse | None:
        host = headers.get("host")
        if not self.hosts.allows(host):
            shown = (host or "")[:100].encode("ascii", "replace").decode()
            return error_response(400, "host_not_allowed", f"Host {shown!r} is not served here: start "
                                  "`tunesmith serve` with --allow-host NAME to accept it (guards against DNS "
                                  "rebinding)")
        if self.token and path not in OPEN_PATHS and not self._authorized(headers.get("authorization")):
            return error_response(401, "unauthorized", "send the header 'Authorization: Bearer <token>' "
                                  "(every path but /health needs it)", headers={"WWW-Authenticate": "Bearer"})
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            declared = 0
        if declared > self.max_body:
            return error_response(413, "body_too_large", f"the body has {declared} bytes, over the limit of "
                                  f"{self.max_body}: send fewer or shorter texts per request")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refused = self.refuse(scope["path"], Headers(scope=scope))
            if refused is not None:
                return await refused(scope, receive, send)
        await self.app(scope, receive, send)
