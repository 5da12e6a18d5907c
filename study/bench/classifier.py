"""Classifier benchmarks: `python -m study.bench classifier [--reference] [options]`.

    python -m study.bench classifier                 # training images/s and FLOP/s fraction (~3 min on 2 cores)
    python -m study.bench classifier --reference     # MedMNIST v2 and CIFAR-10 reference accuracy (~2-3 h on 2 cores)

Throughput: the CPU default of the quickstart (study_cnn on 8x8 digits) and ResNet-18 with a small stem at
32 px, fp32 and bf16 autocast, end to end through `train_classifier` (batches, augmentation, optimiser). The
FLOPs of one training step (forward + backward) are counted with torch's FlopCounterMode; the fraction is the
achieved FLOP/s over the fastest dense matmul (fp32 or bf16) measured in the same run.

Reference: ResNet-18 (small stem, 28 px) on the full BreastMNIST and PneumoniaMNIST training sets, 3 seeds,
model selection by val AUC as in MedMNIST v2, beside the published numbers (SCIENCE.md section 5); ResNet-18
on the 1000-per-class CIFAR-10 subset. Finished runs are kept under `results/bench/classifier-reference/`, so
an interrupted reference check resumes. Writes reports/reference.md and the "classifier" section of
reports/bench.json (`breastmnist_acc`, `breastmnist_auc`, `pneumoniamnist_acc`, `pneumoniamnist_auc`: seed means).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from study.bench.common import REPORTS, merge_results, peak_flops
from study.data.datasets import Split, load_dataset
from study.grid import ClassifierSpec, DigitsData, MedmnistData, NpzData, load_grid
from study.keys import key_of
from study.models.classifier import build_classifier, evaluate, train_classifier
from study.models.device import resolve_precision
from study.store import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[2]
RUNS = Path("results/bench/classifier-reference")

# The quickstart's classifier is the CPU default the throughput targets refer to: read from its grid.
QUICKSTART_GRID = REPO / "grids" / "quickstart.yaml"
RESNET18_32 = ClassifierSpec(arch="resnet18", steps=4, batch_size=128)

# MedMNIST v2 (Yang et al. 2023), ResNet-18 (28): test ACC and AUC (SCIENCE.md section 5).
PUBLISHED = {"breastmnist": {"acc": 0.863, "auc": 0.901}, "pneumoniamnist": {"acc": 0.854, "auc": 0.944}}


@dataclass(frozen=True)
class Reference:
    name: str
    dataset: object  # a grid `dataset:` spec
    spec: ClassifierSpec
    seeds: tuple[int, ...]
    variant: str = ""  # a second recipe for the same dataset (reported beside the main one, own figure keys)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.variant})" if self.variant else self.name

    @property
    def key(self) -> str:
        return f"{self.name}_{self.variant}" if self.variant else self.name


class Row(NamedTuple):
    """One reference recipe's finished runs."""

    ref: Reference
    acc: np.ndarray
    auc: np.ndarray
    seconds: float  # mean per run
    results: list[dict]


def references(data: Path) -> list[Reference]:
    # BreastMNIST (546 training images) runs the MedMNIST v2 protocol itself: 100 epochs of Adam at lr 1e-3,
    # batch 128, x0.1 at epochs 50 and 75, no augmentation, the checkpoint with the best val AUC over the
    # 100 epoch ends, and a ResNet-18 whose blocks start as in MedMNIST's code (timm zero-initialises each
    # block's last BatchNorm; with that, the same protocol gave ACC 0.833 / AUC 0.881 over 3 seeds). Beside
    # it, the shorter recipe PneumoniaMNIST uses, at 600 steps: how much the recipe moves a 156-image test
    # score. (300 such steps gave ACC 0.840 / AUC 0.876 over 3 seeds.)
    breast = ClassifierSpec(
        arch="resnet18", steps=None, epochs=100, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.0,
        schedule="multistep", augment=False, select="val_auc", val_checks=100,
        model_kwargs={"zero_init_last": False},
    )  # fmt: skip
    # PneumoniaMNIST's 4708 images would take ~3 h per run for 100 epochs on one core: a 400 x 64 AdamW budget
    # with crops + flips (~5 epochs, val AUC at 10 checks) instead, which already beats the published numbers.
    short = ClassifierSpec(
        arch="resnet18", steps=400, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=5e-4, select="val_auc"
    )
    root = str(data / "medmnist")
    breast_data = MedmnistData(name="medmnist", flavor="breastmnist", root=root, flip=True)
    return [
        Reference("breastmnist", breast_data, breast, (0, 1, 2)),
        Reference("breastmnist", breast_data, short.model_copy(update={"steps": 600}), (0, 1, 2), variant="short"),
        Reference(
            "pneumoniamnist",
            MedmnistData(name="medmnist", flavor="pneumoniamnist", root=root, flip=True),
            short,
            (0, 1, 2),
        ),
        Reference(
            "cifar10_subset",
            NpzData(name="npz", path=str(data / "cifar10" / "cifar10_subset.npz"), flip=True),
            # 400 x 128 = 5 epochs of the 10,000-image subset: ~25 minutes on one CPU core.
            ClassifierSpec(
                arch="resnet18", steps=400, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4, warmup=40
            ),
            (0,),
        ),
    ]


