"""What a grid would cost on a GPU, from FLOPs counted here: `python -m study.bench cost GRID [options]`.

    python -m study.bench cost grids/imagenet100.yaml --classes 100 --test-per-class 50   # no data needed
    python -m study.bench cost grids/imagenet100.yaml --smoke --check-cpu   # + the method checked on this CPU

Method. torch's FlopCounterMode counts the matmul, convolution and attention FLOPs (2 per multiply-add) of one
training image of every network the plan trains (forward + backward, built as the stages build it, at the grid's
resolution and class count) and of one network evaluation (forward) of every network that samples or scores
images; FLOPs per image are counted at batch 2 and scaled by the batch size (these operations are per image).
The plan (study.runner.plan) says how many: generator steps x batch; sampler network evaluations per image
(study.sampling.cost, guidance counted) x images; the judge scoring each sample set; classifier steps x batch
plus the test (and val) images each scores; the diagnostics' domain classifiers, CAS classifier and judge
features. GPU time = FLOPs / (peak x utilisation). Pretrained generators (downloaded, not trained) and the
memory-bound work the counter does not see (norms, activations, optimizer, EMA, data loading) are not counted
as FLOPs: the utilisation figure, measured end to end on a real run, carries them.

Reference GPU: NVIDIA A100, 312 TFLOP/s dense bf16/fp16 on tensor cores (the datasheet figure).
Utilisation: 0.138, from EDM's ImageNet-64 run (Karras et al. 2022; github.com/NVlabs/edm README, "Training
new models"): the ADM network trained on 2,500 Mimg on 32 A100 in ~13 days with fp16. Built with diffusers
(`adm64_unet`: 295.3 M parameters; EDM's table: 295.9 M) it costs 618.7 GFLOP per training image by the same
counter, so 2.5e9 x 618.7e9 / (32 x 13 x 86,400 s x 312e12) = 0.138 of peak. The same resolution, GPU and
task; the study's networks are smaller (preset l: 128-256 wide against ADM's 192-768), and small networks
reach a lower fraction, so the figure is more likely optimistic than pessimistic ("~13 days" is itself
rounded: +-0.5 day is +-4%).

CPU check (--check-cpu): the same method predicts the CPU seconds of a few fp32 training steps of the grid's
own networks (at --check-batch images) from the fp32 matmul peak measured now x one achieved fraction stated
before the run (the generator benchmark's CIFAR-16 UNet fp32 fraction in reports/bench.json, or
--cpu-fraction), and compares with the measured process CPU time (one torch thread): measured / predicted is
how far one utilisation figure carries across networks. Counting FLOPs costs a few CPU seconds per network;
the check a few steps each (preset l at 64 px: ~4 s a step at batch 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from study.bench.common import REPORTS, matmul_flops
from study.errors import StudyInputError
from study.grid import ClassifierSpec, Grid, ModelSpec, expand, load_grid
from study.runner.plan import Node, Plan, make_plan, sample_nfe_per_image
from study.sampling import cost

GPU = "NVIDIA A100"
GPU_PEAK = 312e12  # dense bf16/fp16 tensor-core FLOP/s (A100 datasheet)
# EDM's ImageNet-64 ADM run: images, GPUs, days (README table), and the counted FLOPs of one training image.
EDM_IMAGES, EDM_GPUS, EDM_DAYS, ADM64_TRAIN_FLOPS = 2.5e9, 32, 13, 618.689e9
UTILISATION = EDM_IMAGES * ADM64_TRAIN_FLOPS / (EDM_GPUS * EDM_DAYS * 86400 * GPU_PEAK)
COUNT_BATCH = 2  # images per FLOP count (BatchNorm in train mode needs more than one)


class CostError(StudyInputError):
    """The grid's cost cannot be counted (its networks cannot be built, or the data's shape is unknown)."""


@dataclass(frozen=True)
class Shape:
    """What the networks' sizes and the evaluation counts depend on."""

    classes: int
    channels: int
    resolution: int
    test: int  # test images each classifier scores
    val: int  # val images (0: no val split)
    pool: int | None  # training images in the pool (an epoch budget needs it)


