"""The CPU speed paths compute what the plain ones do: bulk-random dropout, its attention route, lazy
embedding rows in AdamW, clipping with sparse gradients, vectorised collate and cached-feature batches."""
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tunesmith.accel import cpu_kernels, fast_dropout
from tunesmith.train import optim
from tunesmith.data.batching import collate
from tunesmith.train.feature_cache import Features


def test_dropout_rate_scale_and_gradient():
    torch.manual_seed(0)
    x = torch.ones(200, 500, requires_grad=True)
    y = fast_dropout.dropout(x, 0.1)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.9, abs=0.005)
    assert torch.allclose(y[kept], torch.tensor(1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the backward pass uses the forward's mask
    assert fast_dropout.dropout(x, 0.1, training=False) is x
    assert x.numel() >= fast_dropout.SMALL  # the bulk-random path, not torch's

def test_dropout_follows_torch_seed_and_bf16_scale():
    torch.manual_seed(5)
    a = fast_dropout.dropout(torch.ones(256, 256), 0.3)
    torch.manual_seed(5)
    b = fast_dropout.dropout(torch.ones(256, 256), 0.3)
    c = fast_dropout.dropout(torch.ones(256, 256), 0.3)
    assert torch.equal(a, b) and not torch.equal(b, c)
    h = fast_dropout.dropout(torch.ones(256, 256, dtype=torch.bfloat16), 0.1)
    assert h.dtype == torch.bfloat16
    assert set(h.unique().tolist()) == {0.0, torch.tensor(1 / 0.9, dtype=torch.bfloat16).item()}


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "causal"])
def test_attention_route_equals_sdpa(mask_kind):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    assert 2 * 4 * 7 * 7 < fast_dropout.SMALL  # small attention maps take torch's dropout: p=1e-9 keeps all
    module = torch.nn.Module()
    module.is_causal = mask_kind == "causal"
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(2, 1, 7, 7) > 0.3
        mask[..., 0] = True
    elif mask_kind == "float":
        mask = torch.where(torch.rand(2, 1, 7, 7) > 0.3, 0.0, -1e9)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0)
    # p below 1/65536 keeps every element with scale ~1: the plain-ops route must equal SDPA.
    out, _ = fast_dropout.attention(module, q, k, v, mask, dropout=1e-9)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_attention_route_in_bf16_on_fused_qkv_views_and_a_new_mask_each_forward():
    torch.manual_seed(0)
    qkv = torch.randn(3, 9, 3, 4, 16, dtype=torch.bfloat16)  # (batch, tokens, q/k/v, heads, head dim)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # strided views, as BERT's fused projection gives
    module = torch.nn.Module()
    module.is_causal = False
    for cut in (5, 7):  # two forwards, two masks: the first's cached additive form must not be reused
        mask = torch.ones(3, 1, 9, 9, dtype=torch.bool)
        mask[1, ..., cut:] = False
        ref, _ = sdpa_attention_forward(module, q.float(), k.float(), v.float(), mask, dropout=0.0)
        for _ in range(2):  # the second layer of the same forward takes the cached form
            out, _ = fast_dropout.attention(module, q, k, v, mask, dropout=1e-9)
            assert out.dtype == torch.bfloat16
            torch.testing.assert_close(out.float(), ref, rtol=0.02, atol=0.02)


@pytest.mark.skipif(cpu_kernels.lib() is None, reason="needs the compiled CPU kernels (a C compiler)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_keeps_probs_only_with_the_same_gradients(dtype):
    """The dropped probabilities are drawn again in the backward instead of stored: the output and every
    gradient equal autograd's on bmm(dropout(probs), v), bit for bit, and one (B*H, T, T) tensor fewer is saved."""
    from tunesmith.train.memory import saved_bytes

    torch.manual_seed(0)
    q0, k0, v0 = (torch.randn(2, 3, 24, 8, dtype=dtype) for _ in range(3))
    assert 2 * 3 * 24 * 24 >= fast_dropout.SMALL
    module = torch.nn.Module()
    module.is_causal = False

    def ours():
        out, _ = fast_dropout.attention(module, q, k, v, None, dropout=0.2)
        return out

    def stored():
        probs = torch.softmax(torch.bmm(q.reshape(6, 24, 8), k.reshape(6, 24, 8).transpose(1, 2)) * 8 ** -0.5, -1)
        out = torch.bmm(fast_dropout._dropout(probs, 0.2), v.reshape(6, 24, 8)).view(2, 3, 24, 8)
        return out.transpose(1, 2).contiguous()

    results = []
    for f in (ours, stored):
        q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
        torch.manual_seed(1)
        saved = saved_bytes(f, [])[0]
        torch.manual_seed(1)
        out = f()
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(dtype))
        results.append((saved, out.detach(), q.grad, k.grad, v.grad))
    (s1, *a), (s2, *b) = results
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert s2 - s1 == 6 * 24 * 24 * torch.finfo(dtype).bits // 8  # the dropped probabilities


def test_enabled_patches_and_restores(tiny_models):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["bert"], num_labels=3)
    assert model.config._attn_implementation == "sdpa"
    with fast_dropout.enabled(model):
        assert model.config._attn_implementation == fast_dropout.NAME
        model.train()
        out = model(input_ids=torch.tensor([[2, 5, 6, 3]])).logits
        assert torch.isfinite(out).all()
    assert model.config._attn_implementation == "sdpa"
    assert all("forward" not in m.__dict__ for m in model.modules())


