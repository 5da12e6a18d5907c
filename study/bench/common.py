"""Shared benchmark parts: peak dense-matmul FLOP/s measured in the same run, and bench.json/bench.md output."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from study.store import atomic_write_json, atomic_write_text, git_state, package_versions

REPORTS = Path("reports")


def matmul_flops(
    dtype: torch.dtype, n: int = 2048, repeats: int = 8, device: str = "cpu", clock=time.perf_counter
) -> float:
    """Achieved FLOP/s of an n x n x n matmul in `dtype` (best of a few timed bursts; `clock` time.process_time
    measures CPU time, which other processes on a shared machine distort less)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(3):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = clock()
        for _ in range(repeats):
            a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, clock() - t)
    return 2 * n**3 * repeats / best


def peak_flops(device: str = "cpu", clock=time.perf_counter) -> dict:
    """The machine's fastest dense matmul now, fp32 and bf16: the denominator of every flops fraction."""
    fp32 = matmul_flops(torch.float32, device=device, clock=clock)
    bf16 = matmul_flops(torch.bfloat16, device=device, clock=clock)
    return {
        "matmul_fp32_flops": fp32,
        "matmul_bf16_flops": bf16,
        "peak_flops": max(fp32, bf16),
        "peak_dtype": "fp32" if fp32 >= bf16 else "bf16",
    }


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **git_state(),
        "packages": package_versions(),
    }


def merge_mode(section: str, mode: str, figures: dict, markdown: str, order: tuple[str, ...], reports: Path) -> None:
    """Merge one mode's figures into `section` of bench.json: the other modes' figures stay, this mode's earlier
    ones are replaced (a renamed figure does not linger); the section's text is the modes' texts in `order`."""
    path = reports / "bench.json"
    old = json.loads(path.read_text()).get(section, {}) if path.exists() else {}
    modes = {**old.get("modes", {}), mode: sorted(figures)}
    kept = {k: old[k] for other, keys in modes.items() if other != mode for k in keys if k in old}
    parts = {**old.get("markdown_parts", {}), mode: markdown}
    text = f"## {section}\n\n" + "\n\n".join(parts[k] for k in order if k in parts)
    merge_results(section, {**kept, **figures, "modes": modes, "markdown_parts": parts}, text, reports)


def merge_results(section: str, figures: dict[str, Any], markdown: str, reports: Path = REPORTS) -> None:
    """Merge one benchmark's figures into reports/bench.json and its text into reports/bench.md."""
    reports.mkdir(parents=True, exist_ok=True)
    with FileLock(str(reports / ".bench.lock")):
        path = reports / "bench.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data[section] = {**figures, "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine()}
        sections = data.setdefault("_markdown", {})
        sections[section] = markdown
        atomic_write_json(path, data)
        body = "\n\n".join(sections[k] for k in sorted(sections))
        atomic_write_text(
            reports / "bench.md",
            "# study benchmarks\n\nWritten by `python -m study.bench`; "
            "every FLOP/s fraction is over the fastest dense matmul measured in the same run.\n\n" + body + "\n",
        )
