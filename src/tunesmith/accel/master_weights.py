"""bf16 compute weights with fp32 masters, for bf16 training on CPU.

Why by hand: under autocast every Linear weight is cast to bf16 in each forward and its gradient cast
back to fp32 in each backward (~80 casts a MiniLM step), and activations go back and forth between fp32
LayerNorm outputs and bf16 matmuls. Here the trainable Linear weights and biases are computed with from
one flat bf16 buffer, so activations stay bf16 end to end, while their fp32 masters live in one flat fp32
buffer that checkpoints save. Per optimizer step one compiled kernel (accel/cpu_kernels.py) reads the
bf16 gradients where autograd left them, updates the fp32 masters and their AdamW moments and writes
the bf16 copy, instead of the per-tensor casts. MiniLM, batch 32, bench_train's data: 135 -> 119
ms a step with torch's AdamW on an fp32 copy of the gradients, -12 ms more with the fused kernel.

LayerNorm and embedding parameters stay fp32 (small; CPU LayerNorm takes bf16 input with fp32 weights),
the embeddings' output is cast to bf16 once, and autocast stays on for anything not covered. The model
computes with the bf16 copies only inside `computing()`; outside it (evaluation, saving) it holds the
masters, so checkpoints, resume and the saved model are unchanged. Single process only: DDP hooks the
parameter objects this swaps out. On CUDA autocast's casts are cheap, so callers use this on CPU, and
only where the kernels compiled.
"""
from __future__ import annotations

import contextlib
import functools
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

from tunesmith.accel import cpu_kernels
from tunesmith.accel.handle import NoMasters
from tunesmith.accel.model_parts import embedding_modules


def applicable(model, device: torch.device, bf16: bool, distributed: bool) -> bool:
    """Without the compiled kernels (no C compiler) training keeps plain autocast."""
    return (device.type == "cpu" and bf16 and not distributed and not hasattr(model, "peft_config")
            and cpu_kernels.lib() is not None)


CHUNK = 1 << 15  # elements per parallel task of the AdamW kernel

# Self-attention modules whose forward `_fused_attention` reproduces (query/key/value Linears, then the
# attention interface): BERT and the architectures that copy its attention.
FUSABLE = {"BertSelfAttention", "RobertaSelfAttention", "XLMRobertaSelfAttention", "CamembertSelfAttention",
           "ElectraSelfAttention"}