def _lazy_and_dense(steps, rows_each_step, weight_decay=0.01):
    torch.manual_seed(0)
    table = torch.randn(10, 4)
    lazy = torch.nn.Embedding(10, 4, sparse=True)
    dense = torch.nn.Embedding(10, 4)
    lazy.weight.data.copy_(table)
    dense.weight.data.copy_(table)
    groups = lambda e: [{"params": [e.weight], "weight_decay": weight_decay}]  # noqa: E731
    o1 = optim.AdamW(groups(lazy), lr=0.1, fused=True)
    o2 = torch.optim.AdamW(groups(dense), lr=0.1)
    for s in range(steps):
        ids = torch.tensor(rows_each_step(s))
        for emb, opt in ((lazy, o1), (dense, o2)):
            (emb(ids) ** 2).sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return table, lazy, dense, o1


@pytest.fixture(params=["kernel", "torch ops"])
def rows_path(request, monkeypatch):
    """The lazy-row update runs in the compiled kernel, or in torch ops where there is no compiler."""
    if request.param == "kernel":
        assert cpu_kernels.lib() is not None or pytest.skip("no C compiler here")
    else:
        monkeypatch.setattr(cpu_kernels, "lib", lambda: None)
    return request.param


def test_lazy_rows_equal_adamw_on_rows_seen_every_step(rows_path):
    table, lazy, dense, _ = _lazy_and_dense(5, lambda s: [1, 3, 3])
    torch.testing.assert_close(lazy.weight[[1, 3]], dense.weight[[1, 3]])
    assert torch.equal(lazy.weight[[0, 2, 4]], table[[0, 2, 4]])  # rows never seen stay as they were


def test_lazy_rows_skip_absent_rows_and_state_round_trips(rows_path):
    table, lazy, dense, opt = _lazy_and_dense(4, lambda s: [1] if s % 2 else [2])
    assert not torch.equal(lazy.weight[1], table[1]) and not torch.equal(lazy.weight[2], table[2])
    st = opt.state_dict()
    assert set(st["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and float(st["state"][0]["step"]) == 4
    fresh = optim.AdamW([{"params": [lazy.weight], "weight_decay": 0.01}], lr=0.1, fused=True)
    fresh.load_state_dict(st)
    torch.testing.assert_close(fresh.state[lazy.weight]["exp_avg"], opt.state[lazy.weight]["exp_avg"])


def test_clip_counts_sparse_gradients_like_dense():
    torch.manual_seed(0)
    w = torch.randn(6, 3)
    lin = torch.randn(3, 2)
    norms, grads = [], []
    for sparse in (True, False):
        emb = torch.nn.Embedding(6, 3, sparse=sparse)
        emb.weight.data.copy_(w)
        p2 = torch.nn.Parameter(lin.clone())
        (emb(torch.tensor([0, 4, 4])) @ p2).pow(2).sum().mul(50).backward()
        norms.append(float(optim.clip_grad_norm([emb.weight, p2], 1.0)))  # a 0-d tensor: no device read
        grads.append((emb.weight.grad.to_dense(), p2.grad))
    assert norms[0] == pytest.approx(norms[1], rel=1e-5) and norms[0] > 1.0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_and_feature_batches(side):
    ids = [[5, 6, 7], [8], [9, 10]]
    b = collate(ids, 0, side)
    for r, x in enumerate(ids):
        row, m = b["input_ids"][r], b["attention_mask"][r]
        assert row[m.bool()].tolist() == x and (row[~m.bool()] == 0).all()
        assert (m[-1] == 1) if side == "left" else (m[0] == 1)
    flat = torch.randn(6, 2)
    f = Features(flat, torch.tensor([0, 3, 4, 6]))
    out = f.batch([2, 0], 4, side)
    for r, i in enumerate([2, 0]):
        a, z = int(f.offsets[i]), int(f.offsets[i + 1])
        got = out[r, 4 - (z - a):] if side == "left" else out[r, :z - a]
        assert torch.equal(got, flat[a:z])
    assert out.abs().sum() == pytest.approx(float(flat.abs().sum() - flat[3].abs().sum()))


def test_malloc_settings_take_on_glibc():
    import platform

    from tunesmith.accel import cpu_malloc

    # glibc accepts both settings (it answers 0 to a value out of range); elsewhere tune() changes nothing.
    assert cpu_malloc.tune() is (platform.libc_ver()[0] == "glibc")


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc" or bool(__import__("os").environ.get("LD_PRELOAD")),
                    reason="glibc's own malloc")
def test_blocks_over_32mb_come_from_the_heap_while_training_only():
    """A 47 MB dense table gradient must be reused from the heap, not mapped afresh (page faults each step):
    inside no_mmap() such a block lies below the heap's end (sbrk(0)); glibc maps it elsewhere by default,
    and does again after (a process that goes on keeps no training's large blocks)."""
    import subprocess
    import sys

    code = """
import ctypes, torch
from tunesmith.accel import cpu_malloc
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
heap = lambda t: int(t.data_ptr() < libc.sbrk(0))
before = heap(torch.empty(12 * 2**20))  # 48 MB
with cpu_malloc.no_mmap() as on:
    with cpu_malloc.no_mmap():  # a stage inside a run
        pass
    inside = heap(torch.empty(12 * 2**20))
after = heap(torch.empty(12 * 2**20))
print(before, int(on), inside, after)
"""
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert got == ["0", "1", "1", "0"]
