"""Token classification data: sentences of words with one BIO tag each, read from three formats.

- JSONL `{"tokens": [...], "tags": [...]}` (also `words` / `ner_tags` / `labels` for the tag list);
- CoNLL: a token and its tag per line (the tag is the last column, so CoNLL-2003's four columns work),
  a blank line between sentences, `-DOCSTART-` lines skipped (.conll, .iob, .iob2, .bio, .bioes);
- JSONL of raw text and character spans, as annotation tools export them: `{"text", "entities": [{"start",
  "end", "label"}]}` (Prodigy's `spans`, doccano's `label: [[start, end, "X"], ...]` and Label Studio's
  `{"data": {"text"}, "annotations": [{"result": [{"value": {"start", "end", "labels"}}]}]}` too). The
  text is cut into words (runs of letters and digits, every other visible character a word of its own,
  and a cut wherever a span starts or ends), so that every span is whole words; offsets are kept.

Tags in BIO (IOB2), IOB1 and BIOES (or BILOU) come out as BIO: S-/U- become B-, E-/L- become I-, and an
I-X that starts an entity (after O or another type: IOB1's rule, and BIO's most common error) becomes B-X,
which is how seqeval and conlleval read it too. Bad input is one line naming the file and the line.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunesmith.errors import TunesmithError

CONLL_SUFFIXES = (".conll", ".conll03", ".iob", ".iob2", ".bio", ".bioes")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TOKEN_KEYS = ("tokens", "words")
TAG_KEYS = ("tags", "ner_tags", "labels")
SPAN_KEYS = ("entities", "spans", "label")
SCHEMES = "BIO, IOB1 and BIOES"

TAG_RE = re.compile(r"^([BIESLU])[-_](\S.*)$")
# A word: letters/digits joined by in-word apostrophes, hyphens and dots (don't, e-mail, U.S, 3.5), or any
# other single visible character (punctuation, symbols, emoji).
WORD_RE = re.compile(r"\w+(?:['’.\-]\w+)*|\S")


@dataclass
class Sentence:
    """One unit of training and scoring: words, their BIO tags, the text they stand in and each word's
    character span in it (token formats: the words joined by single spaces)."""
    tokens: list[str]
    tags: list[str]
    text: str
    offsets: list[tuple[int, int]]
    row: int = 0  # 1-based line of the file where it starts (0: not from a file)

    def __len__(self):
        return len(self.tokens)


@dataclass
class Loaded:
    sentences: list[Sentence]
    path: str
    format: str                                   # conll | tokens | spans
    scheme: str                                   # BIO | IOB1 | BIOES
    columns: dict = field(default_factory=dict)   # tokens/tags or text/entities keys found
    started_by_i: list[int] = field(default_factory=list)  # lines where an I- tag started an entity
    skipped: int = 0                              # rows without any word

    def info(self) -> dict:
        return {"path": self.path, "format": self.format, "scheme": self.scheme, "sentences": len(self.sentences),
                "i_tags_starting_entities": len(self.started_by_i), "skipped_empty": self.skipped}


# ---- words and offsets -------------------------------------------------------------------------------------------
def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words joined by single spaces, and each word's span in that text."""
    offsets, pos = [], 0
    for t in tokens:
        offsets.append((pos, pos + len(t)))
        pos += len(t) + 1
    return " ".join(tokens), offsets


def split_words(text: str, cuts=()) -> list[tuple[int, int]]:
    """Character spans of the words of a raw text, also cut at each position in `cuts` (span boundaries)."""
    cuts = sorted(set(cuts))
    out = []
    for m in WORD_RE.finditer(text):
        s, e = m.span()
        i = np.searchsorted(cuts, s, side="right") if cuts else 0
        while cuts and i < len(cuts) and cuts[i] < e:
            out.append((s, cuts[i]))
            s = cuts[i]
            i += 1
        out.append((s, e))
    return out


def words_of(item) -> tuple[list[str], str, list[tuple[int, int]]]:
    """(words, text, offsets) of an input: a raw text, or a list of words (joined by spaces)."""
    if isinstance(item, Sentence):
        return item.tokens, item.text, item.offsets
    if isinstance(item, str):
        offsets = split_words(item)
        return [item[s:e] for s, e in offsets], item, offsets
    tokens = [str(t) for t in item]
    text, offsets = join_tokens(tokens)
    return tokens, text, offsets


# ---- tags --------------------------------------------------------------------------------------------------------
def entity_type(tag: str) -> str | None:
    return None if tag == "O" else tag[2:]