@dataclass(frozen=True)
class Work:
    stage: str
    network: str
    count: float  # images through the network (training: steps x batch)
    flops_each: float  # per image: forward + backward when training, forward otherwise
    training: bool

    @property
    def flops(self) -> float:
        return self.count * self.flops_each


# --- counting ---------------------------------------------------------------------------------------------


def count_flops(run) -> float:
    """FLOPs torch's FlopCounterMode counts while `run()` executes (backward included if it calls it)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def _seeded():
    torch.manual_seed(0)


_COUNTS: dict[tuple, float] = {}


def _memo(kind: str, spec, *rest, count) -> float:
    """Count once per (network spec, shape, mode): a grid's nodes share a handful of networks."""
    key = (kind, spec.model_dump_json(), *rest)
    if key not in _COUNTS:
        _COUNTS[key] = count()
    return _COUNTS[key]


def unet_flops(model: ModelSpec, shape: Shape, training: bool) -> float:
    """Per image: one training step's forward + backward (MSE on the output), or one network evaluation."""
    return _memo("unet", model, shape, training, count=lambda: _count_unet(model, shape, training))


def _count_unet(model: ModelSpec, shape: Shape, training: bool) -> float:
    from study.models.generator import build_unet

    _seeded()
    unet = build_unet(model, shape.resolution, shape.channels, shape.classes).train(training)
    x = torch.randn(COUNT_BATCH, shape.channels, shape.resolution, shape.resolution)
    t, y = torch.tensor([10, 500]), torch.tensor([0, shape.classes])

    def run():
        if training:
            F.mse_loss(unet(x, t, y).sample, x).backward()
        else:
            with torch.no_grad():
                unet(x, t, y)

    return count_flops(run) / COUNT_BATCH


def classifier_flops(spec: ClassifierSpec, shape: Shape, classes: int, training: bool) -> float:
    """Per image: one training step's forward + backward (cross-entropy), or one forward pass."""
    return _memo(
        "classifier", spec, shape, classes, training, count=lambda: _count_classifier(spec, shape, classes, training)
    )


def _count_classifier(spec: ClassifierSpec, shape: Shape, classes: int, training: bool) -> float:
    from study.models.classifier import build_classifier

    _seeded()
    net = build_classifier(spec, classes, shape.channels, shape.resolution).train(training)
    x = torch.randint(0, 256, (COUNT_BATCH, shape.channels, shape.resolution, shape.resolution), dtype=torch.uint8)
    y = torch.arange(COUNT_BATCH) % classes

    def run():
        if training:
            F.cross_entropy(net(x), y).backward()
        else:
            with torch.no_grad():
                net(x)

    return count_flops(run) / COUNT_BATCH