class MasterWeights:
    def __init__(self, model, opt: torch.optim.AdamW):
        leaves, self.fused = _leaves(model)
        taken = {id(p) for ps, _ in leaves for p in ps}
        self.masters = [p for ps, _ in leaves for p in ps]
        self.slots = [(mod, name, ps[0]) for ps, slots in leaves if slots for mod, name in slots]
        # Every other dense trainable parameter (LayerNorms, position embeddings, a table an LM head shares)
        # computes in fp32 as before but is updated by the same kernel from its fp32 gradient, after the
        # masters in the flat buffers: torch's AdamW step for ~30 small tensors cost more in bookkeeping
        # than in arithmetic.
        lazy = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse}  # lazy rows
        self.extras = [p for p in model.parameters() if p.requires_grad and id(p) not in taken and id(p) not in lazy]
        everything = self.masters + self.extras
        self.ids = {id(p) for p in everything}  # parameters whose gradients this holds and steps
        ends = np.cumsum([p.numel() for p in everything]).tolist()
        spans = list(zip([0] + ends[:-1], ends))
        self.spans, self.extra_spans = spans[:len(self.masters)], spans[len(self.masters):]
        self.f32 = torch.cat([p.detach().reshape(-1) for p in everything]) if everything else torch.zeros(0)
        for p, (a, b) in zip(everything, spans):
            p.data = self.f32[a:b].view_as(p)  # same Parameter objects: the optimizer and its state stay valid
        # bf16 copies of the masters only: the extras compute in fp32 (a tied table's copy was 23 MB written a step)
        self.n_masters = self.spans[-1][1] if self.spans else 0  # elements: the flat buffers' first part
        self.f16 = self.f32[:self.n_masters].to(torch.bfloat16)
        self.leaves, self.leaf_slots, self.leaf_spans, first_masters, i = [], [], [], [], 0
        for ps, slots in leaves:
            first = ps[0]
            a, b = self.spans[i][0], self.spans[i + len(ps) - 1][1]
            shape = (len(ps) * first.shape[0], *first.shape[1:])  # q, k, v stacked along the output dim
            self.leaves.append(nn.Parameter(self.f16[a:b].view(shape)))
            self.leaf_slots.append(slots)
            self.leaf_spans.append((a, b))
            first_masters.append(first)
            i += len(ps)
        self.held = None  # the leaves' bf16 gradients from the last backward, as autograd made them
        self.g32 = None  # fp32 sum of the gradients in one flat buffer, only under gradient accumulation
        self.micro = 0  # micro-batches since the last optimizer step
        self.clip = None  # clipping coefficient for the next step (optim.clip_grad_norm sets it)
        self.embeddings = _embeddings(model)
        self._optimizer_state(opt, first_masters)

    def _optimizer_state(self, opt, first_masters):
        """The masters' AdamW moments as views of two flat buffers, under torch's own state keys, so
        state_dict, checkpoints and resume see a plain AdamW. A resumed state is copied in."""
        if not isinstance(opt, torch.optim.AdamW) or any(g["amsgrad"] or g["maximize"] for g in opt.param_groups):
            raise TypeError("master weights update with plain AdamW only")
        self.m, self.v = torch.zeros_like(self.f32), torch.zeros_like(self.f32)
        group = {id(p): k for k, g in enumerate(opt.param_groups) for p in g["params"]}
        everything = self.masters + self.extras
        # Step counts as 0-d views of one tensor: one add a step instead of a foreach over ~100 scalars.
        self.steps = torch.tensor([float(opt.state[p].get("step", 0.0)) for p in everything])
        for i, (p, (a, b)) in enumerate(zip(everything, self.spans + self.extra_spans)):
            st = opt.state[p]
            for key, buf in (("exp_avg", self.m), ("exp_avg_sq", self.v)):
                if key in st:
                    buf[a:b].copy_(st[key].reshape(-1))
                st[key] = buf[a:b].view_as(p)
            st["step"] = self.steps[i]
        self.tasks = _tasks(self.leaf_spans, [group[id(p)] for p in first_masters])
        self.chunks = np.ascontiguousarray(self.tasks[:, :3])
        self.extra_tasks = _tasks(self.extra_spans, [group[id(p)] for p in self.extras])
        self.opt = opt

    def __bool__(self):
        return bool(self.masters)

    def for_optimizer(self):
        """What optim.optimizer_step takes: this, whose masters it clips and steps with the rest."""
        return self

    @contextlib.contextmanager
    def computing(self):
        """Forward and backward in here compute with the bf16 copies."""
        for leaf, slots in zip(self.leaves, self.leaf_slots):
            for mod, name in slots or ():  # None: a fused q/k/v leaf, which its attentions' forward reads
                mod._parameters[name] = leaf
        for mod, i in self.fused:
            mod.forward = functools.partial(_fused_attention, mod, self.leaves[i], self.leaves[i + 1])
        hooks = [m.register_forward_hook(_to_bf16) for m in self.embeddings]
        try:
            yield
        finally:
            for mod, name, p in self.slots:
                mod._parameters[name] = p
            for mod, _ in self.fused:
                mod.__dict__.pop("forward", None)
            for h in hooks:
                h.remove()

    def gather_grads(self) -> None:
        """After each backward: the leaves' bf16 gradients are held as they are (the kernels read them in
        place); over accumulation steps they add up in one flat fp32 buffer. The masters get no .grad."""
        grads = [s.grad if s.grad is not None else torch.zeros_like(s) for s in self.leaves]
        for s in self.leaves:
            s.grad = None
        if self.micro:
            if self.g32 is None:  # the Linear weights' part of the flat buffers (extras keep their .grad)
                self.g32 = torch.empty(self.n_masters)
            if self.micro == 1:
                torch.cat([g.reshape(-1) for g in self.held], out=self.g32)
            self.g32.add_(torch.cat([g.reshape(-1) for g in grads]))
            self.held = None
        else:
            self.held = [g.contiguous() for g in grads]
        self.micro += 1

    def flat_grad(self) -> torch.Tensor:
        """The gradient the next step uses, as one fp32 vector in the masters' order (for inspection)."""
        return torch.cat([g.reshape(-1).float() for g in self.held]) if self.micro == 1 else self.g32

    def _grad(self):
        """(the kernels' suffix, a pointer per task to the gradient of its first element)."""
        if self.micro == 1:
            return "bf16", _pointers(self.tasks, self.held)
        return "f32", np.uint64(self.g32.data_ptr()) + 4 * self.chunks[:, 0].astype(np.uint64)

    def _extra_grads(self):
        """(tasks, pointers) for the extras that have a gradient this step (torch's AdamW skips the others)."""
        grads = [p.grad for p in self.extras]
        t = self.extra_tasks[np.array([g is not None for g in grads], dtype=bool)[self.extra_tasks[:, 3]]]
        return np.ascontiguousarray(t[:, :3]), _pointers(t, grads)

    def grad_norm(self) -> torch.Tensor:
        lib, (kind, gp), (xchunks, xgp) = cpu_kernels.lib(), self._grad(), self._extra_grads()
        ss = getattr(lib, f"sum_squares_{kind}")(gp.ctypes.data, self.chunks.ctypes.data, len(self.chunks))
        ss += lib.sum_squares_f32(xgp.ctypes.data, xchunks.ctypes.data, len(xchunks))
        return torch.tensor(ss ** 0.5)

    def step(self) -> None:
        """AdamW on the masters and the extras (the lr and weight decay of their groups now), the bf16
        copy written in the same pass; the caller steps the optimizer for the lazy embedding rows."""
        self.steps.add_(1)
        t = float(self.steps[0])
        hp = cpu_kernels.adamw_hyper(self.opt.param_groups, t)
        scale = 1.0 if self.clip is None else float(self.clip)
        lib, (kind, gp), (xchunks, xgp) = cpu_kernels.lib(), self._grad(), self._extra_grads()
        buffers = (self.f32.data_ptr(), self.m.data_ptr(), self.v.data_ptr(), self.f16.data_ptr())
        getattr(lib, f"adamw_{kind}")(gp.ctypes.data, *buffers, self.chunks.ctypes.data, len(self.chunks),
                                      hp.ctypes.data, scale)
        lib.adamw_f32(xgp.ctypes.data, *buffers[:3], None, xchunks.ctypes.data, len(xchunks), hp.ctypes.data, scale)
        for p in self.extras:
            p.grad = None  # stepped here: the optimizer's own step must skip them
        self.micro, self.clip, self.held = 0, None, None

    def close(self) -> None:
        """Every master and moment gets its own storage again (safetensors refuses tensors sharing one)."""
        for p in self.masters + self.extras:
            p.data = p.data.clone()
            st = self.opt.state[p]
            for key in ("exp_avg", "exp_avg_sq", "step"):
                st[key] = st[key].clone()


