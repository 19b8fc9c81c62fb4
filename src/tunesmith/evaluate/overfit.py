"""Overfitting: validation loss climbing while training loss keeps falling."""
from __future__ import annotations

RISE = 0.10  # validation loss 10% above its minimum is more than epoch-to-epoch noise on small sets


def overfitting(history: list[dict]) -> dict:
    ep = [h for h in history if h.get("val_loss") is not None]
    if len(ep) < 2:
        return {"flag": False, "reason": "fewer than two epochs with validation loss"}
    best = min(ep, key=lambda h: h["val_loss"])
    last = ep[-1]
    rose = last["val_loss"] > best["val_loss"] * (1 + RISE)
    train_fell = last["train_loss"] < best["train_loss"]
    flag = bool(rose and train_fell and last is not best)
    reason = (f"validation loss rose from {best['val_loss']:.3f} (epoch {best['epoch']}) to {last['val_loss']:.3f} "
              f"(epoch {last['epoch']}) while training loss fell from {best['train_loss']:.3f} to "
              f"{last['train_loss']:.3f}" if flag else
              f"validation loss lowest at epoch {best['epoch']} ({best['val_loss']:.3f}), "
              f"{last['val_loss']:.3f} at the last epoch")
    return {"flag": flag, "reason": reason, "best_val_epoch": best["epoch"],
            "gap": float(last["val_loss"] - last["train_loss"])}
