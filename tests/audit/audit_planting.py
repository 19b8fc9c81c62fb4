"""Copies of real data with known problems planted at known rows (row = 0-based data row of the copy)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest



@pytest.fixture(scope="session")
def audit_cache(tmp_path_factory):
    """A fresh embedding cache shared by the audit tests (the real path: compute once, then hit)."""
    old = os.environ.get("TUNESMITH_CACHE")
    os.environ["TUNESMITH_CACHE"] = str(tmp_path_factory.mktemp("audit-cache"))
    yield
    if old is None:
        os.environ.pop("TUNESMITH_CACHE", None)
    else:
        os.environ["TUNESMITH_CACHE"] = old


LONG = " ".join(["the patient was treated with a new regimen of medication and monitored closely"] * 30)


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def insert(df: pd.DataFrame, planted: list[tuple[int, str, dict]]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Insert rows before the given original positions; returns the frame and each plant's final row."""
    rows = df.to_dict("records")
    tagged = [(None, r) for r in rows]
    for pos, name, row in sorted(planted, key=lambda p: -p[0]):  # from the back: earlier positions stay valid
        tagged.insert(pos, (name, row))
    where = {name: i for i, (name, _) in enumerate(tagged) if name is not None}
    return pd.DataFrame([r for _, r in tagged]), where


def sms_planted(shared: Path, tmp: Path) -> tuple[Path, Path, dict]:
    """300 rows of SMS spam (real duplicates included) + planted problems; a test file with leaks."""
    sms = read(shared / "sms_spam" / "sms_spam.csv")
    base = sms.iloc[:300].reset_index(drop=True)
    t = base.text
    flip = {"spam": "ham", "ham": "spam"}
    planted = [
        (250, "exact_dup", {"text": t[10], "label": base.label[10]}),
        (60, "variant_dup", {"text": "  " + t[20].upper().replace(" ", "   ") + "!!!", "label": base.label[20]}),
        (299, "conflict", {"text": t[30], "label": flip[base.label[30]]}),
        (100, "empty", {"text": "", "label": "ham"}),
        (150, "blank", {"text": "   \t ", "label": "spam"}),
        (200, "no_label", {"text": "see you at the station at six", "label": ""}),
        (120, "long", {"text": LONG, "label": "ham"}),
        (180, "near_dup", {"text": t[41].replace("my sweet", "my lovely"), "label": base.label[41]}),
        (90, "mojibake", {"text": "Thatâ€™s the cafÃ© I told you about", "label": "ham"}),
        (95, "control", {"text": "ok see you\x07 later", "label": "ham"}),
        (97, "mixed_script", {"text": "log in to your pаypal account now", "label": "spam"}),
        (10, "email", {"text": "write to john.doe@example.com about the flat", "label": "ham"}),
        (11, "phone", {"text": "ring me on +44 7700 900123 tonight", "label": "ham"}),
        (12, "card", {"text": "my card is 4111 1111 1111 1111 pls pay", "label": "ham"}),
    ]
    # label noise: obvious spam (prize, claim, call now) marked ham, and a plain ham marked spam
    noisy = {8: "ham", 12: "ham", 56: "ham", 60: "spam"}
    for i, lab in noisy.items():
        assert base.label[i] != lab
        base.loc[i, "label"] = lab
    df, where = insert(base, planted)
    where.update({f"noise_{i}": i + sum(p[0] <= i for p in planted) for i in noisy})
    train = tmp / "sms_train.csv"
    df.to_csv(train, index=False)
    test_base = sms.iloc[300:400].reset_index(drop=True)
    test_df, twhere = insert(test_base, [
        (20, "leak_exact", {"text": t[5], "label": base.label[5]}),
        (50, "leak_variant", {"text": t[6].lower() + " ...", "label": base.label[6]}),
        (70, "leak_near", {"text": t[44].replace("you like", "u like"), "label": base.label[44]}),
    ])
    test = tmp / "sms_test.csv"
    test_df.to_csv(test, index=False)
    # the rows of train those test rows copy, in the planted copy's numbering
    src = {"leak_exact": 5, "leak_variant": 6, "leak_near": 44}
    where.update({k: twhere[k] for k in src})
    where.update({f"{k}_train": v + sum(p[0] <= v for p in planted) for k, v in src.items()})
    where["src_20"] = 20 + sum(p[0] <= 20 for p in planted)
    where["src_10"] = 10 + sum(p[0] <= 10 for p in planted)
    where["src_30"] = 30 + sum(p[0] <= 30 for p in planted)
    where["src_41"] = 41 + sum(p[0] <= 41 for p in planted)
    return train, test, where


def topics_planted(shared: Path, tmp: Path, n: int = 120) -> tuple[Path, Path, dict]:
    """Medical abstracts (long texts): a duplicated abstract with another label, a test leak."""
    tr = read(shared / "topics" / "train.csv").iloc[:n].reset_index(drop=True)
    te = read(shared / "topics" / "test.csv").iloc[:40].reset_index(drop=True)
    other = next(l for l in sorted(set(tr.label)) if l != tr.label[3])
    df, where = insert(tr, [(70, "conflict", {"text": tr.text[3], "label": other})])
    te2, twhere = insert(te, [(15, "leak", {"text": tr.text[50], "label": tr.label[50]})])
    where["leak"] = twhere["leak"]
    where["leak_train"] = 50 + (70 <= 50)
    train, test = tmp / "topics_train.csv", tmp / "topics_test.csv"
    df.to_csv(train, index=False)
    te2.to_csv(test, index=False)
    return train, test, where


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """The installed entry point in-process: exit code, stdout, stderr."""
    import sys

    from tunesmith import cli

    monkeypatch.setattr(sys, "argv", ["tunesmith", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err
