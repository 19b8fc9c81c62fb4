"""The audit on copies of real data with planted problems: each planted row is found by number."""
import pytest
from audit_planting import audit_cache, read, sms_planted, topics_planted  # noqa: F401 (fixture)

from tunesmith.audit import audit

pytestmark = pytest.mark.slow  # the real built-in model (minilm) on shared data


@pytest.fixture(scope="module")
def sms(shared_data, tmp_path_factory, audit_cache):
    train, test, where = sms_planted(shared_data, tmp_path_factory.mktemp("sms"))
    return audit(str(train), str(test)), where, train, test


def test_empty_rows(sms):
    r, w, *_ = sms
    f = r.get("empty_text")
    assert f.rows == sorted([w["empty"], w["blank"], w["no_label"]])
    assert f.details["empty_text"] == 2 and f.details["missing_label"] == 1


def test_duplicates_exact_and_variants(sms):
    r, w, train, _ = sms
    f = r.get("duplicates")
    for name, src in (("exact_dup", "src_10"), ("variant_dup", "src_20"), ("conflict", "src_30")):
        assert w[name] in f.rows and w[src] not in f.rows  # the first copy is kept
        assert [w[src], w[name]] in [[g[0], g[-1]] for g in f.groups if w[name] in g] or \
            any(w[src] in g and w[name] in g for g in f.groups)
    # the real SMS duplicates are found too: every group's texts agree after normalising
    df = read(train)
    norm = lambda s: "".join(c for c in s.lower() if c.isalnum())
    for g in f.groups:
        assert len({norm(df.text[i]) for i in g}) == 1


def test_near_duplicates(sms):
    r, w, *_ = sms
    f = r.get("near_duplicates")
    assert any(w["src_41"] in g and w["near_dup"] in g for g in f.groups)
    assert w["near_dup"] in f.rows and f.details["threshold"] == 0.95


def test_label_conflicts(sms):
    r, w, *_ = sms
    f = r.get("label_conflicts")
    assert f.severity == "error"
    assert [w["src_30"], w["conflict"]] in f.groups
    assert w["src_30"] in f.rows and w["conflict"] in f.rows


def test_leakage_rows_are_test_rows(sms):
    r, w, *_ = sms
    f = r.get("leakage")
    assert f.severity == "error"
    for name in ("leak_exact", "leak_variant", "leak_near"):
        assert w[name] in f.rows
        assert w[f"{name}_train"] in f.details["train_rows"]
    match = {g["test"]: g["match"] for g in f.groups}
    assert match[w["leak_exact"]] == "exact" and match[w["leak_near"]] == "near"


def test_truncation_and_encoding_and_pii(sms):
    r, w, *_ = sms
    assert w["long"] in r.get("truncation").rows
    enc = r.get("encoding").details
    assert w["mojibake"] in enc["mojibake_rows"]
    assert w["control"] in enc["control_chars_rows"]
    assert w["mixed_script"] in enc["mixed_scripts_rows"]
    pii = r.get("pii")
    for kind in ("email", "phone", "card"):
        assert w[kind] in pii.details[f"{kind}_rows"]
    assert "example.com" not in str(pii.to_dict()) and "4111" not in str(pii.to_dict())  # never the values


def test_label_noise_finds_flipped_labels(sms):
    r, w, *_ = sms
    f = r.get("label_noise")
    flipped = [w[k] for k in w if k.startswith("noise_")]
    assert set(flipped) <= set(f.rows)
    ranked = {x["row"]: x for x in f.details["ranked"]}
    assert all(ranked[i]["suggested"] != ranked[i]["given"] for i in flipped)
    assert f.rows == sorted(f.rows)


def test_topics_conflict_leak_and_truncation(shared_data, tmp_path, audit_cache):
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.registry import resolve

    train, test, w = topics_planted(shared_data, tmp_path)
    r = audit(str(train), str(test), max_length=256,
              checks=["duplicates", "label_conflicts", "leakage", "class_balance", "truncation"])
    assert [3, w["conflict"]] in r.get("label_conflicts").groups
    assert r.get("leakage").rows == [w["leak"]] and r.get("leakage").details["train_rows"] == [w["leak_train"]]
    # truncation against the real minilm tokenizer, counted independently
    tok = load_tokenizer(resolve("minilm"))
    texts = read(train).text.tolist()
    lengths = [len(x) for x in tok(texts)["input_ids"]]
    f = r.get("truncation")
    assert f.rows == [i for i, n in enumerate(lengths) if n > 256]
    assert f.details["tokens_lost"] == sum(max(0, n - 256) for n in lengths)
    assert 256 < f.details["suggested_max_length"] <= 512 and f.severity == "warning"
