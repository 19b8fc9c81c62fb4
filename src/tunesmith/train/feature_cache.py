"""Frozen-layer feature cache: with `head` or `freeze:K` the bottom K layers never change, so their
outputs are computed once (eval mode, inference mode, length-sorted batches) and replayed afterwards.

Replay patches `forward` of layers[:K] on the instance (parameters and state_dict stay untouched):
layers 0..K-2 pass their input through and layer K-1 returns the cached, zero-padded hidden states of
the current batch. Embeddings still run; they are a table lookup. Works for any HF architecture whose
layers take hidden_states first and return a tensor (transformers 5).

Entries are keyed by architecture + model path + a hash of the frozen weights, K, max length, bf16 and
the token ids, kept in an in-memory LRU (many trainings in one process: hyperparameter search) and on
disk under $TUNESMITH_CACHE/features (many processes). TUNESMITH_FEATURE_CACHE=off|memory|on (default on).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import weakref
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tunesmith.accel.model_parts import embedding_modules
from tunesmith.config import cache_root
from tunesmith.train import heads
from tunesmith.data.batching import collate, inference_batches
from tunesmith.accel.precision import autocast
from tunesmith.train.strategies.layers import layer_stack, split_parameters

STATS: Counter = Counter()  # computed / memory_hits / disk_hits: tests and `tune` count recomputations
MEMORY_BYTES = int(os.environ.get("TUNESMITH_FEATURE_CACHE_MB", "2048")) * 2**20
_MEMORY: OrderedDict[str, "Features"] = OrderedDict()


def mode() -> str:
    return os.environ.get("TUNESMITH_FEATURE_CACHE", "on")


def cache_dir() -> Path:
    return cache_root() / "features"


@dataclass
class Features:
    """Hidden states of every example, concatenated over tokens: example i is flat[offsets[i]:offsets[i+1]]."""
    flat: torch.Tensor
    offsets: torch.Tensor

    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def batch(self, idx, width: int, padding_side: str = "right") -> torch.Tensor:
        # Index arithmetic in numpy, then one gather and one scatter in torch: a Python loop over rows
        # (or a dozen small torch index ops) was a third of every cached `head` epoch.
        offsets = self.offsets.numpy()  # int64, shares memory with the tensor
        idx = np.asarray(idx, dtype=np.int64)
        starts, lens = offsets[idx], offsets[idx + 1] - offsets[idx]
        first = np.cumsum(lens) - lens                          # where each example starts in the gather
        within = np.arange(int(lens.sum())) - np.repeat(first, lens)
        pad = width - lens if padding_side == "left" else np.zeros_like(lens)
        src = torch.from_numpy(np.repeat(starts, lens) + within)
        dst = torch.from_numpy(np.repeat(np.arange(len(idx)) * width + pad, lens) + within)
        out = self.flat.new_zeros((len(idx) * width, self.flat.shape[1]))
        out.index_copy_(0, dst, self.flat.index_select(0, src))
        return out.view(len(idx), width, -1)



def _unwrap(model):
    return getattr(model, "module", model)  # DDP


def key(model, k: int, ids: list[list[int]], max_length: int | None, bf16: bool) -> str:
    model = _unwrap(model)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(model).__name__}|{getattr(model.config, '_name_or_path', '')}|{k}|{max_length}|{bf16}|".encode())
    h.update(_weights_digest(model, k))
    h.update(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)).tobytes())
    h.update(np.fromiter((t for x in ids for t in x), dtype=np.int64).tobytes())
    return h.hexdigest()


_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_digest(model, k: int) -> bytes:
    """Hash of the frozen weights themselves (a changed model never hits), remembered per live model while
    no frozen tensor moved or changed in place (`_version`): a fit keys train and validation, MiniLM's
    frozen part is 90 MB."""
    frozen = split_parameters(model, k)
    params = [(n, p) for n, p in model.named_parameters() if n in frozen]
    stamp = (k, tuple((p.data_ptr(), p._version) for _, p in params))
    hit = _DIGESTS.get(model)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    h = hashlib.blake2b(digest_size=16)
    for name, p in params:
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy())
    _DIGESTS[model] = (stamp, h.digest())
    return h.digest()


class _Captured(Exception):
    """Raised by the hook on layer K-1: the layers above it are not needed for the features."""


@torch.inference_mode()
def compute(model, k: int, ids: list[list[int]], pad_id: int, bf16: bool, device, batch_size: int = 64) -> Features:
    model = _unwrap(model)
    layer = layer_stack(model)[1][k - 1]

    def hook(mod, args, out):
        raise _Captured(out[0] if isinstance(out, tuple) else out)

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()  # no dropout in the frozen part, ever
    parts = [None] * len(ids)
    try:
        for batch in inference_batches([len(x) for x in ids], batch_size):
            b = {n: v.to(device) for n, v in collate([ids[i] for i in batch], pad_id).items()}
            try:
                with autocast(bf16, device):
                    model(**b)
                raise RuntimeError(f"layer {k - 1} of {type(model).__name__} was never called")
            except _Captured as c:
                h = c.args[0].cpu()
            for r, i in enumerate(batch):
                parts[i] = h[r, :len(ids[i])].clone()
    finally:
        handle.remove()
        model.train(was_training)
    lengths = torch.tensor([0] + [len(x) for x in ids])
    return Features(torch.cat(parts) if parts else torch.zeros(0, 0), torch.cumsum(lengths, 0))


def _remember(k: str, f: Features) -> None:
    _MEMORY[k] = f
    _MEMORY.move_to_end(k)
    while len(_MEMORY) > 1 and sum(v.nbytes() for v in _MEMORY.values()) > MEMORY_BYTES:
        _MEMORY.popitem(last=False)


def features(model, k: int, ids: list[list[int]], pad_id: int, bf16: bool, device,
             max_length: int | None = None) -> Features:
    """The frozen part's outputs for `ids`, from memory, disk or computed once."""
    name = key(model, k, ids, max_length, bf16)
    if name in _MEMORY:
        STATS["memory_hits"] += 1
        _MEMORY.move_to_end(name)
        return _MEMORY[name]
    path = cache_dir() / f"{name}.pt"
    if mode() == "on" and path.exists():
        try:
            d = torch.load(path, weights_only=True)
            f = Features(d["flat"], d["offsets"])
            STATS["disk_hits"] += 1
            _remember(name, f)
            return f
        except Exception:  # a truncated or foreign file: recompute and overwrite it
            pass
    f = compute(model, k, ids, pad_id, bf16, device)
    STATS["computed"] += 1
    _remember(name, f)
    if mode() == "on":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{name}.{os.getpid()}.tmp")  # per process: DDP ranks may write at once
        torch.save({"flat": f.flat, "offsets": f.offsets}, tmp)
        os.replace(tmp, path)
    return f


