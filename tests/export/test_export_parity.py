"""Export checks itself: ONNX (fp32, int8) and HF folders match PyTorch's probabilities or fail."""
import json

import numpy as np
import pytest

import tunesmith
from tunesmith.errors import TunesmithError
from tunesmith.export import export_run, parity


def test_onnx_fp32_and_int8_pass_parity(tiny_run, tmp_path):
    res = export_run(tiny_run.path, "onnx", out=tmp_path / "onnx")
    p = res["parity"]
    assert p["max_abs_prob_diff"] <= parity.TOLERANCE["fp32"]["max_abs_prob_diff"] and p["n"] > 10
    assert {"model.onnx", "tokenizer.json", "config.json"} <= set(res["files"])
    manifest = json.loads((tmp_path / "onnx" / parity.MANIFEST).read_text())
    assert manifest["labels"] == tunesmith.api.open_run(tiny_run.path).metrics["labels"]
    q = export_run(tiny_run.path, "onnx", quantize="int8", out=tmp_path / "int8")
    assert "model_int8.onnx" in q["files"] and q["parity"]["label_agreement"] >= 0.9
    assert q["parity"]["mean_top_prob_diff"] <= parity.TOLERANCE["int8"]["mean_top_prob_diff"]

    # the graph runs on its own with onnxruntime + the tokenizer files beside it
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    enc = tok(["my invoice", "a parcel for me please"], padding=True, return_tensors="np")
    s = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = s.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    assert logits.shape == (2, 3)
    frame = tunesmith.predict(tiny_run.path, ["my invoice", "a parcel for me please"])
    assert list(frame["prediction"]) == [manifest["labels"][i] for i in logits.argmax(1)]


def test_hf_export_reloads(tiny_run, tmp_path):
    from transformers import pipeline

    res = export_run(tiny_run.path, "hf", out=tmp_path / "hf")
    assert "model.safetensors" in res["files"] and res["parity"]["max_abs_prob_diff"] == 0.0
    clf = pipeline("text-classification", model=str(tmp_path / "hf"), tokenizer=str(tmp_path / "hf"))
    assert clf("refund please")[0]["label"] in res["labels"]


def test_parity_failure_removes_the_export(tiny_run, tmp_path, monkeypatch):
    from tunesmith.export import onnx

    real = onnx.SessionModel.forward

    def off(self, input_ids, attention_mask, **kw):  # the graph's first label comes out 3 logits high
        out = real(self, input_ids, attention_mask)
        out.logits[:, 0] += 3.0
        return out

    monkeypatch.setattr(onnx.SessionModel, "forward", off)
    with pytest.raises(TunesmithError, match="parity check failed"):
        export_run(tiny_run.path, "onnx", out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_refuses_to_clobber(tiny_run, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("user file")
    with pytest.raises(TunesmithError, match="already exists"):
        export_run(tiny_run.path, "hf", out=keep)
    with pytest.raises(TunesmithError, match="not a tunesmith export"):
        export_run(tiny_run.path, "hf", out=keep, overwrite=True)
    assert (keep / "notes.txt").exists()
    with pytest.raises(TunesmithError, match="only int8 with --format onnx"):
        export_run(tiny_run.path, "hf", quantize="int8", out=tmp_path / "q")


def test_overwrite_keeps_what_the_user_put_beside_an_export(tiny_run, tmp_path):
    out = tmp_path / "exp"
    export_run(tiny_run.path, "hf", out=out)
    (out / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(TunesmithError, match="Dockerfile"):
        export_run(tiny_run.path, "hf", out=out, overwrite=True)
    assert (out / "Dockerfile").read_text() == "FROM scratch\n"
    (out / "Dockerfile").unlink()
    assert export_run(tiny_run.path, "hf", out=out, overwrite=True)["parity"]["n"] > 0  # its own files: replaced
