"""Read tabular text data (CSV, TSV, JSONL, Parquet) into a DataFrame with clear errors."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
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


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    """json object_pairs_hook: {"label": "a", "label": "b"} would silently keep the last one."""
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise _DuplicateKey(k)
        seen.add(k)
    return dict(pairs)


def _refuse_duplicate_columns(path: Path, header: list[str]) -> None:
    # pandas renames a second 'label' to 'label.1' and the first one is used without a word: refuse instead.
    where: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        where.setdefault(name, []).append(i + 1)
    for name, cols in where.items():
        if len(cols) > 1 and name.strip():  # blank names (trailing commas of spreadsheet exports) name no column
            raise TunesmithError(f"{path}: column '{name}' appears {len(cols)} times in the header (columns "
                                 f"{', '.join(map(str, cols))}); rename or remove all but one so it is clear "
                                 f"which to use")


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
                    rows.append(json.loads(line, object_pairs_hook=_no_duplicate_keys))
                except _DuplicateKey as e:
                    raise TunesmithError(f"{path}: line {i + 1} has the key '{e}' twice; keep one so it is clear "
                                         f"which value to use") from None
                except json.JSONDecodeError as e:
                    raise TunesmithError(f"{path}: line {i + 1} is not valid JSON ({e.msg}); fix or remove that line") from None
                if not isinstance(rows[-1], dict):
                    raise TunesmithError(f"{path}: line {i + 1} is not a JSON object; each line must be one {{...}} record")
            df = pd.DataFrame(rows)
        else:
            sep = "\t" if fmt == "tsv" else ","
            text = _decode(path, raw)
            _refuse_duplicate_columns(path, next(csv.reader(io.StringIO(text), delimiter=sep), []))
            # keep_default_na=False: the text "NA" or "null" is a real text, not missing ("NaN" labels are
            # treated as missing in dataset.py, where it is known which column holds the labels).
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
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


def check_output_file(path: str | Path, overwrite: bool) -> None:
    """Refuse an output path in one line before any slow work: unknown type, a folder, an existing file
    without --overwrite, or a file standing where a folder of the path should be."""
    path = Path(path)
    if path.is_dir():
        raise TunesmithError(f"{path}: is a folder; give a file name, e.g. --out {path / 'predictions.csv'}")
    file_format(path)
    if path.exists() and not overwrite:
        raise TunesmithError(f"{path}: already exists; pass --overwrite or choose another --out")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise TunesmithError(f"{parent}: is a file, not a folder; choose another --out")
            break


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Written under a temporary name beside `path`, then renamed: a crash never leaves half a file."""
    path = Path(path)
    fmt = file_format(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        elif fmt == "jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_csv(tmp, sep="\t" if fmt == "tsv" else ",", index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
