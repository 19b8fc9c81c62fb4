"""The numba kernels behind master weights and dropout: the same numbers as torch, on any thread count."""
import numba
import numpy as np
import pytest
import torch

from tunesmith.train import fast_dropout, fused_adamw


@numba.njit
def _round_all(x, out):
    for i in range(x.size):
        out[i] = fused_adamw._bf16_bits(x[i])


def test_bf16_rounding_equals_torch_cast():
    torch.manual_seed(0)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 3.4e38, -3.4e38, 1e-40, -1e-45,
                            1.00390625, 1.01171875, 1.0 + 2 ** -9, 1.0 + 3 * 2 ** -9])  # ties round to even
    payload_nan = torch.tensor([0x7FFFFFFF, -1], dtype=torch.int32).view(torch.float32)  # would round into -0 / inf
    x = torch.cat([special, payload_nan, torch.randn(10000) * 10.0 ** torch.randint(-30, 30, (10000,))])
    out = np.empty(x.numel(), np.uint16)
    _round_all(x.numpy(), out)
    ref = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x.numpy())
    assert np.array_equal(out[~nan], ref[~nan])
    assert torch.isnan(torch.from_numpy(out[nan].view(np.int16)).view(torch.bfloat16)).all()


def test_sum_squares_of_bf16_and_fp32():
    torch.manual_seed(0)
    g = torch.randn(300_001) * 1e-3
    exact = float(g.double().pow(2).sum())
    assert fused_adamw.sum_squares(g.numpy()) == pytest.approx(exact, rel=1e-5)
    h = g.to(torch.bfloat16)
    assert fused_adamw.sum_squares(h.view(torch.int16).numpy().view(np.uint16)) == pytest.approx(
        float(h.double().pow(2).sum()), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dropout_mask_is_the_same_on_any_thread_count(dtype):
    masks = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        torch.manual_seed(3)
        masks.append(fast_dropout.scale_mask((70, 1000), 0.25, dtype))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert torch.equal(masks[0], masks[1])
    kept = masks[0] != 0
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.005)
    # Neighbouring elements are independent: keep/keep pairs come at the product of the rates.
    assert (kept[:, 1:] & kept[:, :-1]).float().mean().item() == pytest.approx(0.75 ** 2, abs=0.005)
