"""Text that was damaged on its way into the file: mojibake, control characters, look-alike scripts."""
import re
import unicodedata

from tunesmith.audit.base import AuditData, Finding

NAME = "encoding"
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{2,5}|#x[0-9a-fA-F]{2,4});")
NON_ASCII_WORD = re.compile(r"\w*[^\x00-\x7f]\w*")
CONFUSABLE = {"LATIN", "CYRILLIC", "GREEK"}  # scripts with look-alike letters (а/a, ο/o): spoofing or bad OCR


def _mixed_script(text: str) -> bool:
    for word in NON_ASCII_WORD.findall(text):
        scripts = {unicodedata.name(c, "?").split()[0] for c in word if c.isalpha()}
        if len(scripts & CONFUSABLE) > 1:
            return True
    return False


def run(data: AuditData) -> Finding:
    from ftfy.badness import is_bad  # ftfy's mojibake detector: UTF-8 read as Latin-1/cp1252 and similar

    kinds = {"mojibake": [], "replacement_char": [], "control_chars": [], "mixed_scripts": [], "html_entities": []}
    for i, text in enumerate(data.train.texts):
        row = data.train.rows[i]
        if is_bad(text):
            kinds["mojibake"].append(row)
        if "\ufffd" in text:
            kinds["replacement_char"].append(row)
        if CONTROL.search(text):
            kinds["control_chars"].append(row)
        if _mixed_script(text):
            kinds["mixed_scripts"].append(row)
        if ENTITY.search(text):
            kinds["html_entities"].append(row)
    rows = sorted({r for rs in kinds.values() for r in rs})
    details = {k: len(v) for k, v in kinds.items()} | {f"{k}_rows": v for k, v in kinds.items()}
    return Finding(NAME, "warning" if rows else "ok", rows, details=details,
                   fix="repair (ftfy.fix_text, html.unescape) and save as UTF-8")
