"""Generator and sampler benchmarks: `python -m study.bench generator [options]`.

    python -m study.bench generator               # ~5-8 min on 2 cores
    python -m study.bench generator --compile     # also time torch.compile (a cold compile takes over a minute)

Training throughput: presets `tiny` (8x8 grey, batch 128: the quickstart) and `s` (32 px RGB, batch 64),
end to end through `train_generator` with precision "auto", plus the training step alone in fp32, bf16
autocast and channels-last (and compiled, with --compile), interleaved so a noisy machine hits every variant
alike. FLOPs of a step (forward + backward) are counted with torch's FlopCounterMode; `train_flops_fraction`
is achieved FLOP/s over the fastest dense matmul (fp32 or bf16) measured in the same run.

Quality: a `tiny` generator trained with the quickstart's settings (grids/quickstart.yaml) on a 20-per-class
digits base, then every sampler at its settings; conditional accuracy = a logistic regression trained on the
whole real digits pool reading the asked-for class. DPM-Solver++ is compared with 250-step DDPM.

Figures (reports/bench.json): "generator": `train_images_per_s`, `train_flops_fraction` (preset s),
`cond_acc` (quickstart generator and sampler), `train_seconds` (the quickstart generator); per preset and
precision details. "sampler": `images_per_s`, `nfe` (the quickstart sampler), per-sampler accuracy with a
95% interval, and `dpmpp_minus_ddpm` (accuracy difference, 95% interval).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from study.analysis.estimators import newcombe_difference, wilson_interval
from study.bench.common import merge_results, peak_flops
from study.data.datasets import load_dataset, real_indices
from study.grid import DigitsData, GeneratorTrainSpec, ModelSpec, SampleSpec, load_grid
from study.models.generator import build_unet, load_generator, train_generator
from study.sampling.sample_set import sample_seeds
from study.sampling.sampler import nfe_per_image, sample

QUICKSTART = Path(__file__).resolve().parents[2] / "grids" / "quickstart.yaml"
# (preset, resolution, channels, batch): the quickstart's generator and a CPU-study preset at CIFAR size.
WORKLOADS = [("tiny", 8, 1, 128), ("s", 32, 3, 64)]
# (label, sampler, steps, images per class): 250-step DDPM is the slow reference.
SAMPLER_RUNS = [
    ("dpmpp-10", "dpmpp", 10, 100),
    ("dpmpp-20", "dpmpp", 20, 100),
    ("ddim-20", "ddim", 20, 100),
    ("heun-10", "heun", 10, 100),
    ("ddpm-250", "ddpm", 250, 30),
]


# --- training throughput ---------------------------------------------------------------------------------


def step_flops(unet, x, t, y) -> float:
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(unet(x, t, y).sample, x).backward()
    unet.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_steps(unet, x, t, y, precision: str, channels_last: bool, seconds: float = 4.0) -> float:
    """Seconds per training step (forward, loss, backward, AdamW) after two warm-up steps."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    unet = unet.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = unet(x, t, y).sample
        loss = F.mse_loss(out.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        step()
        n += 1
    unet.to(memory_format=torch.contiguous_format)
    return (time.perf_counter() - start) / n


def throughput(preset: str, resolution: int, channels: int, batch: int, peak: float, compile_: bool) -> dict:
    torch.manual_seed(0)
    unet = build_unet(ModelSpec(preset=preset), resolution, channels, num_classes=10).train()
    x = torch.randn(batch, channels, resolution, resolution)
    t = torch.randint(0, 1000, (batch,))
    y = torch.randint(0, 11, (batch,))
    flops = step_flops(unet, x, t, y)
    variants = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp32_channels_last": ("fp32", True)}
    best = {name: math.inf for name in variants}
    for _ in range(2):  # interleaved rounds, best of each: machine noise hits every variant alike
        for name, (precision, cl) in variants.items():
            best[name] = min(best[name], time_steps(unet, x, t, y, precision, cl))
    out = {
        "parameters": sum(p.numel() for p in unet.parameters()),
        "resolution": resolution,
        "channels": channels,
        "batch": batch,
        "step_gflop": flops / 1e9,
    }
    for name, sec in best.items():
        out[name] = {"images_per_s": batch / sec, "flops_fraction": flops / sec / peak}
    if compile_:
        start = time.perf_counter()
        compiled = torch.compile(unet)
        time_steps(compiled, x, t, y, "fp32", False, seconds=0.0)
        compile_s = time.perf_counter() - start
        sec = time_steps(compiled, x, t, y, "fp32", False)
        out["fp32_compiled"] = {
            "images_per_s": batch / sec,
            "flops_fraction": flops / sec / peak,
            "compile_s": compile_s,
        }
    out["bf16_over_fp32"] = out["bf16"]["images_per_s"] / out["fp32"]["images_per_s"]
    out["channels_last_over_fp32"] = out["fp32_channels_last"]["images_per_s"] / out["fp32"]["images_per_s"]

    # End to end through train_generator with precision "auto" (what a grid runs).
    images = torch.randint(0, 256, (256, channels, resolution, resolution), dtype=torch.uint8)
    labels = torch.arange(256) % 10
    steps = max(4, min(64, math.ceil(8.0 / best["fp32"])))  # about 8 s of training
    spec = GeneratorTrainSpec(steps=steps, batch_size=batch, warmup=0)
    with tempfile.TemporaryDirectory() as tmp:
        stats = train_generator(
            ModelSpec(preset=preset), spec, images, labels, 10, Path(tmp), seed=0, flip=False, progress=False
        )
    out["train_generator"] = {
        "precision": stats["precision"],
        "images_per_s": stats["images_per_s"],
        "flops_fraction": stats["images_per_s"] / batch * flops / peak,
    }
    return out


# --- quality on digits -------------------------------------------------------------------------------------


def digits_quality(grid_path: Path, base: int, seed: int) -> tuple[dict, dict]:
    from sklearn.linear_model import LogisticRegression

    arm = load_grid(grid_path).generators["closed"]
    ds = load_dataset(DigitsData(name="digits"))
    pool = ds.train
    reference = LogisticRegression(max_iter=3000).fit(pool.images.reshape(len(pool), -1).numpy() / 255.0, pool.labels)
    idx = real_indices(ds, seed=seed, per_class=base)
    sub = pool.subset(idx)
    with tempfile.TemporaryDirectory() as tmp:
        stats = train_generator(
            arm.model,
            arm.train,
            sub.images,
            sub.labels,
            ds.num_classes,
            Path(tmp),
            seed=seed,
            flip=False,
            progress=False,
        )
        gen = load_generator(Path(tmp))
        runs = {}
        specs = [
            (label, SampleSpec(sampler=s, steps=k, guidance=arm.sample.guidance), v) for label, s, k, v in SAMPLER_RUNS
        ]
        specs.append(("quickstart", arm.sample, 100))
        specs.append(("quickstart-unguided", arm.sample.model_copy(update={"guidance": 1.0}), 100))
        for label, spec, volume in specs:
            labels = torch.arange(ds.num_classes).repeat_interleave(volume)
            seeds = sample_seeds("bench", ds.num_classes, volume)
            start = time.perf_counter()
            images = sample(gen, labels, seeds, spec, batch_size=spec.batch_size)
            seconds = time.perf_counter() - start
            pred = reference.predict(images.reshape(len(images), -1).numpy() / 255.0)
            correct = int(np.sum(pred == labels.numpy()))
            acc = correct / len(labels)
            runs[label] = {
                "sampler": spec.sampler,
                "steps": spec.steps,
                "guidance": spec.guidance,
                "n": len(labels),
                "correct": correct,
                "cond_acc": acc,
                "cond_acc_ci95": wilson_interval(correct, len(labels), 0.95),
                "images_per_s": len(labels) / seconds,
                "nfe": nfe_per_image(gen, spec),
            }
    return stats, {"arm": arm.model_dump(mode="json"), "runs": runs}


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench generator", description=__doc__.split("\n")[0])
    p.add_argument("--grid", default=str(QUICKSTART), help="grid whose `closed` arm is the digits generator")
    p.add_argument("--base", type=int, default=20, help="real images per class the digits generator sees")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    peak = peak_flops()
    presets = {}
    for preset, resolution, channels, batch in WORKLOADS:
        presets[preset] = throughput(preset, resolution, channels, batch, peak["peak_flops"], args.compile)
        print(f"{preset}: {presets[preset]['train_generator']['images_per_s']:.0f} images/s", flush=True)
    train_stats, quality = digits_quality(Path(args.grid), args.base, seed=0)
    load_after = os.getloadavg()[0]

    runs = quality["runs"]
    qs = runs["quickstart"]
    dpm, ddpm = runs["dpmpp-20"], runs["ddpm-250"]
    diff = dpm["cond_acc"] - ddpm["cond_acc"]
    s = presets["s"]
    noise = {"threads": torch.get_num_threads(), "load_before": load_before, "load_after": load_after}
    gen_figures = {
        "train_images_per_s": s["train_generator"]["images_per_s"],
        "train_flops_fraction": s["train_generator"]["flops_fraction"],
        "train_precision": s["train_generator"]["precision"],
        "cond_acc": qs["cond_acc"],
        "cond_acc_n": qs["n"],
        "train_seconds": train_stats["seconds"],
        "train_stats": train_stats,
        "quickstart_arm": quality["arm"],
        "presets": presets,
        **peak,
        **noise,
    }
    sampler_figures = {
        "images_per_s": qs["images_per_s"],
        "nfe": qs["nfe"],
        "runs": runs,
        "dpmpp_minus_ddpm": diff,
        "dpmpp_minus_ddpm_ci95": newcombe_difference(dpm["correct"], dpm["n"], ddpm["correct"], ddpm["n"], 0.95),
        **noise,
    }
    gen_md, sampler_md = markdown(gen_figures, sampler_figures)
    merge_results("generator", gen_figures, gen_md)
    merge_results("sampler", sampler_figures, sampler_md)
    print(gen_md + "\n\n" + sampler_md)
    return 0


def markdown(gen: dict, sampler: dict) -> tuple[str, str]:
    arm = gen["quickstart_arm"]
    lines = [
        "## generator",
        "",
        f"Measured on a shared 2-core CPU ({gen['threads']} torch threads; load average {gen['load_before']:.1f} "
        f"before, {gen['load_after']:.1f} after). Dense matmul peak in this run: "
        f"{gen['matmul_fp32_flops'] / 1e9:.0f} GFLOP/s fp32, {gen['matmul_bf16_flops'] / 1e9:.0f} GFLOP/s bf16.",
        "",
        "| preset | input | params | GFLOP/step | fp32 img/s (frac) | bf16 img/s (frac) | channels-last img/s "
        "| train_generator img/s (frac, precision) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in gen["presets"].items():
        tg = p["train_generator"]
        lines.append(
            f"| {name} | {p['batch']}x{p['channels']}x{p['resolution']}² | {p['parameters'] / 1e6:.2f}M "
            f"| {p['step_gflop']:.1f} | {p['fp32']['images_per_s']:.0f} ({p['fp32']['flops_fraction']:.2f}) "
            f"| {p['bf16']['images_per_s']:.0f} ({p['bf16']['flops_fraction']:.2f}) "
            f"| {p['fp32_channels_last']['images_per_s']:.0f} "
            f"| {tg['images_per_s']:.0f} ({tg['flops_fraction']:.2f}, {tg['precision']}) |"
        )
    compiled = {n: p["fp32_compiled"] for n, p in gen["presets"].items() if "fp32_compiled" in p}
    lines += [
        "",
        f"- `train_images_per_s` (preset s, 64x3x32²) = **{gen['train_images_per_s']:.0f}**, "
        f"`train_flops_fraction` = **{gen['train_flops_fraction']:.2f}** of the fastest matmul (target >= 0.5).",
        "- Precision: bf16 autocast runs at "
        + ", ".join(f"{p['bf16_over_fp32']:.2f}x" for p in gen["presets"].values())
        + " the fp32 speed (tiny, s) and channels-last at "
        + ", ".join(f"{p['channels_last_over_fp32']:.2f}x" for p in gen["presets"].values())
        + "; so `precision: auto` is fp32 on CPU (bf16 on CUDA).",
    ]
    if compiled:
        lines.append(
            "- torch.compile (fp32): "
            + ", ".join(
                f"{n} {c['images_per_s']:.0f} img/s after a {c['compile_s']:.0f} s compile" for n, c in compiled.items()
            )
            + "."
        )
    lines += [
        f"- Quickstart generator (preset {arm['model']['preset']}, {arm['train']['steps']} steps x "
        f"{arm['train']['batch_size']}, digits base 20/class): **{gen['train_seconds']:.1f} s** of training; "
        f"`cond_acc` = **{gen['cond_acc']:.3f}** (n = {gen['cond_acc_n']}; {arm['sample']['sampler']} "
        f"{arm['sample']['steps']} steps, guidance {arm['sample']['guidance']:g}; target >= 0.95).",
    ]
    s_lines = [
        "## sampler",
        "",
        "The quickstart generator above, sampled by each sampler; conditional accuracy = a logistic regression "
        "trained on the whole real digits pool, on the asked-for labels (95% Wilson intervals).",
        "",
        "| sampler | steps | guidance | NFE/image | images/s | n | cond. accuracy [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in sampler["runs"].items():
        lo, hi = r["cond_acc_ci95"]
        s_lines.append(
            f"| {label} | {r['steps']} | {r['guidance']:g} | {r['nfe']} | {r['images_per_s']:.0f} | {r['n']} "
            f"| {r['cond_acc']:.3f} [{lo:.3f}, {hi:.3f}] |"
        )
    lo, hi = sampler["dpmpp_minus_ddpm_ci95"]
    s_lines += [
        "",
        f"- `images_per_s` = **{sampler['images_per_s']:.0f}**, `nfe` = **{sampler['nfe']}** (the quickstart sampler).",
        f"- DPM-Solver++ 20 steps minus DDPM 250 steps: {sampler['dpmpp_minus_ddpm']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
        "(Newcombe 95% interval; within noise when it holds 0 or lies above it).",
    ]
    return "\n".join(lines), "\n".join(s_lines)