def clear_memory() -> None:
    _MEMORY.clear()


class Replay:
    """Context in which layers[:K] replay cached features; call select(idx) before each forward.

    With every layer cached (`head`) on an architecture train/heads.py knows, and given the token ids,
    `direct` is set and `logits(idx)` runs the head on the one token it reads, skipping the model's forward.
    """

    def __init__(self, model, k: int, feats: Features, padding_side: str = "right", ids=None, pad_id=None):
        self.model = _unwrap(model)
        self.stack = layer_stack(self.model)[1]
        self.k, self.feats, self.padding_side, self.idx = k, feats, padding_side, None
        head = heads.for_model(self.model) if k == len(self.stack) and ids is not None else None
        self.direct = head is not None
        if head is not None:
            self.head = head[1]
            if head[0] == "mean":  # the pooler's input is one vector per example: made once, read by index
                self.table = heads.sentence_rows(self.model, feats.flat, feats.offsets.numpy())
                self.rows = torch.arange(len(ids))
            else:
                self.table = feats.flat
                self.rows = torch.from_numpy(heads.token_rows(head[0], ids, feats.offsets.numpy(), pad_id))

    def logits(self, idx) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.head(self.table.index_select(0, self.rows[idx]).to(device))

    def select(self, idx) -> None:
        self.idx = idx

    def _last(self, hidden_states, *args, **kwargs):
        out = self.feats.batch(self.idx, hidden_states.shape[1], self.padding_side)
        return out.to(hidden_states.device)

    def __enter__(self):
        passthrough = lambda hidden_states, *a, **kw: hidden_states  # noqa: E731
        for i in range(self.k):
            self.stack[i].forward = self._last if i == self.k - 1 else passthrough
        # All layers cached (`head`): the embeddings' output only flows into layers that ignore it, and
        # computing it was a third of every cached epoch. They return zeros of the right shape instead.
        self.patched = embedding_modules(self.model) if self.k == len(self.stack) else []
        for mod in self.patched:
            mod.forward = _zeros_forward(mod)
        return self

    def __exit__(self, *exc):
        for mod in list(self.stack[:self.k]) + self.patched:
            mod.__dict__.pop("forward", None)


def _zeros_forward(mod):
    dim = next(m for m in mod.modules() if isinstance(m, torch.nn.Embedding)).embedding_dim

    def forward(*args, **kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is None:
            ids = kwargs["inputs_embeds"][..., 0]
        return torch.zeros(*ids.shape, dim, device=ids.device)
    return forward


def replay_or_null(replay: Replay | None):
    return replay if replay is not None else contextlib.nullcontext()


def frozen_eval(model, k: int) -> None:
    """Put the embeddings and layers[:K] in eval mode (after model.train()): the frozen part never uses
    dropout, so the first epoch computes exactly what the cache replays in later ones."""
    model = _unwrap(model)
    prefix, stack = layer_stack(model)
    for name, mod in model.named_modules():
        if name == prefix:
            break
        if name and not prefix.startswith(name + "."):  # embeddings: registered before the stack
            mod.eval()
    for layer in stack[:k]:
        layer.eval()