def repair(tags: list[str]) -> tuple[list[str], list[int]]:
    """BIO whose every entity starts with B-: an I-X after O or another type becomes B-X (conlleval's and
    seqeval's reading). Returns the tags and the positions changed."""
    out, changed, prev = [], [], "O"
    for i, t in enumerate(tags):
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            t = "B-" + t[2:]
            changed.append(i)
        out.append(t)
        prev = t
    return out, changed


def normalise_tags(path, sentences: list[Sentence]) -> tuple[str, list[int]]:
    """Turns every sentence's tags into BIO in place; (the scheme found, lines where an I- started an entity).
    An unknown tag is one line naming it."""
    parsed = []
    bioes = False
    for s in sentences:
        row = []
        for j, t in enumerate(s.tags):
            if t == "O":
                row.append(("O", None))
                continue
            m = TAG_RE.match(t)
            if not m:
                raise TunesmithError(
                    f"{path}: line {s.row}: tag '{t}' (word {j + 1}, '{s.tokens[j]}') is not O nor B-/I-/E-/S- "
                    f"with a type; unknown tag scheme: tunesmith reads {SCHEMES} tags (e.g. B-person, "
                    f"I-person, O): rename the tags")
            p = m.group(1)
            bioes = bioes or p in "ESLU"
            row.append(({"S": "B", "U": "B", "E": "I", "L": "I"}.get(p, p), m.group(2)))
        parsed.append(row)
    b_after_same = b_total = i_starts = 0
    started = []
    for s, row in zip(sentences, parsed):
        tags = ["O" if p == "O" else f"{p}-{typ}" for p, typ in row]
        prev = "O"
        for t in tags:
            if t.startswith("B-"):
                b_total += 1
                b_after_same += prev != "O" and prev[2:] == t[2:]
            prev = t
        s.tags, changed = repair(tags)
        i_starts += len(changed)
        if changed:
            started.append(s.row)
    if bioes:
        scheme = "BIOES"
    elif i_starts and b_after_same == b_total:
        scheme = "IOB1"  # B- only ever separates two adjacent entities of one type
    else:
        scheme = "BIO"
    return scheme, started