def adm64_unet():
    """EDM's ImageNet-64 ADM network (Dhariwal & Nichol 2021) in diffusers terms: widths 192-384-576-768, three
    res blocks a level, attention at 32, 16 and 8 px (64-channel heads), BigGAN res-block resampling, scale-shift
    norm, learned variance (6 outputs), 1,000 classes. 295.3 M parameters (EDM reports 295.9 M)."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=64, in_channels=3, out_channels=6, block_out_channels=(192, 384, 576, 768),
                       layers_per_block=3, down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * 3,
                       up_block_types=("AttnUpBlock2D",) * 3 + ("UpBlock2D",), attention_head_dim=64,
                       resnet_time_scale_shift="scale_shift", downsample_type="resnet", upsample_type="resnet",
                       num_class_embeds=1000, norm_num_groups=32)  # fmt: skip


# --- the grid's work --------------------------------------------------------------------------------------


def dataset_shape(grid: Grid, classes: int | None = None, test_per_class: int | None = None) -> Shape:
    """From the options when given (no data needed: `dataset.resolution`, 3 channels unless `grey`), else from
    the decoded dataset (study.data.load_dataset: its cache, or the files the grid names)."""
    spec = grid.dataset
    if classes is not None:
        resolution = getattr(spec, "resolution", None)
        if resolution is None or test_per_class is None:
            raise CostError(
                f"--classes needs --test-per-class and a dataset with `resolution:` (dataset {spec.name!r} has "
                f"resolution {resolution}); or drop --classes to read the shape from the data"
            )
        return Shape(classes, 1 if getattr(spec, "grey", False) else 3, resolution, classes * test_per_class, 0, None)
    from study.data.datasets import load_dataset

    ds = load_dataset(spec)
    return Shape(ds.num_classes, ds.channels, ds.resolution, len(ds.test), len(ds.val or ()), len(ds.train))


def _classifier_steps(spec: ClassifierSpec, images: int | None, what: str) -> int:
    if spec.steps is not None:
        return spec.steps
    if images is None:
        raise CostError(f"{what} trains for `epochs: {spec.epochs}`: its step count needs the pool size; "
                        "read the shape from the data (drop --classes)")  # fmt: skip
    return math.ceil(spec.epochs * images / spec.batch_size)


def _classifier_work(stage: str, spec: ClassifierSpec, shape: Shape, images: int | None, name: str) -> list[Work]:
    """Training (steps x batch) and evaluation (test once, val once plus at each selection check)."""
    steps = _classifier_steps(spec, images, f"{stage} {name}")
    scored = shape.test + shape.val * (1 + (spec.val_checks if spec.select != "last" else 0))
    return [
        Work(stage, name, steps * spec.batch_size, classifier_flops(spec, shape, shape.classes, True), True),
        Work(stage, name, scored, classifier_flops(spec, shape, shape.classes, False), False),
    ]


def node_work(plan: Plan, node: Node, shape: Shape) -> list[Work]:
    """The FLOP-bearing work of one plan node (an empty list for a pretrained generator: downloaded)."""
    grid, clf, k = plan.grid, plan.grid.classifier, shape.classes
    arm = grid.generators.get(node.arm) if node.arm else None
    if node.stage == "generator":
        if arm.pretrained is not None:
            return []
        train = arm.train
        return [Work("generator", _unet_name(arm.model), train.steps * train.batch_size,
                     unet_flops(arm.model, shape, True), True)]  # fmt: skip
    if node.stage == "samples":
        if arm.pretrained is not None:
            return [Work("samples", clf.arch, node.volume_per_class * k, classifier_flops(clf, shape, k, False), False)]
        images = node.volume_per_class * k + cost.search_images(arm.sample)
        nfe = sample_nfe_per_image(grid, node) * images
        return [
            Work("samples", _unet_name(arm.model), nfe, unet_flops(arm.model, shape, False), False),
            Work("samples", clf.arch, node.volume_per_class * k, classifier_flops(clf, shape, k, False), False),
        ]
    if node.stage == "reference":
        return _classifier_work("reference", clf, shape, shape.pool, clf.arch)
    if node.stage == "classifier":
        return _classifier_work("classifier", clf, shape, (node.real_per_class + node.volume_per_class) * k, clf.arch)
    if node.stage == "diagnostics":
        return _diagnostics_work(grid, node, shape)
    raise ValueError(f"unknown stage {node.stage!r}")


def _diagnostics_work(grid: Grid, node: Node, shape: Shape) -> list[Work]:
    """The judge's features of the samples, the base, the outside-base blocks and the balanced pool sample (at most
    REAL_PER_CLASS a class: an upper bound for classes with fewer images); the domain classifiers (trained per
    fold, each image scored once held out); CAS on conditional sets (the grid's classifier on min(base, volume)
    synthetic images a class, then the test split)."""
    from study.memorisation import MAX_BLOCKS
    from study.sampling.diagnostics import REAL_PER_CLASS, domain_spec

    spec, clf, k = grid.diagnostics, grid.classifier, shape.classes
    fake, base = node.volume_per_class * k, node.base_per_class * k
    real = (1 + MAX_BLOCKS) * base + REAL_PER_CLASS * k
    judge = classifier_flops(clf, shape, k, False)
    out = [Work("diagnostics", f"{clf.arch} (judge features)", fake + real, judge, False)]
    if spec.domain is not None:
        domain = domain_spec(spec.domain)
        name = f"{domain.arch} (domain)"
        train = spec.domain.folds * domain.steps * domain.batch_size
        out += [
            Work("diagnostics", name, train, classifier_flops(domain, shape, 2, True), True),
            Work("diagnostics", name, 2 * fake, classifier_flops(domain, shape, 2, False), False),
        ]
    if spec.cas and not grid.generators[node.arm].sample.mixing:
        cas = min(node.base_per_class, node.volume_per_class) * k
        out += [
            Work("diagnostics", f"{w.network} (CAS)", w.count, w.flops_each, w.training)
            for w in _classifier_work("diagnostics", clf, shape, cas, clf.arch)
        ]
    return out


def _unet_name(model: ModelSpec) -> str:
    return f"UNet {model.preset}" + (f" {list(model.channels)}" if model.channels else "")


def grid_work(grid: Grid, shape: Shape) -> list[Work]:
    """Every FLOP-bearing piece of work of the grid's whole plan (nothing cached is assumed)."""
    plan = make_plan(grid, expand(grid))
    try:
        return [w for node in plan.nodes.values() for w in node_work(plan, node, shape)]
    except StudyInputError:
        raise
    except Exception as e:  # a network the stages could not build either
        raise CostError(f"cannot count the FLOPs of grid {grid.name!r}: {type(e).__name__}: {e}") from e


