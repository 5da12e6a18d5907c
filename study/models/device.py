"""Device and number format, one policy for every model the study trains or samples (generators, classifiers,
pretrained pipelines).

    dev = resolve_device("auto")                        # torch.device; a device this machine lacks is an error
    choice = resolve_precision("auto", dev, key="train.precision")   # Precision(name="bf16", reason="...")
    with autocast(dev, choice.name):                    # bf16/fp16 autocast, or nothing for fp32
        ...
    stats |= choice.stats()                             # {"precision": ..., "precision_reason": ...}

`precision: auto` picks the format that trains faster on this device, and says why:
- CUDA: bf16 where the card supports it; otherwise fp16 with loss scaling (both trainers use a GradScaler), for
  the generator and the classifier alike.
- CPU: fp32 unless the CPU has bf16 instructions (x86 `avx512_bf16` / `amx_bf16`, Arm `bf16`): without them
  oneDNN emulates bf16 and autocast ran at 0.57-0.75x of fp32 (reports/bench.md). With them, a short
  micro-benchmark decides: one training step of a small conv net (3x3 convs at 64 and 128 channels, GroupNorm,
  SiLU, 16x16 maps, batch 32: the shape of the study's generators and classifiers) in fp32 and in bf16 autocast,
  interleaved, best of five bursts each (the minimum is what a quiet machine does), timed in process CPU time
  so other processes on a shared machine distort it less. bf16 is chosen when it is at least `BF16_MARGIN` faster. The measurement takes 3-6 s of CPU
  once per (CPU model, flags, torch version) and is cached in `$STUDY_CACHE/precision.json`.
- other devices (mps, xpu): fp32 (not measured).

The choice is recorded in each artifact's stats (`precision`, `precision_reason`) and never enters a cache key:
machines differ, results of the same spec are meant to be comparable across them.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from study.errors import DeviceError, ModelSpecError
from study.paths import default_cache_dir
from study.store import atomic_write_json

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16 / AMX-BF16, Arm's BF16 extension
BF16_MARGIN = 1.1  # bf16 must beat fp32 by 10%: below that, fp32's extra accuracy is worth more
PROBE_FILE = "precision.json"


# --- devices -------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device = "auto", key: str = "device") -> torch.device:
    """`auto` is CUDA when present, else CPU; `cpu`, `cuda`, `cuda:N`, `mps` as asked, if this machine has it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"{key}: {device!r} is not a device; expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{key}: {device!r} was asked for but CUDA is not available on this machine; use auto or cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{key}: {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA devices"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{key}: 'mps' was asked for but this machine has no MPS device; use auto or cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{key}: {device!r} is not supported; expected auto, cpu, cuda, cuda:N or mps")
    return dev


# --- precision -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16: the autocast format of the forward pass (weights, loss, optimizer stay fp32)
    reason: str  # why: asked for, or what `auto` found on this device

    def stats(self) -> dict:
        return {"precision": self.name, "precision_reason": self.reason}