def _leaves(model) -> tuple[list, list]:
    """What computes in bf16: ([(masters, the slots their leaf is put in; None for a fused q/k/v)], [(attention,
    index of its fused weight leaf)]). Leaves are what the bf16 forward computes with, each a span of the flat
    buffers, put in every slot of its parameter: a tied weight has one master, one leaf, and autograd sums its
    uses' gradients. A BERT-style attention's query, key and value become one (3N, K) weight and one 3N bias,
    so one matmul replaces three forward and backward: ~1.2 ms of a MiniLM layer's 3.2 at batch 32."""
    uses = _uses(model)
    groups: dict[tuple, list] = {}  # attentions sharing the same q/k/v parameters (tied): one leaf pair
    for mod in model.modules():
        qkv = _qkv(mod)
        if qkv:
            groups.setdefault(tuple(id(getattr(l, n)) for n in ("weight", "bias") for l in qkv), []).append(mod)
    fused, leaves, taken = [], [], set()
    for key, mods in groups.items():
        qkv = _qkv(mods[0])
        # fused only where these attentions' q/k/v Linears are the parameters' only holders: any other
        # holder would compute with the fp32 master, which the kernel steps without its gradient
        holders = [{id(getattr(m, w)) for m in mods} for w in ("query", "key", "value")]
        if all(p.requires_grad and {id(m) for m, _ in uses[id(p)]} == h and len(uses[id(p)]) == len(h)
               for l, h in zip(qkv, holders) for p in (l.weight, l.bias)):
            leaves += [([getattr(l, n) for l in qkv], None) for n in ("weight", "bias")]
            fused += [(mod, len(leaves) - 2) for mod in mods]
            taken.update(key)
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            for n in ("weight", "bias"):
                p = mod._parameters.get(n)
                if p is not None and id(p) not in taken and _linear_only(p, uses):
                    leaves.append(([p], uses[id(p)]))
                    taken.add(id(p))
    return leaves, fused