def gpu_hours(flops: float, peak: float = GPU_PEAK, utilisation: float = UTILISATION) -> float:
    return flops / (peak * utilisation) / 3600


def summary(work: list[Work]) -> dict[tuple[str, str, bool], tuple[float, float]]:
    """(stage, network, training) -> (images, FLOPs), in first-seen order."""
    out: dict[tuple[str, str, bool], tuple[float, float]] = {}
    for w in work:
        n, f = out.get((w.stage, w.network, w.training), (0.0, 0.0))
        out[(w.stage, w.network, w.training)] = (n + w.count, f + w.flops)
    return out


def _flops_text(flops: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:,.2f} {unit}"
    return f"{flops / 1e6:,.2f} MFLOP"


def cost_markdown(grid: Grid, shape: Shape, work: list[Work], utilisation: float) -> str:
    total = sum(w.flops for w in work)
    lines = [
        f"grid {grid.name}: {shape.classes} classes, {shape.channels}x{shape.resolution}x{shape.resolution}, "
        f"{len(grid.seeds)} seeds",
        "| stage | network | work | images | GFLOP/image | FLOPs | GPU-hours |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for (stage, network, training), (n, f) in summary(work).items():
        what = "train (fwd+bwd)" if training else "evaluate (fwd)"
        per = f / n / 1e9 if n else 0.0
        hours = gpu_hours(f, GPU_PEAK, utilisation)
        lines.append(f"| {stage} | {network} | {what} | {n:,.0f} | {per:,.3g} | {_flops_text(f)} | {hours:,.3g} |")
    lines.append(
        f"Total {_flops_text(total)} = **{gpu_hours(total, GPU_PEAK, utilisation):,.3g} GPU-hours** on one "
        f"{GPU} ({GPU_PEAK / 1e12:.0f} TFLOP/s dense bf16) at utilisation {utilisation:.3f}."
    )
    return "\n".join(lines)


# --- the method checked on this CPU ---------------------------------------------------------------------


def bench_cpu_fraction(reports: Path = REPORTS) -> float | None:
    """The generator benchmark's CIFAR-16 UNet fp32 training fraction of the fp32 matmul peak, if measured."""
    try:
        bench = json.loads((reports / "bench.json").read_text())
        return float(bench["generator"]["workloads"]["s16"]["fp32"]["flops_fraction"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _time_steps(step, steps: int) -> float:
    step()  # warm-up: first-call allocations
    start = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - start) / steps


def check_cpu(grid: Grid, shape: Shape, batch: int, fraction: float, steps: int = 2) -> list[dict]:
    """Predicted vs measured fp32 CPU seconds of a training step (forward, loss, backward, AdamW) of each network
    the grid trains, at `batch` images: predicted = counted FLOPs / (fp32 matmul peak now x `fraction`)."""
    from study.models.classifier import build_classifier
    from study.models.generator import build_unet

    peak = matmul_flops(torch.float32, clock=time.process_time)
    nets = {_unet_name(g.model): g.model for g in grid.generators.values() if g.pretrained is None}
    rows = []
    for name, model in nets.items():
        _seeded()
        unet = build_unet(model, shape.resolution, shape.channels, shape.classes).train()
        x = torch.randn(batch, shape.channels, shape.resolution, shape.resolution)
        t, y = torch.randint(0, 1000, (batch,)), torch.randint(0, shape.classes + 1, (batch,))
        rows.append(_check_row(name, unet, lambda m, x=x, t=t, y=y: F.mse_loss(m(x, t, y).sample, x), unet_flops(model, shape, True),
                               batch, peak, fraction, steps))  # fmt: skip
    clf = grid.classifier
    _seeded()
    net = build_classifier(clf, shape.classes, shape.channels, shape.resolution).train()
    xc = torch.randint(0, 256, (batch, shape.channels, shape.resolution, shape.resolution), dtype=torch.uint8)
    yc = torch.arange(batch) % shape.classes
    per_image = classifier_flops(clf, shape, shape.classes, True)
    rows.append(
        _check_row(clf.arch, net, lambda m: F.cross_entropy(m(xc), yc), per_image, batch, peak, fraction, steps)
    )
    return rows


def _check_row(name, model, loss_fn, per_image: float, batch: int, peak: float, fraction: float, steps: int) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model).backward()
        optimizer.step()

    measured = _time_steps(step, steps)
    predicted = per_image * batch / (peak * fraction)
    return {"network": name, "batch": batch, "gflop_per_step": per_image * batch / 1e9, "peak_gflops": peak / 1e9,
            "predicted_s": predicted, "measured_s": measured, "ratio": measured / predicted}  # fmt: skip


def check_markdown(rows: list[dict], fraction: float, source: str) -> str:
    lines = [
        f"CPU check (fp32, one thread, process CPU time; achieved fraction {fraction:.3f} from {source}; "
        "shared machine):",
        "| network | batch | GFLOP/step | fp32 peak GFLOP/s | predicted s/step | measured s/step | measured/predicted |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['network']} | {r['batch']} | {r['gflop_per_step']:.1f} | {r['peak_gflops']:.0f} | "
                     f"{r['predicted_s']:.2f} | {r['measured_s']:.2f} | {r['ratio']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench cost", description=__doc__.split("\n")[0])
    p.add_argument("grid", help="grid file (YAML)")
    p.add_argument("--smoke", action="store_true", help="the grid shrunk by its `smoke:` block")
    p.add_argument("--classes", type=int, help="class count (with --test-per-class: no data needed)")
    p.add_argument("--test-per-class", type=int, help="test images per class each classifier scores")
    p.add_argument(
        "--utilisation", type=float, default=UTILISATION, help=f"of the GPU peak (default {UTILISATION:.3f})"
    )
    p.add_argument("--check-cpu", action="store_true", help="predict and measure a few CPU training steps")
    p.add_argument("--check-batch", type=int, default=2, help="images per CPU check step")
    p.add_argument("--cpu-fraction", type=float, help="achieved fraction of the fp32 matmul peak (default: bench.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        grid = load_grid(args.grid, smoke=args.smoke)
        shape = dataset_shape(grid, args.classes, args.test_per_class)
        work = grid_work(grid, shape)
    except StudyInputError as e:
        print(f"error: {args.grid}: {e}", file=sys.stderr)
        return 2
    print(cost_markdown(grid, shape, work, args.utilisation))
    if args.check_cpu:
        fraction, source = args.cpu_fraction, "--cpu-fraction"
        if fraction is None:
            fraction, source = bench_cpu_fraction(), "reports/bench.json (generator s16 fp32)"
        if fraction is None:
            print("error: --check-cpu needs --cpu-fraction (reports/bench.json has no generator s16 figure)",
                  file=sys.stderr)  # fmt: skip
            return 2
        print()
        print(check_markdown(check_cpu(grid, shape, args.check_batch, fraction), fraction, source))
    return 0
