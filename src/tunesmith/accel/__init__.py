"""One door to the CPU speed-ups: `for_device` picks the engine the loops and inference run with.

- PlainEngine: textbook torch. bf16 by plain autocast (the caller's), torch's dropout and SDPA
  attention, torch's fused AdamW on dense gradients, no malloc settings. What runs on CUDA (its own
  kernels are fast there) and everywhere under TUNESMITH_ENGINE=plain: the reference that rules the CPU
  tricks in or out when a result looks wrong.
- CpuBf16Engine (CPU, the default there): glibc malloc settings (cpu_malloc.py), lazy embedding rows
  (lazy_rows.py), bulk-random dropout and its attention function (fast_dropout.py), bf16 compute copies
  of the Linear weights with fp32 masters updated by a compiled AdamW (master_weights.py, cpu_kernels.py;
  bf16 and single process only), and whole-model bf16 inference.

TUNESMITH_ENGINE=auto|plain (default auto; `--engine` on the command line sets it, so the processes of
--nproc inherit it) is the one switch that turns all of them off. TUNESMITH_CPU_KERNELS=off only stops
the compiled kernels: master weights and fast dropout then step aside, but lazy rows (in torch ops) and
the malloc settings stay on.

The lowest layer: imports torch, transformers and tunesmith.errors/config, nothing else of tunesmith.
"""
from __future__ import annotations

import contextlib
import os

import torch

from tunesmith.accel import cpu_malloc, fast_dropout, lazy_rows, master_weights
from tunesmith.accel.handle import NoMasters
from tunesmith.accel.lazy_rows import AdamW
from tunesmith.errors import TunesmithError

ENV = "TUNESMITH_ENGINE"
ENGINES = ("auto", "plain")


def engine_name(engine: str | None = None) -> str:
    """The engine asked for ("auto" or "plain"): `engine`, else $TUNESMITH_ENGINE, else auto. What a device
    then gets is `for_device(...).name`: CUDA runs the plain engine under auto too."""
    name = (engine or os.environ.get(ENV) or "auto").strip().lower()
    if name not in ENGINES:
        raise TunesmithError(f"engine {name!r} is not one of auto, plain (--engine or {ENV})")
    return name


def for_device(device, bf16: bool, *, engine: str | None = None, distributed: bool = False):
    """The engine for training or inference on `device`; `bf16`: the run computes in bf16; `distributed`:
    under DDP (master weights swap out the parameter objects DDP hooks, so they stay off)."""
    device = torch.device(device)
    if engine_name(engine) == "plain" or device.type != "cpu":
        return PlainEngine(device, bf16, distributed)
    return CpuBf16Engine(device, bf16, distributed)


def run_device() -> torch.device:
    """The device a process computes on: its GPU (one per process under --nproc), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


class PlainEngine:
    name = "plain"

    def __init__(self, device: torch.device, bf16: bool, distributed: bool = False):
        self.device, self.bf16, self.distributed = device, bf16, distributed

    def lazy_embeddings(self, model):
        """Entered before DDP wraps the model (see CpuBf16Engine); nothing here."""
        return contextlib.nullcontext()

    def training(self, model, opt, *, masters: bool = True):
        """Yields the handle the loop computes with: computing() around forward and backward,
        gather_grads() after each backward, for_optimizer() for optim.optimizer_step."""
        return contextlib.nullcontext(NoMasters())

    def keeps_copies(self, model, *, masters: bool = True) -> bool:
        """Whether training keeps bf16 copies of the trainable Linear weights (train/memory.py counts them)."""
        return False

    def measuring(self, model):
        """Around train/memory.py's probe forwards: the parts of training's forward that change what autograd
        saves for the backward."""
        return contextlib.nullcontext()

    def inference(self, model, *, keep: bool = False):
        return contextlib.nullcontext()


class CpuBf16Engine(PlainEngine):
    name = "cpu"

    def __init__(self, device: torch.device, bf16: bool, distributed: bool = False):
        super().__init__(device, bf16, distributed)
        fast_dropout.register()  # its attention joins transformers' registry with the first CPU engine

    def lazy_embeddings(self, model):
        """Sparse gradients for the input embedding's rows (lazy_rows.py). Entered before DDP wraps the
        model: DDP reads each embedding's `sparse` flag when it builds its gradient buckets."""
        return lazy_rows.enabled(model, self.device)

    @contextlib.contextmanager
    def training(self, model, opt, *, masters: bool = True):
        """Fast dropout on, and master weights where they apply. `opt` must hold its resumed state already
        (the masters take it in). masters=False: the model computes as it is (a head on cached fp32
        features; causal LMs, where master weights are not measured)."""
        on = self.keeps_copies(model, masters=masters)
        with cpu_malloc.no_mmap(), fast_dropout.enabled(model), master_weights.use(model, opt, on) as mw:
            yield mw

    def keeps_copies(self, model, *, masters: bool = True) -> bool:
        return masters and master_weights.applicable(model, self.device, self.bf16, self.distributed)

    def measuring(self, model):
        """The dropout and attention training runs (fast_dropout.py), which save far less than torch's dropout
        and SDPA's math path: MiniLM at 512 tokens, 71 against 264 MiB a row (bf16)."""
        return fast_dropout.enabled(model)

    def inference(self, model, *, keep: bool = False):
        """bf16 end to end (master_weights.bf16_inference); PEFT wrappers keep plain autocast. keep=True
        holds the prepared weights for the next call while the parameters are unchanged (serving)."""
        if not self.bf16 or hasattr(model, "peft_config"):
            return contextlib.nullcontext()
        return master_weights.bf16_inference(model, keep=keep)


__all__ = ["AdamW", "CpuBf16Engine", "ENV", "PlainEngine", "engine_name", "for_device", "run_device"]