def resolve_precision(precision: str, device: torch.device, key: str = "precision") -> Precision:
    """The precision to train or sample in on `device`: as asked, or chosen by the policy above for `auto`."""
    if precision not in PRECISIONS:
        raise ModelSpecError(f"{key}: {precision!r} is not a precision; expected one of {list(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ModelSpecError(f"{key}: fp16 needs a CUDA device; use bf16 or fp32 on {device.type}")
        return Precision(precision, f"asked for ({key}: {precision})")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: {torch.cuda.get_device_name(device)} supports bf16")
        return Precision("fp16", f"auto: {torch.cuda.get_device_name(device)} has no bf16; fp16 with loss scaling")
    if device.type == "cpu":
        return cpu_precision()
    return Precision("fp32", f"auto: fp32 on {device.type} (bf16 not measured there)")


def cpu_precision(measure=None, cache_dir: Path | None = None) -> Precision:
    """CPU policy: fp32 without bf16 instructions; with them, bf16 if the cached micro-benchmark finds it
    `BF16_MARGIN` faster. `measure` (a function returning the bf16 / fp32 speed ratio) is for tests."""
    flags = cpu_bf16_flags()
    cpu = cpu_name()
    if not flags:
        return Precision("fp32", f"auto: {cpu} has no bf16 instructions (bf16 would be emulated, slower than fp32)")
    ratio = probe_ratio(measure or measure_bf16_speedup, cache_dir)
    have = "/".join(flags)
    if ratio >= BF16_MARGIN:
        return Precision("bf16", f"auto: {cpu} has {have}; bf16 trained {ratio:.2f}x as fast as fp32 (micro-benchmark)")
    return Precision(
        "fp32", f"auto: {cpu} has {have} but bf16 trained only {ratio:.2f}x as fast as fp32 (micro-benchmark)"
    )


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on `device`, or a no-op context for fp32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


# --- the CPU's capabilities and the micro-benchmark ------------------------------------------------------


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo `flags` on x86, `Features` on Arm); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_bf16_flags() -> tuple[str, ...]:
    return tuple(f for f in BF16_FLAGS if f in cpu_flags())


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_fingerprint() -> str:
    """What the measurement depends on: the CPU, its bf16 flags, torch."""
    return f"{cpu_name()} | {','.join(cpu_bf16_flags())} | torch {torch.__version__}"


_MEMO: dict[str, float] = {}  # per process, so a run measures at most once even without a writable cache


def probe_ratio(measure, cache_dir: Path | None = None) -> float:
    """The bf16 / fp32 speed ratio for this machine: memoised, else read from the cache file, else measured."""
    fingerprint = probe_fingerprint()
    if fingerprint in _MEMO:
        return _MEMO[fingerprint]
    path = Path(cache_dir or default_cache_dir()) / PROBE_FILE
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    entry = cached.get(fingerprint)
    if isinstance(entry, dict) and isinstance(entry.get("bf16_over_fp32"), int | float):
        ratio = float(entry["bf16_over_fp32"])
    else:
        ratio = float(measure())
        cached[fingerprint] = {"bf16_over_fp32": ratio, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, cached)
        except OSError:
            pass  # a read-only cache: measure again next process
    _MEMO[fingerprint] = ratio
    return ratio


def measure_bf16_speedup(batch: int = 32, bursts: int = 5, steps: int = 2) -> float:
    """bf16-autocast over fp32 training speed of a small conv net, interleaved bursts, best of each (CPU time).
    On one thread: the ratio is a property of the core's instructions, and CPU time of several threads on a
    loaded machine also counts their waiting for each other."""
    from torch import nn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(nn, batch, bursts, steps)
    finally:
        torch.set_num_threads(threads)


def _measure(nn, batch: int, bursts: int, steps: int) -> float:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.GroupNorm(16, 64), nn.SiLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.GroupNorm(16, 64), nn.SiLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.GroupNorm(16, 128), nn.SiLU(),
            nn.Conv2d(128, 128, 3, padding=1), nn.GroupNorm(16, 128), nn.SiLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(128, 3, 3, padding=1),
        )  # fmt: skip
        x = torch.randn(batch, 3, 16, 16)
    params = list(net.parameters())
    cpu = torch.device("cpu")

    def burst(precision: str) -> float:
        start = time.process_time()
        for _ in range(steps):
            with autocast(cpu, precision):
                out = net(x)
            loss = (out.float() - x).square().mean()
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():  # a plain SGD update: no torch.optim, whose global step hooks others may count
                torch._foreach_add_(params, grads, alpha=-1e-4)
        return time.process_time() - start

    for _ in range(2):  # warm-up: oneDNN creates and caches its kernels on first use of each shape
        burst("fp32"), burst("bf16")
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(bursts):
        for precision in best:
            best[precision] = min(best[precision], burst(precision))
    return best["fp32"] / best["bf16"]
