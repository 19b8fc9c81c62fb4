"""Read tabular text data (CSV, TSV, JSONL, Parquet) into a DataFrame with clear errors."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pandas as pd

from tunesmith.errors import TunesmithError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
           ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TunesmithError(f"{path}: unknown file type '{path.suffix}'; use .csv, .tsv, .jsonl or .parquet")
    return fmt


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TunesmithError(
            f"{path}: line {line} (data row {max(line - 2, 0)}) has bytes that are not UTF-8 "
            f"(byte {e.start}); re-save the file as UTF-8") from None


_LAST: dict = {}  # (path, size, mtime) -> frame of the last file read


def read_table(path: str | Path) -> pd.DataFrame:
    """Every column as read; row i of the frame is data row i of the file (0-based, header excluded).

    The last file read is remembered (keyed by path, size and modification time) and handed out as a
    copy: a run reads its training file several times (task detection, loading, audit)."""
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _LAST:
        return _LAST[key].copy()
    df = _read_table(path)
    _LAST.clear()
    if key is not None:
        _LAST[key] = df
    return df.copy()


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise TunesmithError(f"{path}: file not found")
    if path.is_dir():
        raise TunesmithError(f"{path}: is a directory, expected a data file")
    fmt = file_format(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TunesmithError(f"{path}: cannot be read ({e.strerror})") from None
    if not raw.strip():
        raise TunesmithError(f"{path}: the file is empty; it needs a header and at least one row")
    try:
        if fmt == "parquet":
            df = pd.read_parquet(io.BytesIO(raw))
        elif fmt == "jsonl":
            rows = []
            for i, line in enumerate(_decode(path, raw).splitlines()):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TunesmithError(f"{path}: line {i + 1} is not valid JSON ({e.msg}); fix or remove that line") from None
                if not isinstance(rows[-1], dict):
                    raise TunesmithError(f"{path}: line {i + 1} is not a JSON object; each line must be one {{...}} record")
            df = pd.DataFrame(rows)
        else:
            sep = "\t" if fmt == "tsv" else ","
            # keep_default_na=False: the text "NA" or "null" is a real text, not missing.
            df = pd.read_csv(io.StringIO(_decode(path, raw)), sep=sep, dtype=str, keep_default_na=False)
    except TunesmithError:
        raise
    except Exception as e:  # pandas/pyarrow parse errors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TunesmithError(f"{path}: cannot be parsed as {fmt} ({msg})") from None
    if len(df) == 0:
        raise TunesmithError(f"{path}: has a header but no data rows")
    df.columns = [str(c) for c in df.columns]
    return df.reset_index(drop=True)


def fingerprint(path: str | Path) -> str:
    """sha256 of the file's bytes: recorded in every run so a re-run can tell the data changed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    fmt = file_format(path)
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        df.to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
