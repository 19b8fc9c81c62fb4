"""The memory a training run will need, predicted before it starts (`tunesmith plan`, and the check `train`
runs before its first step), and what it used (metrics.json's `memory`).

Why measured and not a formula per architecture: what a forward keeps for the backward depends on the model
class, attention implementation, dropout, autocast and the task's loss (an LM's logits over a 49k vocabulary
can outweigh the whole encoder). So the activations are counted on the real model: one training forward of
the longest row, once alone and once twice over, with saved-tensor hooks summing the distinct storages
autograd keeps (parameters excluded). Two points give the per-row cost at the longest length and the part that
does not grow with the batch (autocast's bf16 weight copies); the batch's activations are the line through
them. The rest is arithmetic on parameter counts: gradients and AdamW's two moments in fp32 for what trains,
bf16 compute copies where the CPU engine keeps them. The peak is what the process holds now (the interpreter,
libraries, the data and the fp32 weights: measured, so nothing is guessed) plus those, plus a backward
transient of four times the largest saved tensor (Budget.transient). Against the peak RSS that training then
measured (README, "Planning"): 0.81-1.01 of it over minilm full/LoRA at batch 16 and 64; smollm2 full/LoRA at
batch 4 and 8 gave 0.81-0.91 when the transient counted two, short most on LoRA, where the allocator keeps
what the backward frees. The forwards run in the engine's training attention (`engine.measuring`): measured
through SDPA's math path instead, minilm at 512 tokens was predicted at 11.2 GiB against 6.8 GiB held while
its steps ran; now 4.6 against 5.4 (0.85), and 0.75 of the whole run's peak RSS (6.2 GiB: glibc keeps freed
blocks while mmap is off, accel/cpu_malloc.py).
"""
from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass

import torch

from tunesmith.accel import master_weights

MIB = 1 << 20
TRANSIENT = 4  # largest saved tensors' worth of backward buffers (Budget.transient)


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The most this process has held so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024


def device_bytes(device) -> tuple[int, str]:
    """(bytes this process may grow to, where that figure comes from) on the run's device."""
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return total, f"{torch.cuda.get_device_name(device)} memory"
    limit = _cgroup_limit()
    avail = _meminfo("MemAvailable")
    if avail is None:
        return (limit or 0), "cgroup limit"
    room = avail + rss_bytes()  # what is free plus what this process holds already
    if limit is not None and limit < room:
        return limit, "the container's memory limit"
    return room, "available RAM"


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path).read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return None


def used(device) -> dict:
    """What a finished training used, for metrics.json: peak RSS (and the CUDA allocator's peak) in MiB."""
    out = {"peak_rss_mib": round(peak_rss_bytes() / MIB, 1)}
    if torch.device(device).type == "cuda":
        out["peak_device_mib"] = round(torch.cuda.max_memory_allocated(device) / MIB, 1)
    return out


