"""Sharded data parallelism (`--shard full|grad-op` with `--nproc`): PyTorch's FSDP2 (`fully_shard`).

Each transformer block (the classes a checkpoint lists in `_no_split_modules`) is one group and the module
the loop calls is the root group; every process keeps 1/N of the trainable weights, their gradients and their
AdamW state. `full` gathers a block's weights for its forward and again for its backward (ZeRO-3); `grad-op`
keeps them whole from forward to backward (ZeRO-2: one gather a step, more memory).

Why torch's `fully_shard` and not Accelerate's FSDP plugin: Accelerate 1.15 ignores the plugin on CPU (its
MULTI_CPU mode wraps in DDP), so the gloo tests could not prove the path GPUs take. `fully_shard` is the same
engine Accelerate's FSDP2 calls, on every device.

The loop trains a sharded *copy*; the model it was given stays whole in host memory (one extra copy of the
weights, not of gradients or optimizer state) and receives the trained weights at the end, so the run folder's
`model/` is an ordinary consolidated Hugging Face folder written by rank 0.

Checkpoints for resume are sharded: each rank writes its own trainable shards and AdamW state
(`shard-<step>.rank<r>.pt`, loadable with weights_only), then rank 0 writes `last.pt` (schedule, RNG, loop
state) naming that step, and only then are older shard files removed: an interrupt mid-save resumes from the
previous complete set. Frozen weights (a LoRA base) are never in a checkpoint. Resume needs the same number of
processes and, across machines, a checkpoint folder every machine sees.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from tunesmith.errors import TunesmithError
from tunesmith.train import checkpoint, distributed

MODES = ("full", "grad-op")


def enabled(recipe) -> bool:
    return getattr(recipe, "shard", "off") != "off"  # (a plain namespace recipe has no such field)


def check(recipe, world: int) -> None:
    """One line for a --shard that cannot run, before any model work."""
    if not enabled(recipe):
        return
    if world < 2:
        raise TunesmithError(f"--shard {recipe.shard}: sharding splits the model over several processes; add "
                             f"--nproc 2 (or more, one per GPU)")
    if recipe.strategy == "head" or recipe.strategy.startswith("freeze:"):
        raise TunesmithError(f"--shard {recipe.shard} with --strategy {recipe.strategy}: little is trained, "
                             f"nothing worth sharding; drop --shard (--nproc alone runs DDP)")


def blocks(model) -> list[torch.nn.Module]:
    """The model's transformer blocks: the classes transformers declares it never splits across devices."""
    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def wrap(model, steps, mode: str, device: torch.device):
    """(sharded copy of `model`, the root the loop calls: `steps.module` of the copy)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    _, world = distributed.world()
    mesh = init_device_mesh(device.type, (world,))
    train_model = copy.deepcopy(model)
    reshard = mode == "full"
    for b in blocks(train_model):
        fully_shard(b, mesh=mesh, reshard_after_forward=reshard)
    root = steps.module(train_model)
    fully_shard(root, mesh=mesh, reshard_after_forward=reshard)
    return train_model, root


@contextlib.contextmanager
def whole_root(root):
    """The root group's weights gathered for calls that bypass the root's forward (validation calls the model
    or its encoder directly, SFT's losses call the decoder and the head apart): blocks still gather their own."""
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


def _local(t):
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _whole(p):
    """A parameter's whole tensor (an all-gather for a shard: every rank must call it)."""
    from torch.distributed.tensor import DTensor

    return p.detach().full_tensor() if isinstance(p, DTensor) else p.detach()


def full_trainable(model) -> dict:
    """Trainable weights, whole, by name (every rank must call it)."""
    return {n: _whole(p).cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def gather_into(train_model, model) -> None:
    """Every weight of the sharded copy, whole, into the plain `model` (on rank 0; all ranks gather)."""
    params = dict(model.named_parameters())
    main = distributed.is_main()
    with torch.no_grad():
        for n, p in train_model.named_parameters():
            t = _whole(p)
            if main and n in params:
                params[n].copy_(t.to(params[n].device))


def clip(params, max_norm: float) -> None:
    # torch's own: it all-reduces the norm of sharded gradients (DTensor), which tunesmith's fused version does not
    torch.nn.utils.clip_grad_norm_(params, max_norm)


def _shard_file(ckpt_dir: Path, tag: int, rank: int) -> Path:
    return ckpt_dir / f"shard-{tag}.rank{rank}.pt"


def save_resume(ckpt_dir: Path, model, opt, sched, state: dict, tag: int) -> None:
    """Every rank: its shards; then rank 0: last.pt naming them; then older shard files go."""
    from torch.distributed.tensor import DTensor

    rank, world = distributed.world()
    osd = opt.state_dict()
    spread = [[i, k] for i, s in osd["state"].items() for k, v in s.items() if isinstance(v, DTensor)]
    local = {"params": {n: _local(p.detach()).clone() for n, p in model.named_parameters() if p.requires_grad},
             "optimizer": {"state": {i: {k: _local(v) for k, v in s.items()} for i, s in osd["state"].items()},
                           "param_groups": osd["param_groups"]},
             "spread": spread, "tag": tag}
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_save(local, _shard_file(ckpt_dir, tag, rank))
    torch.distributed.barrier()
    if rank == 0:
        checkpoint.atomic_save({"trainable": {}, "optimizer": {}, "scheduler": checkpoint.plain(sched.state_dict()),
                                "rng": torch.get_rng_state(), "state": checkpoint.plain(state),
                                "shards": {"tag": tag, "world": world}}, ckpt_dir / "last.pt")
        for f in ckpt_dir.glob("shard-*.rank*.pt"):
            if not f.name.startswith(f"shard-{tag}."):
                f.unlink(missing_ok=True)
    torch.distributed.barrier()


def load_resume(path: Path, model, opt, sched) -> dict:
    """last.pt and this rank's shards back into the sharded model, its optimizer and schedule."""
    from torch.distributed.tensor import DTensor

    ck = checkpoint.load_data(path)
    rank, world = distributed.world()
    shards = ck.get("shards") if isinstance(ck, dict) else None
    if not shards:
        raise TunesmithError(f"{path}: written without --shard; resume it without --shard, or delete the "
                             f"checkpoint/ folder to train from the start")
    if shards["world"] != world:
        raise TunesmithError(f"{path}: sharded over {shards['world']} processes; resume with --nproc "
                             f"{shards['world']} (shards are per process)")
    f = _shard_file(path.parent, shards["tag"], rank)
    if not f.exists():
        raise TunesmithError(f"{f}: missing, so this process cannot resume its share; every machine must see the "
                             f"run's checkpoint/ folder (delete it to train from the start)")
    mine = checkpoint.load_data(f)
    params = dict(model.named_parameters())
    try:
        with torch.no_grad():
            for n, t in mine["params"].items():
                _local(params[n]).copy_(t)
        # The optimizer's sharded states go back as DTensors laid out like their parameters.
        order = [p for g in opt.param_groups for p in g["params"]]
        state = mine["optimizer"]["state"]
        for i, k in mine["spread"]:
            p = order[int(i)]
            state[i][k] = DTensor.from_local(state[i][k], p.device_mesh, p.placements, shape=p.shape,
                                             stride=p.stride())
        opt.load_state_dict(mine["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        return ck["state"]
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        why = (str(e).splitlines() or [""])[0][:120]
        raise TunesmithError(f"{f}: does not fit this run ({type(e).__name__}: {why}); delete the checkpoint/ "
                             f"folder to train from the start") from None
