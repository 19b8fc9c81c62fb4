"""ONNX graph (the task's `graph_output`, logits or a sentence vector, from input_ids + attention_mask, dynamic
batch and length; per-token outputs keep the length axis too), tokenizer files beside it, optional int8
dynamic quantisation of the weights (onnxruntime).
Parity runs the graph through the run's own Predictor (SessionModel stands in for the PyTorch model), so
the check sees the task's encoding (a tagger's windows, a classifier's cut) exactly as predict and serve do."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from tunesmith.errors import TunesmithError

OPSET = 17


class Logits(torch.nn.Module):
    """Only the task's output (`name`), and only the two inputs every tokenizer gives (token types are all 0)."""

    def __init__(self, model, name: str = "logits"):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, input_ids, attention_mask):
        return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), self.name)


class SessionModel(torch.nn.Module):
    """An onnxruntime session where the Predictor expects a Hugging Face model: model(**batch).<name>."""

    def __init__(self, session, config, name: str = "logits"):
        super().__init__()
        self.session, self.config, self.name = session, config, name

    def forward(self, input_ids, attention_mask, **_):
        from types import SimpleNamespace

        z = self.session.run([self.name], {"input_ids": input_ids.cpu().numpy().astype(np.int64),
                                           "attention_mask": attention_mask.cpu().numpy().astype(np.int64)})[0]
        return SimpleNamespace(**{self.name: torch.from_numpy(z)})


def export(run, out, ref, quantize=None) -> dict:
    model = ref.model.float().eval()
    sample = ref.tok(["a short one", "a somewhat longer example sentence for tracing"], padding=True,
                     return_tensors="pt")
    path, name = out / "model.onnx", ref.task.graph_output
    module = ref.task.graph_module(model)  # an encoder's: pooling and normalising in the graph
    module = Logits(model, name) if module is None else module
    with torch.no_grad():  # a tagger's logits have a length axis
        per_token = module(sample["input_ids"], sample["attention_mask"]).ndim == 3
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: needs no onnxscript and handles every encoder we train.
            torch.onnx.export(module, (sample["input_ids"], sample["attention_mask"]), str(path),
                              input_names=["input_ids", "attention_mask"], output_names=[name],
                              dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                            "attention_mask": {0: "batch", 1: "sequence"},
                                            name: {0: "batch", 1: "sequence"} if per_token else {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
    except Exception as e:
        raise TunesmithError(f"{run.path}: ONNX export of this {model.config.model_type} model failed "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); use --format hf") from None
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = out / "model_int8.onnx"
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # its "consider pre-processing" hint is noise here
        try:
            # per-channel scales halve the error of per-tensor ones on MiniLM (measured: max |Δp| 0.23 → 0.12)
            quantize_dynamic(str(path), str(qpath), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        path.unlink()
        path = qpath
    ref.tok.save_pretrained(out)
    model.config.save_pretrained(out)  # label names for whoever loads the graph
    graph = ref.predictor.with_model(SessionModel(make_session(path), model.config, name))

    def predict(texts) -> np.ndarray:
        return ref.probabilities(texts, graph)

    return {"files": sorted(p.name for p in out.iterdir()), "predict": predict}


def make_session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
