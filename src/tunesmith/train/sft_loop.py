"""The causal-LM training loop for instruction tuning, same structure as train/loop.py.

AdamW with warmup and decay, accumulation, clipping, bf16 autocast, held-out response loss after
each epoch, early stopping on it, best restored, Ctrl-C checkpoint and exact resume.

Two things make it faster than a generic trainer: batches are grouped by length (little padding),
and the LM head runs only at positions that carry a label (prompt and padding positions never
produce a vocabulary-sized logit row).
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from tunesmith.tasks.sft_data import IGNORE, SFTData
from tunesmith.train import cpu_malloc, fast_dropout
from tunesmith.train.batching import epoch_batches, inference_batches
from tunesmith.train.checkpoint import (atomic_save, load_resume, load_trainable, load_weights, save_resume,
                                       trainable_state)
from tunesmith.train.loop import FitResult, Interrupted, _StopFlag, track_best
from tunesmith.train.optim import optimizer_and_schedule, optimizer_step
from tunesmith.train.precision import autocast


def collate_sft(data: SFTData, units: list[list[int]], pad_id: int) -> dict:
    """Rows of concatenated examples, right-padded. Position ids restart at every example (and at the
    padding), and no attention mask is passed: transformers then reads the restarts as sequence
    boundaries and builds a block-diagonal causal mask, so packed examples never see each other."""
    n = max(sum(len(data.ids[i]) for i in u) for u in units)
    ids = torch.full((len(units), n), pad_id, dtype=torch.long)
    labels = torch.full((len(units), n), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(units), n), dtype=torch.long)
    seg = torch.full((len(units), n), -1, dtype=torch.long)   # example index per position, -1 = padding
    for r, u in enumerate(units):
        at = 0
        for i in u:
            k = len(data.ids[i])
            ids[r, at:at + k] = torch.tensor(data.ids[i])
            labels[r, at:at + k] = torch.tensor(data.labels[i])
            pos[r, at:at + k] = torch.arange(k)
            seg[r, at:at + k] = i
            at += k
        pos[r, at:] = torch.arange(n - at)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "segments": seg}


def _parts(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base, base.base_model, base.get_output_embeddings()


def token_losses(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-target-token losses, their example index, their position mask) for one batch."""
    base, backbone, head = _parts(model)
    targets = batch["labels"][:, 1:]
    sel = targets != IGNORE
    kw = dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    if getattr(base.config, "final_logit_softcapping", None) or getattr(base.config, "logit_scale", None):
        logits = model(**kw).logits[:, :-1][sel]  # heads with extra scaling: use the model's own
    else:
        h = backbone(**kw).last_hidden_state[:, :-1]
        logits = head(h[sel])
    loss = F.cross_entropy(logits.float(), targets[sel], reduction="none")
    return loss, batch["segments"][:, 1:][sel], sel


