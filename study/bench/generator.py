"""Generator and sampler benchmarks: `python -m study.bench generator [options]`.

    python -m study.bench generator                    # throughput, precision, digits samplers (~10 CPU-min)
    python -m study.bench generator --quality cifar16  # quality vs CPU-minutes per recipe (15 CPU-min a recipe)
    python -m study.bench generator --peer             # side by side with denoising-diffusion-pytorch
    python -m study.bench generator --sampler-check cifar16   # <= 20 NFE vs 250-step DDPM on a default model
    python -m study.bench generator --report           # rebuild the quality text and targets from cached runs

Training throughput (default mode): the study's UNets (`WORKLOADS`) end to end through `train_generator` with
precision "auto" (what it chose here, and why), plus the training step alone in fp32, bf16 autocast and
channels-last (and compiled, with --compile), interleaved so a noisy machine hits every variant alike, timed in
process CPU time. FLOPs of a step (forward + backward) are counted with torch's FlopCounterMode;
`flops_fraction` is achieved FLOP/s over the dense matmul peak *of the precision used* (fp32 over fp32, bf16
over bf16) and `flops_fraction_of_fastest` over the machine's fastest matmul (fp32 or bf16), both measured
in the same run.

Samplers: a `tiny` generator trained with the quickstart's settings (grids/quickstart.yaml) on a 20-per-class
digits base, then every sampler; conditional accuracy = a logistic regression trained on the whole real digits
pool reading the asked-for class. DPM-Solver++ is compared with 250-step DDPM. `--sampler-check CASE` does the
same with the judge of study.bench.quality on the default recipe's model of that case (EDM, 16 / 32 px).

Figures (reports/bench.json, "generator"): `precision_auto`, `precision_reason`, `bf16_over_fp32` (CIFAR-16
default workload), per workload and precision images/s and flops fractions, `cond_acc` (quickstart), the
quality runs (`cond_acc_rel_cifar16`, `cifar16_train_cpu_minutes`, per case curves) and the peer comparison
(`peer_throughput_ratio`, `peer_cond_acc`, `ours_cond_acc_vs_peer`). "sampler": `images_per_s`, `nfe`,
per-sampler accuracy with a 95% interval, `dpmpp_minus_ddpm`, and the checks on the default recipes.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from study.analysis.estimators import newcombe_difference, wilson_interval
from study.bench.common import REPORTS
from study.data.datasets import load_dataset, real_indices
from study.grid import DigitsData, GeneratorTrainSpec, ModelSpec, SampleSpec, load_grid
from study.models.device import autocast
from study.models.generator import build_unet, load_generator, train_generator
from study.sampling.sample_set import sample_seeds
from study.sampling.sampler import nfe_per_image, sample
from study.store import GENERATOR_META

QUICKSTART = Path(__file__).resolve().parents[2] / "grids" / "quickstart.yaml"
# name -> (model, resolution, channels, batch): the quickstart's generator and the CIFAR defaults' networks.
WORKLOADS = {
    "tiny8": (ModelSpec(preset="tiny"), 8, 1, 128),
    "s16": (ModelSpec(preset="s"), 16, 3, 64),
    "s32": (ModelSpec(preset="s"), 32, 3, 64),
}
HEADLINE = "s16"  # bf16_over_fp32 is quoted for this workload (the CIFAR-10 16 px default network)
# (label, sampler, steps, images per class): 250-step DDPM is the slow reference.
SAMPLER_RUNS = [
    ("dpmpp-10", "dpmpp", 10, 100),
    ("dpmpp-20", "dpmpp", 20, 100),
    ("ddim-20", "ddim", 20, 100),
    ("heun-10", "heun", 10, 100),
    ("ddpm-250", "ddpm", 250, 30),
]


GUIDANCE_CHECK = (3.0, 4.0)  # stronger guidance on the default sampler (--sampler-check): accuracy vs FD


# --- training throughput ---------------------------------------------------------------------------------


def step_flops(unet, x, t, y) -> float:
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(unet(x, t, y).sample, x).backward()
    unet.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_steps(unet, x, t, y, precision: str, channels_last: bool, seconds: float = 4.0) -> float:
    """CPU seconds per training step (forward, loss, backward, AdamW) after two warm-up steps."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    unet = unet.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    cpu = torch.device("cpu")

    def step():
        with autocast(cpu, precision):
            out = unet(x, t, y).sample
        loss = F.mse_loss(out.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    n, start = 0, time.process_time()
    while n < 3 or time.process_time() - start < seconds:
        step()
        n += 1
    unet.to(memory_format=torch.contiguous_format)
    return (time.process_time() - start) / n


def fractions(flops_per_s: float, precision: str, peak: dict) -> dict:
    """Achieved FLOP/s over the matmul peak of the precision used, and over the machine's fastest."""
    own = peak["matmul_bf16_flops"] if precision in ("bf16", "fp16") else peak["matmul_fp32_flops"]
    return {"flops_fraction": flops_per_s / own, "flops_fraction_of_fastest": flops_per_s / peak["peak_flops"]}


def throughput(model: ModelSpec, resolution: int, channels: int, batch: int, peak: dict, compile_: bool) -> dict:
    torch.manual_seed(0)
    unet = build_unet(model, resolution, channels, num_classes=10).train()
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
        "model": model.model_dump(mode="json", exclude_defaults=True),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "resolution": resolution,
        "channels": channels,
        "batch": batch,
        "step_gflop": flops / 1e9,
    }
    for name, sec in best.items():
        out[name] = {"images_per_s": batch / sec, **fractions(flops / sec, variants[name][0], peak)}
    if compile_:
        start = time.process_time()
        compiled = torch.compile(unet)
        time_steps(compiled, x, t, y, "fp32", False, seconds=0.0)
        compile_s = time.process_time() - start
        sec = time_steps(compiled, x, t, y, "fp32", False)
        out["fp32_compiled"] = {
            "images_per_s": batch / sec,
            **fractions(flops / sec, "fp32", peak),
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
        stats = train_generator(model, spec, images, labels, 10, Path(tmp), seed=0, flip=False, progress=False)
    per_s = stats["steps"] * batch / stats["cpu_seconds"]
    out["train_generator"] = {
        "precision": stats["precision"],
        "precision_reason": stats["precision_reason"],
        "images_per_s": per_s,
        **fractions(per_s / batch * flops, stats["precision"], peak),
    }
    return out


# --- quality on digits -------------------------------------------------------------------------------------


def difference_ci(a: dict, b: dict) -> tuple[float, float]:
    """95% interval of accuracy(a) - accuracy(b), Newcombe's hybrid score method (sound at 0 or 1)."""
    return newcombe_difference(a["correct"], a["n"], b["correct"], b["n"], 0.95)


def sampler_runs(gen, score, num_classes: int, specs: list[tuple[str, SampleSpec, int]]) -> dict:
    """Every (label, spec, images per class) sampled from `gen` and scored: `score(images, labels)` -> dict with
    `correct` (and anything else, e.g. FD). Images/s are per CPU-second."""
    runs = {}
    for label, spec, volume in specs:
        labels = torch.arange(num_classes).repeat_interleave(volume)
        seeds = sample_seeds("bench", num_classes, volume)
        start = time.process_time()
        images = sample(gen, labels, seeds, spec, batch_size=spec.batch_size)
        seconds = time.process_time() - start
        scores = score(images, labels)
        n, correct = len(labels), scores["correct"]
        runs[label] = {
            "sampler": spec.sampler,
            "steps": spec.steps,
            "guidance": spec.guidance,
            "n": n,
            "cond_acc": correct / n,
            "cond_acc_ci95": wilson_interval(correct, n, 0.95),
            "images_per_s": n / seconds,
            "nfe": nfe_per_image(gen, spec),
            **scores,
        }
    return runs


def reference_specs(sample_spec: SampleSpec, scale: float = 1.0) -> list[tuple[str, SampleSpec, int]]:
    """The fixed sampler runs at the arm's guidance, plus the arm's own sampler with and without guidance."""
    g = sample_spec.guidance
    specs = [
        (label, SampleSpec(sampler=s, steps=k, guidance=g), max(2, round(v * scale))) for label, s, k, v in SAMPLER_RUNS
    ]
    specs.append(("default", sample_spec, max(2, round(100 * scale))))
    specs.append(("default-unguided", sample_spec.model_copy(update={"guidance": 1.0}), max(2, round(100 * scale))))
    return specs


def digits_quality(grid_path: Path, base: int, seed: int) -> tuple[dict, dict]:
    from sklearn.linear_model import LogisticRegression

    arm = load_grid(grid_path).generators["closed"]
    ds = load_dataset(DigitsData(name="digits"))
    pool = ds.train
    reference = LogisticRegression(max_iter=3000).fit(pool.images.reshape(len(pool), -1).numpy() / 255.0, pool.labels)
    idx = real_indices(ds, seed=seed, per_class=base)
    sub = pool.subset(idx)

    def score(images, labels):
        pred = reference.predict(images.reshape(len(images), -1).numpy() / 255.0)
        return {"correct": int(np.sum(pred == labels.numpy()))}

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
        runs = sampler_runs(load_generator(Path(tmp)), score, ds.num_classes, reference_specs(arm.sample))
    runs["quickstart"], runs["quickstart-unguided"] = runs.pop("default"), runs.pop("default-unguided")
    return stats, {"arm": arm.model_dump(mode="json"), "runs": runs}


def sampler_check(case_name: str, runs_dir: Path, scale: float) -> dict:
    """<= 20 NFE against 250-step DDPM on the default recipe's model of a quality case (its last mark), scored by
    the case's judge (conditional accuracy and FD in its features)."""
    from study.bench.quality import CASES, DEFAULTS, cached_runs, load_judge, test_subset
    from study.metrics import frechet_distance
    from study.models.classifier import features, predict_proba

    case = CASES[case_name]
    saved = [r for r in cached_runs(runs_dir, case_name) if (Path(r.get("model_dir", "")) / GENERATOR_META).exists()]
    run = next((r for r in saved if r["recipe_name"] == DEFAULTS[case_name]), None)
    if run is None:
        raise SystemExit(f"no saved model of recipe {DEFAULTS[case_name]} for {case_name}: run --quality {case_name}")
    ds = load_dataset(case.dataset)
    judge = load_judge(case, ds, runs_dir)
    gen = load_generator(Path(run["model_dir"]), device="cpu")
    sample_spec = SampleSpec.model_validate({**run["recipe"]["sample"]})

    def score(images, labels):
        probs = predict_proba(judge.model, images, ds.num_classes)
        real = features(judge.model, test_subset(ds, len(images) // ds.num_classes).images)  # class-balanced
        return {
            "correct": int((probs.argmax(1) == labels.numpy()).sum()),
            "fd": frechet_distance(features(judge.model, images), real),
        }

    specs = reference_specs(sample_spec, scale)
    per_class = specs[-1][2]
    specs += [(f"default-g{g:g}", sample_spec.model_copy(update={"guidance": g}), per_class) for g in GUIDANCE_CHECK]
    out = sampler_runs(gen, score, ds.num_classes, specs)
    return {"case": case_name, "recipe": DEFAULTS[case_name], "judge_test_acc": judge.test_acc, "runs": out,
            "dpmpp_minus_ddpm": out["default"]["cond_acc"] - out["ddpm-250"]["cond_acc"],
            "dpmpp_minus_ddpm_ci95": difference_ci(out["default"], out["ddpm-250"])}  # fmt: skip


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench generator", description=__doc__.split("\n")[0])
    p.add_argument("--grid", default=str(QUICKSTART), help="grid whose `closed` arm is the digits generator")
    p.add_argument("--base", type=int, default=20, help="real images per class the digits generator sees")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time per core)")
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), help="throughput workloads (default: all)")
    p.add_argument("--no-samplers", action="store_true", help="throughput and precision only (no digits samplers)")
    p.add_argument("--quality", nargs="*", metavar="CASE", help="quality vs CPU-minutes on these cases")
    p.add_argument("--recipes", nargs="+", help="recipes for --quality (default: each case's sweep)")
    p.add_argument("--ema", nargs="*", default=[], help="extra EMAs scored in --quality runs: none, dX, pX")
    p.add_argument("--peer", action="store_true", help="side by side with denoising-diffusion-pytorch")
    p.add_argument("--sampler-check", nargs="*", metavar="CASE", help="<= 20 NFE vs DDPM-250 on default models")
    p.add_argument(
        "--report",
        action="store_true",
        help="rebuild the quality text and targets from cached runs, the sampling checks' from bench.json",
    )
    p.add_argument("--runs", type=Path, default=None, help="where quality and peer runs are kept (resume)")
    p.add_argument("--reports", type=Path, default=REPORTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from study.bench import generator_modes as modes  # imports this module: loaded on use

    if args.quality is not None or args.peer or args.report or args.sampler_check is not None:
        return modes.run(args)
    return modes.throughput_mode(args)