def bio_labels(sentences: list[Sentence]) -> list[str]:
    """O, then B- and I- of each entity type in name order: the model's id2label."""
    types = sorted({t[2:] for s in sentences for t in s.tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word) of a well-formed BIO sequence (repair() first for predictions)."""
    out, start, typ = [], None, None
    for i, t in enumerate(list(tags) + ["O"]):
        if start is not None and not (t.startswith("I-") and t[2:] == typ):
            out.append((typ, start, i))
            start = None
        if t.startswith("B-") or (t.startswith("I-") and start is None):
            start, typ = i, t[2:]
    return out


# ---- reading -----------------------------------------------------------------------------------------------------
def is_conll(path) -> bool:
    return Path(path).suffix.lower() in CONLL_SUFFIXES


def _text(path: Path) -> str:
    if not path.exists():
        raise TunesmithError(f"{path}: file not found")
    if path.is_dir():
        raise TunesmithError(f"{path}: is a directory, expected a data file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TunesmithError(f"{path}: line {line} has bytes that are not UTF-8; re-save the file as UTF-8") from None


def read_conll(path: Path) -> list[Sentence]:
    sentences, tokens, tags, start = [], [], [], 0

    def close():
        if tokens:
            text, offsets = join_tokens(tokens)
            sentences.append(Sentence(list(tokens), list(tags), text, offsets, start))
        tokens.clear()
        tags.clear()

    for i, line in enumerate(_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            close()
            continue
        if parts[0] == "-DOCSTART-":
            close()
            continue
        if len(parts) < 2:
            raise TunesmithError(f"{path}: line {i}: '{line.strip()[:40]}' has a token but no tag; each line "
                                 f"needs a token, white space and its tag (a blank line between sentences)")
        if not tokens:
            start = i
        tokens.append(parts[0])
        tags.append(parts[-1])
    close()
    return sentences


def _records(path: Path):
    """(line number, JSON object) of a JSONL file (a .json file holding one list of objects works too)."""
    text = _text(path)
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise TunesmithError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        for i, rec in enumerate(doc, 1):
            if not isinstance(rec, dict):
                raise TunesmithError(f"{path}: item {i} is not a JSON object")
            yield i, rec
        return
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TunesmithError(f"{path}: line {i} is not valid JSON ({e.msg}); fix or remove that line") from None
        if not isinstance(rec, dict):
            raise TunesmithError(f"{path}: line {i} is not a JSON object; each line must be one {{...}} record")
        yield i, rec


def _first_record(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None
    return None


def jsonl_format(rec: dict, tokens_key=None, tags_key=None) -> tuple[str, dict] | None:
    """("tokens", {tokens, tags}) or ("spans", {text, entities}) from a record's keys, else None."""
    keys = {k.lower(): k for k in rec}
    tk = tokens_key if tokens_key in rec else next((keys[k] for k in TOKEN_KEYS if k in keys), None)
    gk = tags_key if tags_key in rec else next((keys[k] for k in TAG_KEYS if k in keys), None)
    if tk and gk and isinstance(rec[tk], list):
        return "tokens", {"tokens": tk, "tags": gk}
    if isinstance(rec.get("data"), dict) and "annotations" in rec:  # Label Studio
        return "spans", {"text": "data.text", "entities": "annotations"}
    xk = tokens_key if tokens_key in rec else keys.get("text")
    ek = tags_key if tags_key in rec else next((keys[k] for k in SPAN_KEYS if k in keys), None)
    if xk and ek and isinstance(rec[xk], str) and isinstance(rec[ek], list) and _span_like(rec[ek], ek):
        return "spans", {"text": xk, "entities": ek}
    return None


def _span_like(v: list, key: str) -> bool:
    """A list of spans ({start, end, ...} or doccano's [start, end, label]), not a multilabel row's labels."""
    if not v:
        return key.lower() != "label"
    e = v[0]
    return (isinstance(e, dict) and "start" in e and "end" in e) or (
        isinstance(e, (list, tuple)) and len(e) == 3 and isinstance(e[0], int) and isinstance(e[1], int))


def detect(path, tokens_key=None, tags_key=None) -> str | None:
    """The format name of a token-classification file, or None when it is not one (--task auto)."""
    path = Path(path)
    if is_conll(path):
        return "conll"
    if path.suffix.lower() not in JSONL_SUFFIXES or not path.is_file():
        return None
    rec = _first_record(path)
    found = jsonl_format(rec, tokens_key, tags_key) if rec else None
    return found[0] if found else None


def _tokens_sentence(path, i, rec, cols) -> Sentence | None:
    tokens, tags = rec.get(cols["tokens"]), rec.get(cols["tags"])
    if not isinstance(tokens, list) or not isinstance(tags, list):
        raise TunesmithError(f"{path}: line {i}: '{cols['tokens']}' and '{cols['tags']}' must both be lists")
    if len(tokens) != len(tags):
        raise TunesmithError(f"{path}: line {i}: {len(tokens)} tokens but {len(tags)} tags; tokens and tags are "
                             f"misaligned: give every token exactly one tag")
    for j, (t, g) in enumerate(zip(tokens, tags)):
        if not isinstance(t, str) or not t.strip():
            raise TunesmithError(f"{path}: line {i}: token {j + 1} is empty ({json.dumps(t)}); remove it and "
                                 f"its tag, or write the word")
        if not isinstance(g, str):
            raise TunesmithError(f"{path}: line {i}: tag {j + 1} is {json.dumps(g)}, not a name; write tag names "
                                 f"(B-person, I-person, O), not ids")
    if not tokens:
        return None
    tokens = [t.strip() for t in tokens]
    text, offsets = join_tokens(tokens)
    return Sentence(tokens, list(tags), text, offsets, i)


def _spans_of(path, i, rec, cols) -> tuple[str, list[tuple[int, int, str]]]:
    if cols["text"] == "data.text":  # Label Studio: the first annotation's labelled spans
        text = rec["data"].get("text")
        anns = rec.get("annotations") or []
        raw = [r.get("value", {}) for r in (anns[0].get("result", []) if anns else [])]
        raw = [{"start": v.get("start"), "end": v.get("end"), "label": (v.get("labels") or [None])[0]}
               for v in raw if "start" in v]
    else:
        text, raw = rec.get(cols["text"]), rec.get(cols["entities"])
    if not isinstance(text, str):
        raise TunesmithError(f"{path}: line {i}: the text is {type(text).__name__}, not a string")
    spans = []
    for k, e in enumerate(raw or []):
        if isinstance(e, (list, tuple)) and len(e) == 3:  # doccano [start, end, label]
            e = {"start": e[0], "end": e[1], "label": e[2]}
        if not isinstance(e, dict):
            raise TunesmithError(f"{path}: line {i}: entity {k + 1} is not {{start, end, label}}")
        s, t, lab = e.get("start"), e.get("end"), e.get("label", (e.get("labels") or [None])[0])
        if not (isinstance(s, int) and isinstance(t, int)) or not isinstance(lab, str) or not lab.strip():
            raise TunesmithError(f"{path}: line {i}: entity {k + 1} needs integer start and end and a label "
                                 f"(got {json.dumps(e)[:80]})")
        if not 0 <= s < t <= len(text):
            raise TunesmithError(f"{path}: line {i}: entity {k + 1} [{s}, {t}) is outside the text of {len(text)} "
                                 f"characters (or empty); offsets count characters from 0, end excluded")
        while s < t and text[s].isspace():  # annotators often take a space along: the words are what counts
            s += 1
        while t > s and text[t - 1].isspace():
            t -= 1
        if s == t:
            raise TunesmithError(f"{path}: line {i}: entity {k + 1} ({lab}) covers only white space; remove it")
        lab = lab.strip()
        if TAG_RE.match(lab) or lab == "O":
            raise TunesmithError(f"{path}: line {i}: entity {k + 1} has the label '{lab}'; a span's label is "
                                 f"the entity type (person), not a tag")
        spans.append((s, t, lab))
    spans = sorted(set(spans))
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            raise TunesmithError(f"{path}: line {i}: overlapping spans [{a[0]}, {a[1]}) {a[2]} "
                                 f"'{text[a[0]:a[1]][:30]}' and [{b[0]}, {b[1]}) {b[2]} '{text[b[0]:b[1]][:30]}'; "
                                 f"each word takes one tag: keep one of them")
    return text, spans


def spans_sentence(text: str, spans, row: int = 0) -> Sentence | None:
    """A text with (start, end, label) character spans → words (cut at the span boundaries) with BIO tags."""
    offsets = split_words(text, [x for s, t, _ in spans for x in (s, t)])
    if not offsets:
        return None
    tags = ["O"] * len(offsets)
    starts = np.array([s for s, _ in offsets])
    for s, t, lab in spans:
        j = int(np.searchsorted(starts, s))
        first = True
        while j < len(offsets) and offsets[j][0] < t:
            tags[j] = ("B-" if first else "I-") + lab
            first = False
            j += 1
    return Sentence([text[s:e] for s, e in offsets], tags, text, offsets, row)


def read(path, tokens_key: str | None = None, tags_key: str | None = None) -> Loaded:
    """Every sentence of a file with BIO tags; one line naming the file and line for anything wrong."""
    path = Path(path)
    if is_conll(path):
        sentences, fmt, cols, skipped = read_conll(path), "conll", {}, 0
    elif path.suffix.lower() in JSONL_SUFFIXES:
        sentences, fmt, cols, skipped = [], None, {}, 0
        for i, rec in _records(path):
            if fmt is None:
                found = jsonl_format(rec, tokens_key, tags_key)
                if found is None:
                    raise TunesmithError(
                        f"{path}: line {i} has keys {', '.join(map(str, rec))[:120]}; token classification reads "
                        f"{{\"tokens\": [...], \"tags\": [...]}} or {{\"text\": ..., \"entities\": [{{\"start\", "
                        f"\"end\", \"label\"}}]}} lines, or a CoNLL file (.conll)")
                fmt, cols = found
            if fmt == "tokens":
                if not all(c in rec for c in cols.values()):
                    raise TunesmithError(f"{path}: line {i} lacks '{cols['tokens']}' or '{cols['tags']}', which "
                                         f"the first line has; every line needs both")
                s = _tokens_sentence(path, i, rec, cols)
            else:
                s = spans_sentence(*_spans_of(path, i, rec, cols), row=i)
            if s is None:
                skipped += 1
            else:
                sentences.append(s)
    else:
        raise TunesmithError(f"{path}: token classification reads JSONL (.jsonl) or CoNLL (.conll, .iob, .bio) "
                             f"files, not '{path.suffix}'")
    if not sentences:
        raise TunesmithError(f"{path}: no sentences with words; check the file's format")
    scheme, started = normalise_tags(path, sentences)
    return Loaded(sentences, str(path), fmt, scheme, cols, started, skipped)


def split(sentences: list[Sentence], fraction: float, seed: int) -> tuple[list[Sentence], list[Sentence]]:
    """(rest, held out): a seeded random share of the sentences, each side in file order."""
    n = len(sentences)
    k = int(round(n * fraction))
    if k < 1 or k >= n:
        raise TunesmithError(f"{n} sentences are too few to hold out {fraction:.0%} of them; give more data, a "
                             f"--test file, or another --test-fraction / --val-fraction (0: no validation)")
    held = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    return [s for i, s in enumerate(sentences) if i not in held], [s for i, s in enumerate(sentences) if i in held]
