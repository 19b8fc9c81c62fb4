"""The compiled CPU kernels behind master weights and dropout: torch's numbers, on any thread count, and
plain torch where there is no compiler."""
import numpy as np
import pytest
import torch

from tunesmith.accel import cpu_kernels, fast_dropout, master_weights

LIB = cpu_kernels.lib()
compiled = pytest.mark.skipif(LIB is None, reason="no C compiler here: the fallback test still runs")


@compiled
def test_bf16_copy_rounds_as_torch_casts():
    torch.manual_seed(0)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 3.4e38, -3.4e38, 1e-40, -1e-45,
                            1.00390625, 1.01171875, 1.0 + 2 ** -9, 1.0 + 3 * 2 ** -9])  # ties round to even
    payload_nan = torch.tensor([0x7FFFFFFF, -1], dtype=torch.int32).view(torch.float32)  # would round into inf / 0
    p = torch.cat([special, payload_nan, torch.randn(10000) * 10.0 ** torch.randint(-30, 30, (10000,))])
    n = p.numel()
    g, m, v = torch.zeros(n, dtype=torch.bfloat16), torch.zeros(n), torch.zeros(n)
    w16 = torch.empty(n, dtype=torch.bfloat16)
    chunks = np.array([[0, n, 0]], dtype=np.int64)
    hp = np.array([[1.0, 0.0, 0.1, 0.999, 0.001, 1.0, 1e-8]], dtype=np.float32)  # lr 0: the master stays
    before = p.clone()
    gp = np.array([g.data_ptr()], dtype=np.uint64)  # a pointer per chunk: to its first element's gradient
    LIB.adamw_bf16(gp.ctypes.data, p.data_ptr(), m.data_ptr(), v.data_ptr(), w16.data_ptr(), chunks.ctypes.data, 1,
                   hp.ctypes.data, 1.0)
    nan = torch.isnan(before)
    assert torch.equal(p[~nan], before[~nan])
    ref = before.to(torch.bfloat16)
    assert torch.equal(w16.view(torch.int16)[~nan], ref.view(torch.int16)[~nan])
    assert torch.isnan(w16[nan]).all()


@compiled
def test_adamw_without_a_bf16_buffer_steps_the_same_and_writes_the_copy_only_when_given():
    """Parameters that compute in fp32 (master weights' extras) pass no bf16 buffer: same master and moments."""
    torch.manual_seed(0)
    n = 70_000
    g = torch.randn(n)
    chunks = np.array([[0, 40_000, 0], [40_000, n, 0]], dtype=np.int64)
    gp = np.array([g.data_ptr(), g.data_ptr() + 40_000 * 4], dtype=np.uint64)
    hp = np.array([[0.99, 1e-3, 0.1, 0.999, 0.001, 1.0, 1e-8]], dtype=np.float32)
    start = torch.randn(n)
    runs = []
    for w16 in (torch.full((n,), 7.0, dtype=torch.bfloat16), None):
        p, m, v = start.clone(), torch.zeros(n), torch.zeros(n)
        LIB.adamw_f32(gp.ctypes.data, p.data_ptr(), m.data_ptr(), v.data_ptr(), None if w16 is None else w16.data_ptr(),
                      chunks.ctypes.data, len(chunks), hp.ctypes.data, 1.0)
        runs.append((p, m, v, w16))
    (p1, m1, v1, w16), (p2, m2, v2, _) = runs
    assert not torch.equal(p1, start) and torch.equal(p1, p2) and torch.equal(m1, m2) and torch.equal(v1, v2)
    assert torch.equal(w16, p1.to(torch.bfloat16))  # with a buffer, the copy is written


def _sum_squares(kind, tensors):
    """Over several tensors, split into tasks of at most 50,000 elements, as master weights calls it."""
    rows, ptrs, start = [], [], 0
    for t in tensors:
        for s in range(0, t.numel(), 50_000):
            rows.append((start + s, start + min(s + 50_000, t.numel()), 0))
            ptrs.append(t.data_ptr() + s * t.element_size())
        start += t.numel()
    chunks, gp = np.array(rows, dtype=np.int64), np.array(ptrs, dtype=np.uint64)
    return getattr(LIB, f"sum_squares_{kind}")(gp.ctypes.data, chunks.ctypes.data, len(chunks))


@compiled
def test_sum_squares_of_bf16_and_fp32_over_separate_tensors():
    torch.manual_seed(0)
    g = [torch.randn(n) * 1e-3 for n in (300_001, 17, 120_000)]
    exact = sum(float(t.double().pow(2).sum()) for t in g)
    assert _sum_squares("f32", g) == pytest.approx(exact, rel=1e-5)
    h = [t.to(torch.bfloat16) for t in g]
    assert _sum_squares("bf16", h) == pytest.approx(sum(float(t.double().pow(2).sum()) for t in h), rel=1e-5)


@compiled
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dropout_mask_is_the_same_on_any_thread_count(dtype):
    threads, masks = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)  # the kernels share torch's OpenMP pool
            torch.manual_seed(3)
            masks.append(fast_dropout.dropout(torch.ones(70, 1000, dtype=dtype), 0.25))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(masks[0], masks[1])
    kept = masks[0] != 0
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.005)
    # Neighbouring elements are independent: keep/keep pairs come at the product of the rates.
    assert (kept[:, 1:] & kept[:, :-1]).float().mean().item() == pytest.approx(0.75 ** 2, abs=0.005)
    assert masks[0][kept].unique().tolist() == [torch.tensor(1 / 0.75, dtype=dtype).item()]


@compiled
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dropout_backward_drops_what_the_forward_dropped(dtype):
    torch.manual_seed(0)
    x = torch.randn(40, 300).to(dtype).requires_grad_()
    g = torch.randn(40, 300).to(dtype)
    y = fast_dropout.dropout(x, 0.1)
    y.backward(g)
    mask = (y != 0).to(dtype) * torch.tensor(1 / 0.9, dtype=dtype)  # randn has no exact zeros
    assert torch.equal(y, x.detach() * mask)  # rounded as torch's multiply by a mask
    assert torch.equal(x.grad, g * mask)


@compiled
def test_shares_torch_openmp_runtime():
    # The library needs libgomp.so.1; the loader must have handed it torch's copy, not loaded a second
    # runtime whose thread pool would spin against torch's (other wheels vendor theirs under other names).
    gomp = {line.split()[-1] for line in open("/proc/self/maps") if line.rstrip().endswith("/libgomp.so.1")}
    assert len(gomp) == 1


def test_without_a_compiler_training_uses_plain_torch(tmp_path, monkeypatch, tiny_models):
    from tunesmith.models.load import load_classifier

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")  # compiling fails
    cpu_kernels.lib.cache_clear()
    try:
        assert cpu_kernels.lib() is None
        model, _, _ = load_classifier(str(tiny_models["bert"]), ["a", "b"])
        assert not master_weights.applicable(model, torch.device("cpu"), True, False)
        drop = next(m for m in model.modules() if isinstance(m, torch.nn.Dropout))
        with fast_dropout.enabled(model):
            assert "forward" not in drop.__dict__ and model.config._attn_implementation == "sdpa"
    finally:
        cpu_kernels.lib.cache_clear()  # the next caller compiles or loads under the real environment
