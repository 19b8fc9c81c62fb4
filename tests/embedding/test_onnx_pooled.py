"""The embedding run's ONNX graph gives the sentence vector itself (mean pooling over the attention mask and L2
normalisation folded into the graph): a bare onnxruntime session, with nothing of tunesmith, gives what
sentence-transformers gives for the run's model/ folder."""
from __future__ import annotations

import json

import numpy as np

from tunesmith.export import export_run
from tunesmith.predictor import Predictor

from emb_runs import pairs_run  # noqa: F401  (a fixture)

TEXTS = ["tiger", "a short note on piano today", "people often talk of the dolphin and the eagle and the horse",
         "word " * 60]  # the last one is cut to the run's 32 tokens on both sides


def _session_vectors(folder, texts, max_length):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)  # the tokenizer files the export wrote beside the graph
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["sentence_embedding"]
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    return sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                           "attention_mask": enc["attention_mask"].astype(np.int64)})[0]


def test_raw_onnx_session_gives_sentence_transformers_vectors(pairs_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    doc = export_run(pairs_run.path, "onnx", out=tmp_path / "onnx", n_rows=16)
    assert doc["parity"]["max_abs_prob_diff"] < 1e-4  # the export's own check, through tunesmith's Predictor
    max_length = json.loads((tmp_path / "onnx" / "tunesmith_export.json").read_text())["max_length"]
    got = _session_vectors(tmp_path / "onnx", TEXTS, max_length)
    assert got.shape == (len(TEXTS), 32)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # unit length out of the graph
    st = SentenceTransformer(str(pairs_run.path / "model"), device="cpu")
    want = st.encode(TEXTS, normalize_embeddings=True)
    assert np.abs(got - want).max() < 1e-4
    # padding does not leak into the mean: one text alone gives the vector it gets in a padded batch
    alone = _session_vectors(tmp_path / "onnx", TEXTS[:1], max_length)
    assert np.abs(alone[0] - got[0]).max() < 1e-5
    # and tunesmith reads its own export: the Predictor over the session gives `tunesmith embed`'s vectors
    from tunesmith.export.onnx import SessionModel, make_session

    ref = Predictor.load(pairs_run.path, device="cpu")
    graph = ref.with_model(SessionModel(make_session(tmp_path / "onnx" / "model.onnx"), ref.model.config,
                                        "sentence_embedding"))
    assert np.abs(graph.outputs(TEXTS) - ref.outputs(TEXTS)).max() < 1e-4


def test_int8_graph_also_gives_unit_vectors(pairs_run, tmp_path):
    doc = export_run(pairs_run.path, "onnx", quantize="int8", out=tmp_path / "q", n_rows=16)
    assert doc["parity"]["label_agreement"] >= 0.9
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "q" / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(tmp_path / "q")(TEXTS[:3], padding=True, return_tensors="np")
    v = sess.run(None, {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})[0]
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
