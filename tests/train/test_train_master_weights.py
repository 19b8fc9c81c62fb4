"""bf16 compute weights with fp32 masters: what the optimizer and checkpoints see stays fp32."""
from types import SimpleNamespace as NS

import pytest
import torch

from tunesmith.data.batching import encode
from tunesmith.models.load import load_classifier
from tunesmith.tasks.classification import SingleLabel
from tunesmith.accel import master_weights
from tunesmith.data.batching import collate
from tunesmith.tasks.classification.steps import ClassifierSteps
from tunesmith.train.loop import Split, fit

TEXTS = ["my parcel never arrived", "refund please", "the courier lost the tracking number again today",
         "locked out", "password reset link does not work at all", "charge twice"]


def _model(tiny_models):
    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(tiny_models["bert"]), ["a", "b", "c"])
    return model.train(), tok


def _adamw(model, wd=0.01):
    from types import SimpleNamespace

    from tunesmith.train.optim import make_optimizer
    return make_optimizer(model, SimpleNamespace(lr=1e-2, weight_decay=wd))


def test_swap_gather_and_fused_step_equal_torch_adamw(tiny_models):
    model, tok = _model(tiny_models)
    linear = model.bert.encoder.layer[0].attention.output.dense
    master = linear.weight
    b = collate(encode(tok, TEXTS, 32), tok.pad_token_id)
    y = torch.tensor([0, 1, 2] * 2)
    opt = _adamw(model)
    with master_weights.use(model, opt, True) as mw:
        assert isinstance(mw, master_weights.MasterWeights)
        i = next(i for i, p in enumerate(mw.masters) if p is master)
        a, e = mw.spans[i]
        torch.manual_seed(1)  # the same dropout masks in both micro-batches
        with mw.computing():
            assert linear.weight.dtype == torch.bfloat16 and linear.weight is not master
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(**b).logits
            assert out.dtype == torch.bfloat16
            torch.nn.functional.cross_entropy(out.float(), y).backward()
            one = linear.weight.grad.float().clone()
        assert linear.weight is master and master.dtype == torch.float32
        mw.gather_grads()
        assert master.grad is None  # the fused step reads the flat buffer
        torch.testing.assert_close(mw.flat_grad()[a:e].view_as(one), one)
        assert mw.grad_norm() > 0
        torch.manual_seed(1)
        with mw.computing():  # a second micro-batch: gradients add up in fp32
            with torch.autocast("cpu", dtype=torch.bfloat16):
                torch.nn.functional.cross_entropy(model(**b).logits.float(), y).backward()
        mw.gather_grads()
        g = mw.g32[a:e].view_as(one).clone()
        torch.testing.assert_close(g, 2 * one, rtol=1e-2, atol=1e-4)
        # The norm covers the Linear gradients (summed in fp32) and the extras' (LayerNorms, position
        # embeddings), which keep their own fp32 .grad.
        ln = model.bert.encoder.layer[0].attention.output.LayerNorm.weight
        assert any(p is ln for p in mw.extras) and ln.grad is not None
        extra_sq = sum(float(p.grad.double().pow(2).sum()) for p in mw.extras if p.grad is not None)
        expected = (float(mw.g32.double().pow(2).sum()) + extra_sq) ** 0.5
        assert float(mw.grad_norm()) == pytest.approx(expected, rel=1e-5)
        ln_ref = torch.nn.Parameter(ln.detach().clone())
        ln_ref.grad = ln.grad.clone() * 0.5

        # Reference: torch's AdamW on the same master, gradient and clipping coefficient, two steps.
        ref = torch.nn.Parameter(master.detach().clone())
        ref_opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.01)
        for step in range(2):
            mw.clip = torch.tensor(0.5)
            ref.grad = g * 0.5
            mw.step()
            ref_opt.step()
            torch.testing.assert_close(master.detach(), ref.detach(), rtol=1e-6, atol=1e-7)
            if step == 0:  # the extras were stepped by the same kernel from their fp32 gradients
                ln_opt = torch.optim.AdamW([ln_ref], lr=1e-2, weight_decay=0.0)
                ln_opt.step()
                torch.testing.assert_close(ln.detach(), ln_ref.detach(), rtol=1e-6, atol=1e-7)
                assert ln.grad is None  # so the optimizer's own step skips it
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(opt.state[master][key], ref_opt.state[ref][key], rtol=1e-6, atol=1e-9)
            assert float(opt.state[master]["step"]) == step + 1
            with mw.computing():  # the bf16 copy was written in the same pass
                assert torch.equal(linear.weight, master.detach().to(torch.bfloat16))
            # The next step from a bf16 gradient held as autograd leaves it (no accumulation).
            mw.held = [torch.zeros_like(s) for s in mw.leaves]
            leaf = next(k for k, slots in enumerate(mw.leaf_slots) if (linear, "weight") in (slots or ()))
            mw.held[leaf] = g.to(torch.bfloat16)
            g = mw.held[leaf].float()
            mw.micro = 1
    # Closed: every parameter and moment has its own storage again (safetensors refuses shared ones).
    ptrs = [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(set(ptrs)) == len(ptrs)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert opt.state[master]["exp_avg"].untyped_storage().nbytes() == master.numel() * 4


def test_resumed_optimizer_state_is_taken_in(tiny_models):
    model, _ = _model(tiny_models)
    opt = _adamw(model)
    master = model.bert.encoder.layer[0].attention.output.dense.weight
    opt.state[master].update(step=torch.tensor(7.0), exp_avg=torch.full_like(master, 0.25),
                             exp_avg_sq=torch.full_like(master, 0.5))
    with master_weights.use(model, opt, True) as mw:
        i = next(i for i, p in enumerate(mw.masters) if p is master)
        a, e = mw.spans[i]
        assert torch.all(mw.m[a:e] == 0.25) and torch.all(mw.v[a:e] == 0.5)
        assert opt.state[master]["exp_avg"].data_ptr() == mw.m[a:e].data_ptr()
        assert float(mw.steps[i]) == 7.0


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_fused_qkv_equals_three_projections(tiny_models, arch, monkeypatch):
    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(tiny_models[arch]), ["a", "b", "c"])
    model.train()
    b = collate(encode(tok, TEXTS, 32), tok.pad_token_id)
    y = torch.tensor([0, 1, 2] * 2)
    grads = {}
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(master_weights, "FUSABLE", set())
        with master_weights.use(model, _adamw(model), True) as mw:
            assert len(mw.fused) == (model.config.num_hidden_layers if fused else 0)
            with mw.computing(), torch.autocast("cpu", dtype=torch.bfloat16):
                torch.manual_seed(1)  # the same dropout masks in both
                out = model(**b).logits.float()
            torch.nn.functional.cross_entropy(out, y).backward()
            mw.gather_grads()
            span, flat = {id(p): ab for p, ab in zip(mw.masters, mw.spans)}, mw.flat_grad()
            grads[fused] = (out.detach(), {n: flat[slice(*span[id(p)])].clone()
                                           for n, p in model.named_parameters() if id(p) in span})
        model.zero_grad(set_to_none=True)
    torch.testing.assert_close(grads[True][0], grads[False][0], rtol=1e-2, atol=1e-2)
    assert grads[True][1].keys() == grads[False][1].keys()
    assert any(".query." in n for n in grads[True][1])
    for n, g in grads[True][1].items():
        torch.testing.assert_close(g, grads[False][1][n], rtol=2e-2, atol=1e-3, msg=n)


