"""Personal data a model can memorise: e-mail addresses, phone numbers, card-like numbers.
Counts and rows only: the values never appear in a report."""
import re

from tunesmith.audit.base import AuditData, Finding

NAME = "pii"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}")
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
# 9+ digits: fewer catch years, amounts and short codes; with optional +, spaces, dots, dashes, brackets.
PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{7,18}\d(?!\w)")


def luhn(digits: str) -> bool:
    total = 0
    for k, d in enumerate(reversed(digits)):
        n = int(d) * (2 if k % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def scan(text: str) -> dict[str, int]:
    found = {"email": len(EMAIL.findall(text)), "card": 0, "phone": 0}
    cards = []
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn(digits):
            found["card"] += 1
            cards.append(m.span())
    for m in PHONE.finditer(text):
        overlaps = any(a < m.end() and m.start() < b for a, b in cards)
        if not overlaps and 9 <= sum(c.isdigit() for c in m.group()) <= 15:
            found["phone"] += 1
    return found


def run(data: AuditData) -> Finding:
    rows = {"email": [], "phone": [], "card": []}
    totals = dict.fromkeys(rows, 0)
    for i, text in enumerate(data.train.texts):
        for kind, n in scan(text).items():
            if n:
                rows[kind].append(data.train.rows[i])
                totals[kind] += n
    flagged = sorted({r for rs in rows.values() for r in rs})
    return Finding(NAME, "warning" if flagged else "ok", flagged,
                   details={"counts": totals, **{f"{k}_rows": v for k, v in rows.items()}},
                   fix="mask personal data (<EMAIL>, <PHONE>) before training")
