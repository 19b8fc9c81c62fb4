"""The classifier reads the sentence vector the checkpoint was trained to produce.

Why: sentence-transformers checkpoints (all-MiniLM, all-mpnet, bge, e5...) were trained to mean-pool
their token states (`modules.json` → `1_Pooling/config.json`). BERT's sequence classifier reads the
[CLS] token through a pooler those checkpoints never trained, so a fine-tune started from a poorer
sentence vector than the frozen-embedding probe it is compared with. Here the pooler of a BERT-family
classifier reads the masked mean of the last hidden states instead, while training.

The saved `model/` must still load in a stock `BertForSequenceClassification` (no remote code), so
`fold` writes the mean into the weights as one extra encoder layer: its queries and keys are zero, so
every token attends uniformly to the unmasked tokens (BERT's own mask), its values are the identity,
so position 0 receives the masked mean; its output projection scales that by C and the LayerNorm
after the residual standardises `C * mean + h[CLS]`, which is `LN(mean + h[CLS] / C)`; its feed-forward
outputs zero. The training pooler computes exactly `LN(mean + h[CLS] / C)` too, so training, the saved
model, `tunesmith predict` and a plain `pipeline` agree to float rounding
(tests/models/test_pooling.py). C = 1000 keeps `C * mean` far inside fp16's range. The extra layer
costs one layer's compute at inference (MiniLM: 6 → 7 layers).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

C = 1000.0
FOLDABLE = ("bert",)  # post-LayerNorm encoders with absolute positions: an extra layer can average


def declared(path) -> str | None:
    """'mean', 'cls', 'max'... as a sentence-transformers folder declares it, else None (no declaration)."""
    p = Path(path)
    modules = p / "modules.json"
    if not modules.is_file():
        return None
    try:
        for m in json.loads(modules.read_text()):
            if m.get("type", "").endswith("Pooling"):
                cfg = json.loads((p / m.get("path", "") / "config.json").read_text())
                for mode in ("mean_tokens", "cls_token", "max_tokens", "lasttoken", "weightedmean_tokens"):
                    if cfg.get(f"pooling_mode_{mode}"):
                        return mode.split("_")[0]
    except (OSError, ValueError, TypeError):
        return None
    return None


class MeanPooler(nn.Module):
    """BertPooler's place and parameter names (dense), reading LN(masked mean + h[CLS] / C)."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()
        self.eps = eps
        self.mask = None  # set before each forward by the backbone's pre-hook (install)
        with torch.no_grad():  # identity start: tanh of the standardised mean, what the probe fits on
            self.dense.weight.copy_(torch.eye(hidden_size))
            self.dense.bias.zero_()

    def sentence(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = hidden.float()  # sums and counts in fp32: bf16 counts are exact only up to 256 tokens
        if mask is None:
            mean = h.mean(1)
        else:
            m = mask.to(h.dtype).unsqueeze(-1)
            mean = (h * m).sum(1) / m.sum(1).clamp(min=1)
        x = mean + h[:, 0] / C
        return F.layer_norm(x, x.shape[-1:], eps=self.eps).to(hidden.dtype)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(self.sentence(hidden_states, self.mask)))


def _remember_mask(module, args, kwargs):
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    module.pooler.mask = mask


def install(model, model_path) -> str:
    """Switch a BERT-family classifier to the checkpoint's declared mean pooling; returns the pooling used."""
    if declared(model_path) != "mean" or model.config.model_type not in FOLDABLE:
        return "native"
    backbone = model.bert
    if backbone.pooler is None:
        return "native"
    backbone.pooler = MeanPooler(model.config.hidden_size, model.config.layer_norm_eps)
    backbone.register_forward_pre_hook(_remember_mask, with_kwargs=True)
    return "mean"


def uses_mean(model) -> bool:
    base = getattr(model, "bert", None)
    return isinstance(getattr(base, "pooler", None), MeanPooler)


def fold(model):
    """A stock classifier with one more layer that computes what MeanPooler does (see the module doc)."""
    if not uses_mean(model):
        return model
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.config)
    config.num_hidden_layers += 1
    config.tunesmith_pooling = "mean"  # informative: a stock class ignores unknown config keys
    folded = AutoModelForSequenceClassification.from_config(config).to(next(model.parameters()).device)
    state = {k: v for k, v in model.state_dict().items()}
    missing, unexpected = folded.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    layer = folded.bert.encoder.layer[-1]
    d = config.hidden_size
    with torch.no_grad():
        eye = torch.eye(d)
        for lin, w in ((layer.attention.self.query, 0), (layer.attention.self.key, 0),
                       (layer.attention.self.value, 1), (layer.attention.output.dense, C)):
            lin.weight.copy_(eye * w)
            lin.bias.zero_()
        for ln in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        layer.intermediate.dense.weight.zero_()
        layer.intermediate.dense.bias.zero_()
        layer.output.dense.weight.zero_()
        layer.output.dense.bias.zero_()
    assert all(k.startswith(f"bert.encoder.layer.{config.num_hidden_layers - 1}.") for k in missing), missing
    return folded.train(model.training)