def test_off_when_distributed_lora_or_fp32(tiny_models):
    model, _ = _model(tiny_models)
    cpu = torch.device("cpu")
    assert master_weights.applicable(model, cpu, True, False)
    assert not master_weights.applicable(model, cpu, False, False)
    assert not master_weights.applicable(model, cpu, True, True)
    assert not master_weights.applicable(model, torch.device("cuda"), True, False)


def _fit(tiny_models, tmp_path, name):
    model, tok = _model(tiny_models)
    recipe = NS(seed=3, batch_size=4, grad_accum=2, epochs=2, lr=1e-3, weight_decay=0.01, scheduler="linear",
                warmup_ratio=0.0, max_length=32, metric="accuracy", patience=0, label_smoothing=0.0, grad_clip=1.0,
                strategy="full")
    task = SingleLabel(["a", "b", "c"])
    ids = encode(tok, TEXTS * 4, 32)
    y = task.targets(["a", "b", "c"] * 8)
    steps = ClassifierSteps(task, Split(ids, y), Split(ids[:6], y[:6]), recipe, tok.pad_token_id, True,
                            torch.device("cpu"))
    r = fit(model, steps, recipe, device=torch.device("cpu"), bf16=True, ckpt_dir=tmp_path / name)
    return r.history, model


def test_training_with_masters_tracks_autocast(tiny_models, tmp_path, monkeypatch):
    calls = []
    real = master_weights.MasterWeights
    monkeypatch.setattr(master_weights, "MasterWeights", lambda m, o: calls.append(1) or real(m, o))
    masters, m1 = _fit(tiny_models, tmp_path, "masters")
    assert calls  # the master-weight path really ran
    monkeypatch.setattr(master_weights, "applicable", lambda *a: False)
    autocast, m2 = _fit(tiny_models, tmp_path, "autocast")
    for a, b in zip(masters, autocast):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.02)
    assert masters[-1]["train_loss"] < masters[0]["train_loss"]
    for (n, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert p.dtype == torch.float32
        torch.testing.assert_close(p, q, rtol=0.05, atol=2e-3, msg=n)


@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2", "llama"])
def test_bf16_inference_matches_autocast_and_restores_the_model(tiny_models, arch, monkeypatch):
    from tunesmith.evaluate.predict import predict_logits

    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(tiny_models[arch]), ["a", "b", "c"])
    model.eval()
    before = {n: (p, p.dtype, p.detach().clone()) for n, p in model.named_parameters()}
    ids = encode(tok, TEXTS, 32)
    pad = tok.pad_token_id
    calls = []
    real = master_weights.bf16_inference
    monkeypatch.setattr(master_weights, "bf16_inference", lambda m, **k: calls.append(1) or real(m, **k))
    fast = predict_logits(model, ids, pad, 4, True, torch.device("cpu"))
    assert calls  # the whole-bf16 path ran
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # plain autocast, one text at a time
        ref = torch.cat([model(**collate([x], pad)).logits.float() for x in ids]).numpy()
    assert abs(fast - ref).max() < 0.05 * max(1.0, abs(ref).max())
    assert fast.argmax(1).tolist() == ref.argmax(1).tolist()
    for n, p in model.named_parameters():  # the same fp32 Parameter objects and values afterwards
        obj, dtype, value = before[n]
        assert p is obj and p.dtype == dtype and torch.equal(p, value), n
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_bf16_inference_kept_for_the_next_call_until_a_weight_changes(tiny_models, monkeypatch):
    from tunesmith.evaluate.predict import predict_logits

    torch.manual_seed(0)
    model, tok, _ = load_classifier(str(tiny_models["bert"]), ["a", "b", "c"])
    model.eval()
    ids, pad, cpu = encode(tok, TEXTS, 32), tok.pad_token_id, torch.device("cpu")
    prepared = []
    real = master_weights._prepare
    monkeypatch.setattr(master_weights, "_prepare", lambda m: prepared.append(1) or real(m))
    first = predict_logits(model, ids, pad, 4, True, cpu)
    again = predict_logits(model, ids, pad, 4, True, cpu)
    assert len(prepared) == 1 and (first == again).all()  # served from the kept weights
    with torch.no_grad():
        model.classifier.weight.mul_(-1)  # in place: same tensor, new version
    flipped = predict_logits(model, ids, pad, 4, True, cpu)
    assert len(prepared) == 2 and not (flipped == first).all()
    model.train()  # evaluation during training: what is kept is used, but nothing is kept after it
    predict_logits(model, ids, pad, 4, True, cpu)
    assert len(prepared) == 2 and model not in master_weights._prepared
    predict_logits(model, ids, pad, 4, True, cpu)
    assert len(prepared) == 3 and model not in master_weights._prepared