# ---- activations -------------------------------------------------------------------------------------------
def saved_bytes(forward, params) -> tuple[int, int]:
    """(bytes of the distinct storages autograd saves during `forward()`, the largest of them), parameters'
    own storages excluded (they are counted as weights)."""
    own = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr and ptr not in own:
            seen[ptr] = max(seen.get(ptr, 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out  # the graph goes with it: nothing runs backward
    return sum(seen.values()), max(seen.values(), default=0)


@dataclass
class Budget:
    """Bytes of one process's training at `batch` rows of `length` tokens, and the peak they add up to."""
    params: int
    trainable: int
    batch: int
    length: int
    held: int            # the process now: interpreter, libraries, data, fp32 weights (measured)
    weights: int         # part of `held`: the model's parameters and buffers
    gradients: int
    optimizer: int       # AdamW's two fp32 moments per trainable parameter
    compute_copies: int  # the CPU engine's bf16 copies of the trainable Linear weights
    act_fixed: int       # saved for backward whatever the batch (autocast's weight casts)
    act_per_row: int     # saved for backward per row at `length`
    act_largest: int     # the largest single saved tensor at `batch` rows (the backward's transient)
    available: int
    available_from: str
    device: str
    high_water: int = 0  # the most the process held before (loading a model can peak above training)

    @property
    def activations(self) -> int:
        return self.act_fixed + self.batch * self.act_per_row

    @property
    def transient(self) -> int:
        """The backward's buffers beside what is saved: an attention map's gradient, dropout's and softmax's
        backward outputs and the cached additive mask, each the size of the largest saved tensor at long
        lengths. Counted as two, minilm at 512 tokens was predicted at 0.69 of its run's peak RSS, now 0.75."""
        return TRANSIENT * self.act_largest

    @property
    def training_peak(self) -> int:
        return (self.held + self.gradients + self.optimizer + self.compute_copies + self.activations
                + self.transient)

    @property
    def peak(self) -> int:
        return max(self.training_peak, self.high_water)

    @property
    def fits(self) -> bool:
        return not self.available or self.training_peak <= self.available

    def at(self, **change) -> "Budget":
        """The same run with other settings: batch=, and the others scaled by what they change."""
        d = asdict(self)
        d.update(change)
        if "batch" in change:
            d["act_largest"] = self.act_largest * change["batch"] // max(self.batch, 1)
        return Budget(**d)

    def to_dict(self) -> dict:
        return {**asdict(self), "activations": self.activations, "transient": self.transient,
                "training_peak": self.training_peak,
                "peak": self.peak, "fits": self.fits}


def estimate(model, steps, batch: int, device, bf16: bool, copies: bool) -> Budget:
    """The Budget of training `model` with `steps` (a task's Steps) at `batch` rows (per process) padded to the
    longest row's length. `copies`: the CPU engine will keep bf16 copies of the trainable Linear weights."""
    from tunesmith.accel.precision import autocast

    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    weights = sum(p.numel() * p.element_size() for p in params) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    linear = master_weights.copied(model) if copies else 0
    longest = max(range(len(steps.lengths)), key=steps.lengths.__getitem__)
    net = steps.module(model)
    was = model.training
    model.train()
    use_autocast = bf16 and getattr(steps, "autocast", True)

    def forward(rows):
        def run():
            with autocast(use_autocast, device):
                return steps.loss(net, steps.batch(rows, device))[0]
        return saved_bytes(run, params)

    # The RNG is put back: the probe's dropout must not change the run's (same seed, same metrics as without it)
    cuda = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        try:  # a head on cached features: activations of a few floats a row (probe_memory False)
            (one, _), (two, big2) = ((forward([longest]), forward([longest, longest]))
                                     if getattr(steps, "probe_memory", True) else ((0, 0), (0, 0)))
        finally:
            model.train(was)
    per_row = max(two - one, 0)
    available, source = device_bytes(device)
    return Budget(params=sum(p.numel() for p in params), trainable=n_train, batch=batch,
                  length=int(steps.lengths[longest]), held=_held(device), weights=weights,
                  gradients=4 * n_train, optimizer=8 * n_train, compute_copies=2 * linear if copies else 0,
                  act_fixed=max(one - per_row, 0), act_per_row=per_row, act_largest=big2 * batch // 2,
                  available=available, available_from=source, device=torch.device(device).type,
                  high_water=_high_water(device))


def _high_water(device) -> int:
    device = torch.device(device)
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()


def _held(device) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return rss_bytes()


def sharded(b: Budget, n: int) -> Budget:
    """The budget of one of `n` processes under --shard full: a 1/n share of the weights on the device (the
    whole copy stays on the host), of the gradients and of AdamW's state; batch rows split n ways."""
    on_device = b.device == "cuda"
    return b.at(held=b.held - b.weights + b.weights // n if on_device else b.held, gradients=b.gradients // n,
                optimizer=b.optimizer // n, batch=max(1, -(-b.batch // n)))


def advice(b: Budget, layers: int, devices: int = 0) -> list[str]:
    """Settings that would make a budget fit, each checked with the same arithmetic. `devices`: GPUs on this
    machine (sharding over processes only helps where each has its own memory)."""
    out = []
    for batch in (b.batch // 2, b.batch // 4, b.batch // 8, 1):
        if 1 <= batch < b.batch and b.at(batch=batch).fits:
            out.append(f"--batch-size {batch} --grad-accum {max(b.batch // batch, 1)} (same effective batch)")
            break
    ckpt = b.at(act_per_row=b.act_per_row // max(layers, 1) * 2)  # keeps about two layers' inputs per row
    if ckpt.fits:
        out.append("--gradient-checkpointing")
    lora_train = max(b.trainable // 100, 1)
    lora = b.at(trainable=lora_train, gradients=4 * lora_train, optimizer=8 * lora_train, compute_copies=0)
    if b.trainable > lora_train and lora.fits:
        out.append("--strategy lora")
    for n in (2, 4, 8):
        if n <= devices and sharded(b, n).fits:
            out.append(f"--nproc {n} --shard full")
            break
    return out


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / MIB:.0f} MiB"


def refusal(b: Budget, model) -> str:
    """The one line `train` stops with when the plan cannot fit."""
    layers = getattr(getattr(model, "config", None), "num_hidden_layers", 1) or 1
    fixes = advice(b, layers, torch.cuda.device_count() if b.device == "cuda" else 0)
    return (f"training needs about {gib(b.peak)} at --batch-size {b.batch} of {b.length} tokens (held now "
            f"{gib(b.held)}, gradients {gib(b.gradients)}, optimizer {gib(b.optimizer)}, activations "
            f"{gib(b.activations)}), more than the {gib(b.available)} of {b.available_from}; "
            + (f"try {' or '.join(fixes)}" if fixes else "use a smaller model or a machine with more memory")
            + " (tunesmith plan shows the arithmetic)")
