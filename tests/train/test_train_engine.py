"""Length-grouped batching and the bf16 path."""
import torch

from tunesmith.data.batching import encode
from tunesmith.models.load import load_classifier
from tunesmith.data.batching import collate, epoch_batches, inference_batches
from tunesmith.accel.precision import autocast


def test_every_example_once_per_epoch_and_grouped():
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 120, (5000,), generator=g).tolist()
    orders = []
    for epoch in range(3):
        batches = epoch_batches(lengths, 32, seed=7, epoch=epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(lengths)))  # each exactly once
        assert all(len(b) <= 32 for b in batches)
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        assert padded < 1.1 * sum(lengths)  # grouping by length: little padding
        orders.append(flat)
    assert orders[0] != orders[1]  # reshuffled every epoch
    assert epoch_batches(lengths, 32, 7, 1) == epoch_batches(lengths, 32, 7, 1)  # resumable
    pred = [i for b in inference_batches(lengths, 64) for i in b]
    assert sorted(pred) == list(range(len(lengths)))


def test_bf16_loss_close_to_fp32(tiny_models):
    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(tiny_models["bert"]), ["a", "b", "c"])
    model.eval()
    ids = encode(tok, ["a parcel went missing", "refund my charge please", "locked out of my account"] * 4, 32)
    b = collate(ids, tok.pad_token_id)
    y = torch.tensor([0, 1, 2] * 4)
    losses = {}
    for bf16 in (False, True):
        with torch.no_grad(), autocast(bf16, torch.device("cpu")):
            logits = model(**b).logits
        losses[bf16] = float(torch.nn.functional.cross_entropy(logits.float(), y))
    assert losses[True] != losses[False]  # bf16 really ran
    assert abs(losses[True] - losses[False]) < 0.02 * losses[False]


def test_a_full_disk_while_checkpointing_is_one_clear_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import pytest

    from tunesmith.errors import TunesmithError
    from tunesmith.train import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.atomic_save({"step": 1}, path)

    def write_half_then_fail(obj, f):  # what torch's writer does when the disk fills mid-way
        open(f, "wb").write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 134894080 vs 134893992")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.torch, "save", write_half_then_fail)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(TunesmithError, match=r"no space left on the disk to write .*last\.pt \(1 MB free\).*--resume"):
        checkpoint.atomic_save({"step": 2}, path)
    assert torch.load(path) == {"step": 1} and not path.with_suffix(".pt.tmp").exists()
    # With room on the disk the same failure is not blamed on it: torch's own error comes through.
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 1 << 30, 9 << 30))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        checkpoint.atomic_save({"step": 2}, path)
    assert torch.load(path) == {"step": 1}