@torch.no_grad()
def response_loss(model, data: SFTData, pad_id: int, batch_size: int, bf16: bool, device) -> dict:
    """Mean loss per response token over `data` (unpacked), its perplexity, and per-example sums."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    per_example = torch.zeros(len(data), dtype=torch.float64)
    for idx in inference_batches([len(x) for x in data.ids], batch_size):
        b = {k: v.to(device) for k, v in collate_sft(data, [[i] for i in idx], pad_id).items()}
        with autocast(bf16, device):
            loss, seg, _ = token_losses(model, b)
        total += float(loss.double().sum())
        count += loss.numel()
        per_example.index_add_(0, seg.cpu(), loss.double().cpu())
    model.train(was_training)
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50)), "tokens": count, "per_example": per_example}


def fit_sft(model, train: SFTData, val: SFTData | None, recipe, *, pad_id: int, device, bf16: bool,
            ckpt_dir, resume: bool = False, on_event=None, stop=None) -> FitResult:
    on_event = on_event or (lambda kind, **kw: None)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    torch.manual_seed(recipe.seed)
    model.to(device)
    if device.type == "cpu":
        cpu_malloc.tune()

    lengths = train.unit_lengths()
    n_batches = math.ceil(len(lengths) / recipe.batch_size)
    total_steps = math.ceil(n_batches / recipe.grad_accum) * recipe.epochs
    opt, sched = optimizer_and_schedule(model, recipe, device, total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    st = {"epoch": 0, "batch": 0, "history": [], "best_metric": None, "best_epoch": None, "bad_epochs": 0,
          "train_seconds": 0.0, "train_samples": 0, "train_tokens": 0, "stopped_early": False}

    if resume and last_path.exists():
        st = load_resume(last_path, model, opt, sched)
        on_event("resumed", epoch=st["epoch"], batch=st["batch"])

    def save_last():
        save_resume(last_path, model, opt, sched, st)

    # CPU: LoRA's dropout runs on the input of every adapted projection (7 per layer); torch's bernoulli
    # there was the single largest cost of a step. train/fast_dropout.py draws the masks in bulk.
    with (stop or _StopFlag()) as flag, fast_dropout.enabled(model, device.type == "cpu"):
        while st["epoch"] < recipe.epochs and not st["stopped_early"]:
            epoch = st["epoch"]
            batches = epoch_batches(lengths, recipe.batch_size, recipe.seed, epoch)
            model.train()
            on_event("epoch_start", epoch=epoch, batches=len(batches), done=st["batch"])
            # A resumed partial epoch continues the sums saved at the interrupt: same epoch record as without it.
            t0 = time.perf_counter()
            seen, tokens, loss_sum, targets = st.pop("partial", None) or (0, 0, 0.0, 0)
            for bi in range(st["batch"], len(batches)):
                units = [train.units[u] for u in batches[bi]]
                b = {k: v.to(device) for k, v in collate_sft(train, units, pad_id).items()}
                with autocast(bf16, device):
                    loss_tok, _, _ = token_losses(model, b)
                loss = loss_tok.mean() if loss_tok.numel() else loss_tok.sum()
                (loss / recipe.grad_accum).backward()
                loss_sum += float(loss_tok.detach().sum())
                targets += loss_tok.numel()
                seen += sum(len(u) for u in units)
                tokens += sum(lengths[u] for u in batches[bi])  # known on the host: no device read
                boundary = (bi + 1) % recipe.grad_accum == 0 or bi + 1 == len(batches)
                if boundary:
                    optimizer_step(params, opt, sched, recipe.grad_clip)
                on_event("step", epoch=epoch, batch=bi + 1, loss=float(loss.detach()))
                if boundary and flag.requested:
                    st["batch"] = bi + 1
                    st["train_seconds"] += time.perf_counter() - t0
                    st["partial"] = (seen, tokens, loss_sum, targets)  # counted at the epoch's end
                    save_last()
                    raise Interrupted(f"interrupted: checkpoint saved in {ckpt_dir}; "
                                      f"continue with the same command and --resume")
            secs = time.perf_counter() - t0
            st["train_seconds"] += secs
            st["train_samples"] += seen
            st["train_tokens"] += tokens
            record = {"epoch": epoch + 1, "train_loss": loss_sum / max(targets, 1), "epoch_seconds": round(secs, 3),
                      "train_samples_per_second": round(seen / max(secs, 1e-9), 2),
                      "train_tokens_per_second": round(tokens / max(secs, 1e-9), 1)}
            if val is not None and len(val):
                r = response_loss(model, val, pad_id, recipe.batch_size * 2, bf16, device)
                vl = r["loss"]
                record.update({"val_loss": vl, "val_perplexity": r["perplexity"]})
                if track_best(st, vl, False, recipe.patience, epoch):  # lower held-out loss is better
                    atomic_save(trainable_state(model), best_path)
            st["history"].append(record)
            st["epoch"], st["batch"] = epoch + 1, 0
            save_last()
            on_event("epoch_end", **record)

    if best_path.exists() and st["best_epoch"] is not None:
        load_trainable(model, load_weights(best_path))
    return FitResult(st["history"], st["best_epoch"], st["best_metric"], st["train_seconds"],
                     st["train_samples"], st["stopped_early"], st["train_tokens"])