def _uses(model) -> dict:
    """id(parameter) -> every (module, name) slot holding it: a tied weight (BERT2BERT's encoder and decoder
    layers, T5's shared table under its LM head) sits in several."""
    uses: dict[int, list] = {}
    for mod in model.modules():
        for name, p in mod._parameters.items():
            if p is not None:
                uses.setdefault(id(p), []).append((mod, name))
    return uses


def _linear_only(p, uses) -> bool:
    return p.requires_grad and all(isinstance(m, nn.Linear) for m, _ in uses[id(p)])


def copied(model) -> int:
    """Elements MasterWeights keeps a bf16 copy of (train/memory.py counts them): its masters, each once (a
    tied weight's one leaf serves every slot); the extras compute in fp32 and have no copy."""
    return sum(p.numel() for ps, _ in _leaves(model)[0] for p in ps)


def _embeddings(model) -> list:
    """The modules whose outputs start the bf16 activations: the embeddings before the layers; for an
    encoder-decoder, the encoder's and the decoder's, each found in its own stack (BERT2BERT's decoder embeds
    its input apart from the encoder, and the model's longest ModuleList can be a decoder block's sublayers)."""
    parts = [model]
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False) and hasattr(model, "get_decoder"):
        parts = [model.get_encoder(), model.get_decoder()] if hasattr(model, "get_encoder") else [model, model.get_decoder()]
    found = []
    for part in parts:
        found += [m for m in embedding_modules(part) if all(m is not f for f in found)]
    return found


def _tasks(spans, groups) -> np.ndarray:
    """The kernels' parallel tasks over the flat buffers, each within one span (one gradient tensor):
    rows of (start, end, group, which span, offset into its gradient)."""
    rows = [(s, min(s + CHUNK, b), k, j, s - a) for j, ((a, b), k) in enumerate(zip(spans, groups))
            for s in range(a, b, CHUNK)]
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def _pointers(tasks: np.ndarray, grads) -> np.ndarray:
    """Per task, the address of its first element's gradient (tasks of a None gradient: left out before)."""
    base = np.array([g.data_ptr() if g is not None else 0 for g in grads], dtype=np.uint64)
    size = np.uint64(next((g.element_size() for g in grads if g is not None), 0))
    return base[tasks[:, 3]] + size * tasks[:, 4].astype(np.uint64)