def test_tied_weights_get_one_master_and_one_leaf(tiny_models):
    """BERT2BERT ties every encoder weight to the decoder's (seq2seq/model.py): one master, one bf16 leaf put in
    every module holding it, autograd summing both uses; the embedding table the LM head shares stays fp32."""
    from tunesmith.tasks.seq2seq import model as s2s_model

    torch.manual_seed(0)
    model = s2s_model.load(str(tiny_models["bert"]))[0].train()
    enc_ffn = model.encoder.encoder.layer[0].output.dense
    dec_ffn = model.decoder.bert.encoder.layer[0].output.dense
    assert enc_ffn.weight is dec_ffn.weight  # tied
    table = model.encoder.embeddings.word_embeddings.weight
    assert model.decoder.get_output_embeddings().weight is table
    g = torch.Generator().manual_seed(0)
    b = {"input_ids": torch.randint(5, 90, (3, 7), generator=g), "decoder_input_ids": torch.randint(5, 90, (3, 5), generator=g)}
    b["attention_mask"] = torch.ones_like(b["input_ids"])

    def loss_of(m):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(**b, use_cache=False).logits.float().logsumexp(-1).mean()

    torch.manual_seed(1)
    model.zero_grad()
    loss_of(model).backward()
    want = enc_ffn.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    opt = _adamw(model)
    with master_weights.use(model, opt, True) as mw:
        assert sum(p is enc_ffn.weight for p in mw.masters) == 1
        assert any(p is table for p in mw.extras) and not any(p is table for p in mw.masters)
        # bf16 copies of the masters only (each tied weight once); the fp32 table has none
        assert mw.f16.numel() == sum(p.numel() for p in mw.masters) == master_weights.copied(model)
        enc_attn, dec_attn = model.encoder.encoder.layer[0].attention.self, model.decoder.bert.encoder.layer[0].attention.self
        fused = dict((id(m), i) for m, i in mw.fused)
        assert fused[id(enc_attn)] == fused[id(dec_attn)]  # one q/k/v leaf for both attentions
        assert model.decoder.bert.encoder.layer[0].crossattention.self.query.weight.requires_grad
        assert [id(m) for m in mw.embeddings] == [id(model.encoder.embeddings), id(model.decoder.bert.embeddings)]
        with mw.computing():
            assert enc_ffn.weight is dec_ffn.weight and enc_ffn.weight.dtype == torch.bfloat16
            leaf = enc_ffn.weight
            torch.manual_seed(1)
            loss_of(model).backward()
            got = leaf.grad.float().clone()
        assert enc_ffn.weight is dec_ffn.weight and enc_ffn.weight.dtype == torch.float32  # restored, still tied
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * float(want.abs().max()))
        mw.gather_grads()
        before, table_before = enc_ffn.weight.detach().clone(), table.detach().clone()
        mw.step()
        assert not torch.equal(enc_ffn.weight, before) and enc_ffn.weight is dec_ffn.weight
        assert not torch.equal(table, table_before)  # stepped as an extra, with no bf16 copy written
        with mw.computing():
            assert torch.equal(dec_ffn.weight, enc_ffn.weight.detach())  # both modules read the one updated copy
    assert enc_ffn.weight is dec_ffn.weight
