"""LP-FT: the new classifier starts as a linear probe fitted on the frozen model's own features.

Why: a randomly initialised head sends large, random gradients into the pretrained body during the
first steps, which distorts the features the probe baseline shows are already good (Kumar et al. 2022,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"). Fitting the head
first (what the `few_shot_all` baseline does, here on exactly the vector the classifier reads) makes
fine-tuning start where the probe ends. Measured on 600 rows of 20 intents: the first epoch's train loss
falls from ln(20) = 3.0 to about 0.3 at step 0, and the fine-tune no longer trails the probe.

Cost: one inference pass over the training rows plus an L-BFGS fit of a (hidden x classes) matrix:
about 2 s for 10k short rows on 2 cores.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from tunesmith.train import heads
from tunesmith.data.batching import collate, inference_batches
from tunesmith.accel.precision import autocast

# The baselines' C, on features whose spread is normalised (fit). Measured against C=100, minilm, one seed:
# 20 intents x 27 rows 0.963 vs 0.961 macro-F1 (temperature 0.73 vs 0.96); 77 intents x 7 rows 0.818 vs
# 0.813 (temperature 0.39 vs 0.58). C=10 keeps the fine-tune at or above the probe it starts from; a
# sharper probe calibrates better on few-shot data. Three seeds (benchmarks/bench_quality.py) decide.
C = 10.0


def classifier_linear(model) -> nn.Linear | None:
    """The Linear that produces the logits: the last one whose width is the number of labels."""
    n = model.config.num_labels
    found = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mod.out_features == n and "lora" not in name:
            found = mod
    return found


@torch.inference_mode()
def head_inputs(model, lin: nn.Linear, ids, pad_id, bf16: bool, device, batch_size: int = 128) -> torch.Tensor:
    """What `lin` reads for every example (eval mode: no dropout), fp32, in input order."""
    seen = {}

    def grab(mod, args):
        seen["x"] = args[0]

    handle = lin.register_forward_pre_hook(grab)
    was = model.training
    model.eval()
    out = torch.zeros(len(ids), lin.in_features)
    try:
        for batch in inference_batches([len(x) for x in ids], batch_size):
            b = {k: v.to(device) for k, v in collate([ids[i] for i in batch], pad_id).items()}
            with autocast(bf16, device):
                model(**b)
            x = seen["x"]
            if x.ndim == 3:  # decoders score every position and keep the last non-padding one
                last = torch.from_numpy(heads.token_rows("last", [ids[i] for i in batch],
                                                         range(0, x.shape[1] * (len(batch) + 1), x.shape[1]),
                                                         pad_id))
                x = x.reshape(-1, x.shape[-1])[last.to(x.device)]
            out[batch] = x.float().cpu()
    finally:
        handle.remove()
        model.train(was)
    return out


def fit(X: torch.Tensor, y: torch.Tensor, loss_fn, n_out: int, max_iter: int = 300):
    """L2-regularised linear model under the task's own loss (softmax or per-label sigmoid).

    With the features' spread normalised, C plays the role it plays in the baselines' probe."""
    X = X.double()
    n = len(X)
    # The penalty follows the features' spread around their mean (the bias is free, so an offset
    # shared by all rows costs nothing): the same probe whatever the vectors' scale or centre.
    # Scaling X by s scales the best W by 1/s, so the penalty's weight must scale by s^2 to stay put.
    lam = float((X - X.mean(0)).pow(2).sum(1).mean()) / (C * n)
    W = torch.zeros(n_out, X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_out, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(X @ W.T + b, y) + 0.5 * lam * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def init_head(model, task, ids, targets, pad_id, bf16: bool, device, fitted=None):
    """Set the classifier's weights to the probe's; returns (W, b) to reuse with the same model and rows
    (tunesmith tune's trials), or None when the model has no plain Linear classifier."""
    lin = classifier_linear(model)
    if lin is None or len(ids) == 0:
        return None
    if fitted is None:
        model.to(device)
        X = head_inputs(model, lin, ids, pad_id, bf16, device)
        # Multi-label losses average over labels too: summed over them, each label's probe is penalised as
        # a lone binary probe would be (the same C per label as the baselines' one-vs-rest probe).
        per_label = lin.out_features if targets.ndim == 2 else 1
        fitted = fit(X, targets, lambda z, t: task.loss(z, t) * per_label, lin.out_features)
    set_linear(lin, fitted)
    return fitted


def set_linear(lin: nn.Linear, fitted) -> None:
    """The classifier's weights become the probe's (W, b)."""
    W, b = fitted
    with torch.no_grad():
        lin.weight.copy_(W.to(lin.weight.dtype))
        if lin.bias is not None:
            lin.bias.copy_(b.to(lin.bias.dtype))
