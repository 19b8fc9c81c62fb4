"""The default recipe's data-sized rules: learning rate by rows per class, when validation may choose."""
import torch

from tunesmith.train.loop import decides
from tunesmith.train.optim import default_lr


def test_lr_scales_with_rows_per_class():
    many = torch.arange(20).repeat(100)          # 100 rows in each of 20 classes
    few = torch.arange(77).repeat(8)             # 8-shot
    assert default_lr("full", many) == 5e-5
    assert default_lr("full", few) == 5e-5 * 8 / 32
    assert default_lr("lora", many) == 1e-4 and default_lr("head", few) == 1e-4 * 8 / 32
    # multilabel indicator rows: positives per label
    y = torch.zeros(64, 3)
    y[:16, 0] = y[:32, 1] = y[:48, 2] = 1
    assert default_lr("freeze:2", y) == 5e-5
    y[16:, :] = 0
    y[:16] = 1
    assert default_lr("full", y) == 5e-5 * 16 / 32


def test_validation_chooses_only_when_large_enough():
    assert not decides(60, 20)       # 60 rows: the best epoch is noise
    assert not decides(400, 77)      # 5 rows a class
    assert decides(1000, 77) and decides(300, 2)