@contextlib.contextmanager
def bf16_inference(model, keep: bool = False):
    """Inference in bf16 end to end on CPU. Each Linear weight is cast once and laid out in oneDNN's
    blocked format once (F.linear re-lays a bf16 weight out on every call: ~35% of a MiniLM matmul at
    prediction sizes), a BERT-style attention's q/k/v run as one matmul as in training, and activations
    stay bf16 (under plain autocast LayerNorm outputs went back to fp32 before each matmul). bench_train's
    prediction on test.csv: 2.4 -> 1.8-2.0 s. The model is restored after.

    keep=True holds the prepared weights with the model for the next call while its parameters are
    unchanged (serving: preparing them costs ~15 ms, more than a one-text request)."""
    key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    held = _prepared.get(model)
    forwards = held[1] if held is not None and held[0] == key else _prepare(model)
    if keep:
        _prepared[model] = (key, forwards)
    else:
        _prepared.pop(model, None)
    for mod, fwd in forwards:
        mod.forward = fwd
    hooks = [m.register_forward_hook(_to_bf16) for m in embedding_modules(model)]
    try:
        yield
    finally:
        for mod, _ in forwards:
            mod.__dict__.pop("forward", None)
        for h in hooks:
            h.remove()


_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (parameters' key, forwards)


def _prepare(model) -> list:
    """(module, the forward it computes with in bf16) for fused attentions and the other Linears."""
    forwards, taken = [], set()
    for mod in model.modules():
        qkv = _qkv(mod)
        if qkv:
            w, b = (torch.cat([getattr(l, n).detach() for l in qkv]).to(torch.bfloat16) for n in ("weight", "bias"))
            forwards.append((mod, functools.partial(_fused_attention, mod, _packed(w), b)))
            taken.update(id(l) for l in qkv)
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and id(mod) not in taken:
            b = None if mod.bias is None else mod.bias.detach().to(torch.bfloat16)
            forwards.append((mod, functools.partial(_linear, _packed(mod.weight.detach().to(torch.bfloat16)), b)))
    return forwards


def _packed(weight: torch.Tensor) -> torch.Tensor:
    """The bf16 weight in oneDNN's blocked layout (the size hint only picks the blocking), or as it is
    where this torch build has no oneDNN."""
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, 1024)
    except (AttributeError, NotImplementedError, RuntimeError):
        return weight


def _linear(weight, bias, x):
    if not weight.is_mkldnn:
        return F.linear(x.to(weight.dtype), weight, bias)
    # contiguous: oneDNN's linear reads a strided input as if it were dense (wrong results)
    return torch.ops.mkldnn._linear_pointwise(x.to(weight.dtype).contiguous(), weight, bias, "none", [], "")


def _qkv(mod) -> list | None:
    """A BERT-style attention's query, key and value Linears (with biases), which `_fused_attention` runs
    as one matmul; None for any other module."""
    qkv = [getattr(mod, n, None) for n in ("query", "key", "value")]
    fusable = type(mod).__name__ in FUSABLE and all(isinstance(l, nn.Linear) and l.bias is not None for l in qkv)
    return qkv if fusable else None


def _fused_attention(self, weight, bias, hidden_states, attention_mask=None, past_key_values=None, **kwargs):
    """BertSelfAttention.forward (transformers 5) with one q/k/v matmul; training has no key/value cache."""
    if past_key_values is not None:
        raise RuntimeError("fused q/k/v attention runs without a key/value cache (training, classification)")
    input_shape = hidden_states.shape[:-1]
    qkv = _linear(weight, bias, hidden_states).view(*input_shape, 3, -1, self.attention_head_size)
    query, key, value = (t.transpose(1, 2) for t in qkv.unbind(-3))
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
    out, weights = attention(self, query, key, value, attention_mask,
                             dropout=0.0 if not self.training else self.dropout.p, scaling=self.scaling, **kwargs)
    return out.reshape(*input_shape, -1).contiguous(), weights


def _to_bf16(module, args, out):
    return out.to(torch.bfloat16) if isinstance(out, torch.Tensor) and out.is_floating_point() else out


@contextlib.contextmanager
def use(model, opt, on: bool):
    """MasterWeights for the duration when `on` and some trainable parameter is a Linear's, else a no-op."""
    mw = MasterWeights(model, opt) if on else None
    try:
        yield mw if mw else NoMasters()
    finally:
        if mw is not None:
            mw.close()