# --- throughput ------------------------------------------------------------------------------------------


def step_flops(spec: ClassifierSpec, channels: int, resolution: int, num_classes: int = 10) -> int:
    """FLOPs of one training step (forward + backward) of `spec` at its batch size, counted by torch."""
    model = build_classifier(spec, num_classes, channels, resolution)
    x = torch.randint(0, 256, (spec.batch_size, channels, resolution, resolution), dtype=torch.uint8)
    y = torch.randint(0, num_classes, (spec.batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def throughput(spec: ClassifierSpec, real: Split, num_classes: int, peak: dict) -> dict:
    channels, resolution = real.images.shape[1], real.images.shape[-1]
    train_classifier(spec.model_copy(update={"steps": 2}), real, num_classes, seed=0, flip=False)  # warm up
    _, stats = train_classifier(spec, real, num_classes, seed=0, flip=False, device="cpu")
    flops = step_flops(spec, channels, resolution, num_classes)
    achieved = flops * stats["steps"] / stats["seconds"]
    own = peak["matmul_bf16_flops"] if stats["precision"] in ("bf16", "fp16") else peak["matmul_fp32_flops"]
    return {
        "images_per_s": stats["images_per_s"],
        "step_gflops": flops / 1e9,
        "achieved_gflops_per_s": achieved / 1e9,
        "flops_fraction": achieved / own,  # over the matmul peak of the precision used
        "flops_fraction_of_fastest": achieved / peak["peak_flops"],
        "steps": stats["steps"],
        "batch_size": spec.batch_size,
    }


def run_throughput(steps_resnet: int) -> tuple[dict, str]:
    load_before = os.getloadavg()[0]
    default = load_grid(QUICKSTART_GRID).classifier
    peak = peak_flops()
    digits = load_dataset(DigitsData(name="digits"))
    rng = torch.Generator().manual_seed(0)
    cifar_like = Split(
        torch.randint(0, 256, (1024, 3, 32, 32), generator=rng, dtype=torch.uint8), torch.arange(1024) % 10
    )
    cpu = f"{default.arch}_8px"  # the quickstart's classifier on the 8x8 digits it trains on
    rows = {}
    for name, spec, real in (
        (cpu, default, digits.train),
        ("resnet18_32px", RESNET18_32.model_copy(update={"steps": steps_resnet}), cifar_like),
    ):
        for precision in ("fp32", "bf16"):
            rows[f"{name}_{precision}"] = throughput(spec.model_copy(update={"precision": precision}), real, 10, peak)
    choice = resolve_precision("auto", torch.device("cpu"))  # what the classifiers of a grid train in here
    figures = {
        "precision_auto": choice.name,
        "precision_reason": choice.reason,
        "cpu_default": default.model_dump(mode="json", exclude_unset=True),
        "train_images_per_s": rows[f"{cpu}_fp32"]["images_per_s"],
        "train_flops_fraction": rows[f"{cpu}_fp32"]["flops_fraction"],
        "resnet18_32px_images_per_s": rows["resnet18_32px_fp32"]["images_per_s"],
        "resnet18_32px_flops_fraction": rows["resnet18_32px_fp32"]["flops_fraction"],
        "bf16_over_fp32_cpu_default": rows[f"{cpu}_bf16"]["images_per_s"] / rows[f"{cpu}_fp32"]["images_per_s"],
        "bf16_over_fp32_resnet18": rows["resnet18_32px_bf16"]["images_per_s"]
        / rows["resnet18_32px_fp32"]["images_per_s"],
        **peak,
        "workloads": rows,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    lines = [
        "| workload | precision | batch | images/s | GFLOP/step | achieved GFLOP/s | fraction of its peak | of fastest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        name, precision = key.rsplit("_", 1)
        lines.append(
            f"| {name} | {precision} | {r['batch_size']} | {r['images_per_s']:.0f} | {r['step_gflops']:.2f} | "
            f"{r['achieved_gflops_per_s']:.1f} | {r['flops_fraction']:.3f} | {r['flops_fraction_of_fastest']:.3f} |"
        )
    text = (
        f"Peak dense matmul now: fp32 {peak['matmul_fp32_flops'] / 1e9:.0f}, bf16 {peak['matmul_bf16_flops'] / 1e9:.0f} "
        f"GFLOP/s; torch threads {torch.get_num_threads()}; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
        "(shared machine). CPU default = the classifier of grids/quickstart.yaml: "
        f"`{json.dumps(figures['cpu_default'])}`. `precision: auto` chose **{choice.name}** here: {choice.reason}. "
        "Fractions are over the dense matmul peak of the precision used, and over the fastest.\n\n" + "\n".join(lines)
    )
    return figures, text


# --- reference check -------------------------------------------------------------------------------------


def run_file(ref: Reference, seed: int, runs: Path) -> Path:
    """Where one reference run is kept: named by dataset, seed and a key of the whole recipe."""
    recipe = {"dataset": ref.dataset.model_dump(mode="json"), "classifier": ref.spec, "seed": seed}
    return runs / f"{ref.name}-s{seed}-{key_of(recipe)[:12]}.json"


def reference_run(ref: Reference, seed: int, runs: Path) -> dict:
    """One training run on the full training set, scored on test; cached by recipe so a rerun resumes."""
    file = run_file(ref, seed, runs)
    if file.exists():
        return json.loads(file.read_text())
    ds = load_dataset(ref.dataset)
    budget = f"{ref.spec.steps} steps" if ref.spec.steps else f"{ref.spec.epochs} epochs"
    print(f"[reference] {ref.name} seed {seed}: {budget} of {ref.spec.batch_size}", flush=True)
    model, stats = train_classifier(
        ref.spec, ds.train, ds.num_classes, seed=seed, flip=ds.flip, val=ds.val, progress=True
    )
    result = {**evaluate(model, ds.test, ds.num_classes), **stats, "threads": torch.get_num_threads()}
    atomic_write_json(file, result)
    print(f"[reference] {ref.name} seed {seed}: acc {result['test_acc']:.3f} auc {result['test_auc']:.3f}", flush=True)
    return result


def run_reference(
    data: Path, runs: Path, only: list[str] | None = None, seeds: list[int] | None = None
) -> tuple[dict, str]:
    figures, rows = {}, []
    for ref in references(data):
        if only and ref.name not in only:
            continue
        results = [reference_run(ref, seed, runs) for seed in ref.seeds if seeds is None or seed in seeds]
        acc, auc = np.array([r["test_acc"] for r in results]), np.array([r["test_auc"] for r in results])
        seconds = float(np.mean([r["seconds"] for r in results]))
        figures |= {
            f"{ref.key}_acc": float(acc.mean()),
            f"{ref.key}_auc": float(auc.mean()),
            f"{ref.key}_acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else None,
            f"{ref.key}_auc_std": float(auc.std(ddof=1)) if len(auc) > 1 else None,
            f"{ref.key}_seconds_per_run": seconds,
        }
        figures["reference_threads"] = sorted({*figures.get("reference_threads", []), *(r["threads"] for r in results)})
        rows.append(Row(ref, acc, auc, seconds, results))
    return figures, _reference_markdown(rows)


def _augmentation(ref: Reference) -> str:
    if not ref.spec.augment:
        return "none"
    return "crop + flip" if getattr(ref.dataset, "flip", False) else "crop"


def _pm(values: np.ndarray) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def _reference_markdown(rows: list[Row]) -> str:
    table = [
        "| dataset | seeds | ACC (ours) | ACC (published) | AUC (ours) | AUC (published) | steps x batch | minutes per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ref, acc, auc, seconds, results in rows:
        pub = PUBLISHED.get(ref.name, {})
        table.append(
            f"| {ref.label} | {len(acc)} | {_pm(acc)} | {pub.get('acc', '–')} | {_pm(auc)} | {pub.get('auc', '–')} | "
            f"{results[0]['steps']} x {ref.spec.batch_size} | {seconds / 60:.1f} |"
        )
    recipes = "\n".join(
        f"- {row.ref.label}: `{json.dumps(row.ref.spec.model_dump(mode='json', exclude_defaults=True))}`, "
        f"augmentation: {_augmentation(row.ref)}"
        for row in rows
    )
    pooled = []
    for name in dict.fromkeys(row.ref.name for row in rows):
        same = [row for row in rows if row.ref.name == name]
        if len(same) > 1:  # the recipe spread beside the seed spread
            acc, auc = np.concatenate([r.acc for r in same]), np.concatenate([r.auc for r in same])
            pooled.append(f"{name}, all {len(same)} recipes ({len(acc)} runs): ACC {_pm(acc)}, AUC {_pm(auc)}.")
        if name in PUBLISHED:  # how far apart two single runs on this test split may land by chance
            p, n = PUBLISHED[name]["acc"], same[0].results[0]["n_test"]
            pooled.append(
                f"{name}: {n} test images, so one run's ACC has a binomial standard error of "
                f"{100 * math.sqrt(p * (1 - p) / n):.1f} points at the published {p}."
            )
    return (
        "\n".join(table)
        + ("\n\n" + " ".join(pooled) if pooled else "")
        + "\n\nRecipes (everything else at the ClassifierSpec defaults):\n\n"
        + recipes
    )


def _write_reference_report(figures: dict, table: str, reports: Path) -> None:
    atomic_write_text(
        reports / "reference.md",
        "# Classifier reference check\n\n"
        "Written by `python -m study.bench classifier --reference`. ResNet-18 (timm) with the small-image stem "
        "(3x3 stride-1 first conv, no max-pool) trained from scratch on the full training split; test ACC and AUC "
        "(binary AUC of the positive class) as mean ± sample std over seeds, beside the MedMNIST v2 ResNet-18 (28) "
        "numbers (Yang et al., Scientific Data 2023; SCIENCE.md section 5). MedMNIST runs keep the checkpoint with "
        "the best val AUC, as MedMNIST v2 does. BreastMNIST follows the published protocol (100 epochs of Adam, "
        "batch 128, lr x0.1 at epochs 50 and 75, no augmentation, val AUC at every epoch end, and the residual "
        "blocks initialised as in MedMNIST's ResNet rather than timm's zero-init of each block's last BatchNorm); "
        "the other rows run "
        "fixed step budgets much shorter than 100 epochs (recipes below), to fit a shared 2-core CPU. "
        "Minutes per run are wall time on "
        f"that shared machine (torch threads per run: {', '.join(map(str, figures['reference_threads']))}).\n\n{table}\n",
    )


# --- entry point -----------------------------------------------------------------------------------------


def _merge(mode: str, figures: dict, markdown: str, reports: Path) -> None:
    """Merge one mode's figures ("throughput" or "reference") into the "classifier" section: the other mode's
    figures stay, this mode's earlier ones are replaced (a renamed figure does not linger)."""
    path = reports / "bench.json"
    old = json.loads(path.read_text()).get("classifier", {}) if path.exists() else {}
    modes = {**old.get("modes", {}), mode: sorted(figures)}
    kept = {k: old[k] for other, keys in modes.items() if other != mode for k in keys if k in old}
    parts = {**old.get("markdown_parts", {}), mode: markdown}
    text = "## classifier\n\n" + "\n\n".join(parts[k] for k in ("throughput", "reference") if k in parts)
    merge_results("classifier", {**kept, **figures, "modes": modes, "markdown_parts": parts}, text, reports)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench classifier", description=__doc__.split("\n")[0])
    p.add_argument("--reference", action="store_true", help="the MedMNIST v2 / CIFAR-10 reference check (hours)")
    p.add_argument(
        "--data", type=Path, default=Path(os.environ.get("STUDY_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    p.add_argument("--runs", type=Path, default=RUNS, help="where finished reference runs are kept (resume)")
    p.add_argument("--reports", type=Path, default=REPORTS)
    p.add_argument("--resnet-steps", type=int, default=6, help="timed ResNet-18 steps per precision")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--only", nargs="+", help="reference datasets to run (e.g. to fill the run cache in parallel)")
    p.add_argument("--seeds", nargs="+", type=int, help="reference seeds to run (with --only: fill the cache)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.reference:
        if not (args.data / "medmnist").is_dir():
            print(
                f"error: no MedMNIST data in {args.data / 'medmnist'} (set --data or STUDY_SHARED_DATA)",
                file=sys.stderr,
            )
            return 2
        figures, table = run_reference(args.data, args.runs, args.only, args.seeds)
        if args.only or args.seeds:  # a partial check fills the run cache only; the full one writes the reports
            print(table)
            return 0
        _write_reference_report(figures, table, args.reports)
        _merge("reference", figures, "### Reference check\n\n" + table, args.reports)
    else:
        figures, text = run_throughput(args.resnet_steps)
        _merge("throughput", figures, "### Training throughput\n\n" + text, args.reports)
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=1))
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
