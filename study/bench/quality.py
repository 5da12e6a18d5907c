"""Generator quality per CPU-minute: `python -m study.bench generator --quality CASE [--recipes ...]`.

    python -m study.bench generator --quality cifar16 --recipes today edm-s --minutes 15   # one run per recipe
    python -m study.bench generator --quality cifar16 --report       # tables and plots from every cached run

A run trains one recipe (model, training and sampling spec) on one case (dataset, resolution, training
images) through `train_generator`, and at given CPU-minutes of training (process CPU time, one torch thread,
evaluation excluded) samples `per_class` images per class from the EMA weights with the recipe's sampler and
scores them with the case's judge: a study_cnn trained on the whole training pool (its test accuracy is
reported; it bounds what a generator can score). Quality is
- conditional accuracy: the judge's accuracy on the asked-for classes, and relative to the judge,
  `cond_acc / judge test accuracy`;
- FD: the Frechet distance between the judge's penultimate features of the samples and of as many real test
  images (class-balanced; study.metrics.frechet_distance; biased upward at small n, so compare equal n).
Several EMA decays can be scored in the same run (`--ema`), since they do not change training.
Runs are cached as JSON under `--runs` (named by case, recipe and a key of both), so a report can be built
from runs made at different times, and an interrupted sweep resumes. On a shared machine CPU time still
drifts with other load (caches, memory bandwidth): quote curves as measured on a shared machine.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.data.datasets import Dataset, Split, load_dataset, real_indices
from study.grid import (
    ClassifierSpec,
    DigitsData,
    GeneratorTrainSpec,
    MedmnistData,
    ModelSpec,
    NpzData,
    SampleSpec,
    dataset_label,
    load_grid,
)
from study.keys import key_of
from study.metrics import frechet_distance
from study.models.classifier import (
    evaluate,
    features,
    load_classifier,
    predict_proba,
    save_classifier,
    train_classifier,
)
from study.models.device import resolve_precision
from study.models.generator import Progress, as_generator, train_generator
from study.models.objectives import noise_scheduler
from study.sampling.sample_set import sample_seeds
from study.sampling.sampler import nfe_per_image, sample
from study.store import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
GRIDS = REPO / "grids"
SHARED = Path(os.environ.get("STUDY_SHARED_DATA", REPO.parent / "shared" / "data"))
RUNS = Path(os.environ.get("STUDY_BENCH_RUNS", Path.home() / ".cache" / "study" / "bench-generator"))


# --- cases: a dataset, the generator's training images, a judge ---------------------------------------------


@dataclass(frozen=True)
class Case:
    dataset: object  # a DatasetSpec
    train_on: str  # "pool", or "base:N" (the seed-0 base of N images per class, as a closed-set grid trains on)
    judge: ClassifierSpec  # trained on the whole training pool, scored on test
    per_class: int  # samples per class at every evaluation
    minutes: tuple[float, ...]  # CPU-minutes of training at which to evaluate (the last ends the run)
    today: tuple[str, str]  # (grid file, arm): the recipe the shipped grids use today


def _cifar(resolution: int):
    return NpzData(name="npz", path=str(SHARED / "cifar10" / "cifar10_subset.npz"), resolution=resolution, flip=True)


_JUDGE = ClassifierSpec(arch="study_cnn", width=32, steps=2000, batch_size=128, optimizer="adamw", lr=3e-3,
                        weight_decay=5e-4)  # fmt: skip
CASES: dict[str, Case] = {
    "digits": Case(
        DigitsData(name="digits"),
        "base:20",
        _JUDGE.model_copy(update={"steps": 600}),
        50,
        (0.1, 0.2, 0.3, 0.6),
        ("quickstart.yaml", "closed"),
    ),  # fmt: skip
    "digits16": Case(
        DigitsData(name="digits", resolution=16),
        "base:20",
        _JUDGE.model_copy(update={"steps": 600}),
        50,
        (0.5, 1, 2, 4),
        ("quickstart.yaml", "closed"),
    ),  # fmt: skip
    "cifar16": Case(_cifar(16), "pool", _JUDGE, 30, (1, 2, 4, 8, 15), ("openset.yaml", "open")),
    "cifar32": Case(_cifar(32), "pool", _JUDGE, 50, (4, 8, 15, 30), ("cifar.yaml", "open")),
    "breast28": Case(
        MedmnistData(name="medmnist", flavor="breastmnist", root=str(SHARED / "medmnist")),
        "pool",
        _JUDGE.model_copy(update={"steps": 600}),
        100,
        (1, 2, 4, 8),
        ("medmnist.yaml", "closed"),
    ),  # fmt: skip
}


def training_images(case: Case, ds: Dataset) -> Split:
    if case.train_on == "pool":
        return ds.train
    per_class = int(case.train_on.split(":")[1])
    idx = real_indices(ds, seed=0, per_class=per_class)
    return ds.train.subset(idx)


# --- recipes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    model: ModelSpec
    train: GeneratorTrainSpec
    sample: SampleSpec

    def identity(self) -> dict:
        return {
            k: getattr(self, k).model_dump(mode="json", exclude_defaults=True) for k in ("model", "train", "sample")
        }


_SAMPLE = SampleSpec(sampler="dpmpp", steps=10, guidance=2.0)  # 20 network evaluations per image
_TRAIN = GeneratorTrainSpec(steps=10**6, batch_size=64, lr=1e-3, warmup=50)  # a run ends at its last CPU-minute


def _recipe(preset="s", sample=_SAMPLE, **changes) -> Recipe:
    model_keys = {"prediction", "channels", "layers_per_block", "attention", "dropout"}
    model = ModelSpec(preset=preset, **{k: v for k, v in changes.items() if k in model_keys})
    train = _TRAIN.model_copy(update={k: v for k, v in changes.items() if k not in model_keys})
    return Recipe(model, GeneratorTrainSpec.model_validate(train.model_dump()), sample)


RECIPES: dict[str, Callable[[], Recipe]] = {
    "eps-s": lambda: _recipe(),
    "eps-minsnr-s": lambda: _recipe(snr_gamma=5.0),
    "v-minsnr-s": lambda: _recipe(prediction="v_prediction", snr_gamma=5.0),
    "edm-s": lambda: _recipe(prediction="edm"),
    "edm-xs": lambda: _recipe("xs", prediction="edm"),
    "edm-tiny": lambda: _recipe("tiny", prediction="edm"),
    "eps-tiny": lambda: _recipe("tiny"),
    "edm-tiny-b128": lambda: _recipe("tiny", prediction="edm", batch_size=128),
    "edm-tiny-b128-lr2e-3": lambda: _recipe("tiny", prediction="edm", batch_size=128, lr=2e-3),
    "edm-tiny-b128-lr5e-4": lambda: _recipe("tiny", prediction="edm", batch_size=128, lr=5e-4),
    "edm-tiny-b256": lambda: _recipe("tiny", prediction="edm", batch_size=256),
    "v-minsnr-tiny": lambda: _recipe("tiny", prediction="v_prediction", snr_gamma=5.0),
    "edm-xs-b128": lambda: _recipe("xs", prediction="edm", batch_size=128),
    "edm-s-noattn": lambda: _recipe(prediction="edm", attention=False),
    "edm-s-l1": lambda: _recipe(prediction="edm", layers_per_block=1),
    "edm-s-wide": lambda: _recipe(prediction="edm", channels=[64, 128, 128]),
    "edm-s-lr2e-3": lambda: _recipe(prediction="edm", lr=2e-3),
    "edm-s-lr5e-4": lambda: _recipe(prediction="edm", lr=5e-4),
    "edm-s-b32": lambda: _recipe(prediction="edm", batch_size=32),
    "edm-s-b128": lambda: _recipe(prediction="edm", batch_size=128),
    "edm-s-fp32": lambda: _recipe(prediction="edm", precision="fp32"),
}


# Each case's sweep (what `--quality CASE` runs without --recipes) and its default: the recipe the grids use,
# chosen by these curves (reports/bench.md).
SWEEPS: dict[str, list[str]] = {
    "digits": ["today", "eps-tiny", "edm-tiny", "edm-tiny-b128", "v-minsnr-tiny"],
    "digits16": ["today", "edm-tiny-b128"],
    "cifar16": ["today", "eps-s", "v-minsnr-s", "edm-s", "edm-xs"],
    "cifar32": ["today", "edm-s"],
    "breast28": ["today", "edm-s"],
}
DEFAULTS: dict[str, str] = {"digits": "edm-tiny-b128", "digits16": "edm-tiny-b128", "cifar16": "edm-xs",
                            "cifar32": "edm-s", "breast28": "edm-s"}  # fmt: skip


def today_recipe(case: Case) -> Recipe:
    """The recipe of the shipped grid for this case (its arm's model, train and sample specs)."""
    grid_file, arm = case.today
    spec = load_grid(GRIDS / grid_file).generators[arm]
    return Recipe(spec.model, spec.train.model_copy(update={"steps": 10**6}), spec.sample)


def resolve_recipe(name: str, case: Case) -> Recipe:
    if name == "today":
        return today_recipe(case)
    if name.startswith("grid:"):  # grid:FILE:ARM, e.g. grid:grids/openset.yaml:closed
        _, path, arm = name.split(":")
        spec = load_grid(Path(path)).generators[arm]
        return Recipe(spec.model, spec.train.model_copy(update={"steps": 10**6}), spec.sample)
    if name not in RECIPES:
        raise ValueError(
            f"--recipes: unknown recipe {name!r}; expected today, grid:FILE:ARM or one of {sorted(RECIPES)}"
        )
    return RECIPES[name]()


# --- the judge -------------------------------------------------------------------------------------------


@dataclass
class Judge:
    model: object
    test_acc: float
    num_classes: int
    real_features: np.ndarray  # of `per_class` test images per class (FD reference)
    metrics: dict  # its test metrics and training stats

    def score(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        probs = predict_proba(self.model, images, self.num_classes)
        acc = float((probs.argmax(1) == labels.numpy()).mean())
        fd = frechet_distance(features(self.model, images), self.real_features)
        return {"cond_acc": acc, "cond_acc_rel": acc / self.test_acc, "fd": fd}


def test_subset(ds: Dataset, per_class: int) -> Split:
    """The first `per_class` test images of every class (fewer where a class has fewer)."""
    labels = ds.test.labels.numpy()
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(ds.num_classes)])
    return ds.test.subset(torch.as_tensor(idx))


def load_judge(case: Case, ds: Dataset, runs: Path) -> Judge:
    """The case's judge, trained once on the whole training pool and cached beside the runs."""
    key = key_of({"dataset": case.dataset.model_dump(mode="json"), "judge": case.judge})
    where = runs / "judges" / f"{dataset_label(case.dataset)}-{ds.resolution}px-{key[:12]}"
    if not (where / "metrics.json").exists():
        print(f"[judge] {where.name}: training {case.judge.arch} on {len(ds.train)} images", flush=True)
        model, stats = train_classifier(case.judge, ds.train, ds.num_classes, seed=0, flip=ds.flip, val=ds.val)
        save_classifier(model, case.judge, where, num_classes=ds.num_classes)
        atomic_write_json(where / "metrics.json", {**evaluate(model, ds.test, ds.num_classes), "train": stats})
    metrics = json.loads((where / "metrics.json").read_text())
    model = load_classifier(where, device="cpu")
    real = test_subset(ds, case.per_class)
    return Judge(model, metrics["test_acc"], ds.num_classes, features(model, real.images), metrics)


# --- one run ---------------------------------------------------------------------------------------------


def run_file(case_name: str, recipe_name: str, case: Case, recipe: Recipe, emas: tuple[str, ...], runs: Path):
    key = key_of({"case": case_name, "dataset": case.dataset.model_dump(mode="json"), "train_on": case.train_on,
                  "recipe": recipe.identity(), "minutes": case.minutes, "per_class": case.per_class,
                  "emas": emas, "judge": case.judge})  # fmt: skip
    return runs / f"{case_name}__{recipe_name}__{key[:12]}.json"


def ema_model(spec: str, params):
    """An extra EMA scored beside the recipe's: `none` (the raw weights), `dX` (decay capped at X, diffusers'
    warm-up (1 + t) / (10 + t) below it, as train_generator does) or `pX` (diffusers' power warm-up
    1 - (1 + t)^-X: an average over roughly the last t^X steps)."""
    from diffusers.training_utils import EMAModel

    if spec == "none":
        return EMAModel(params, decay=0.0, foreach=True)
    kind, value = spec[0], float(spec[1:])
    if kind == "d":
        return EMAModel(params, decay=value, foreach=True)
    if kind == "p":
        return EMAModel(params, decay=0.9999, use_ema_warmup=True, power=value, foreach=True)
    raise ValueError(f"--ema: {spec!r} is not none, dDECAY or pPOWER")


def quality_run(case_name: str, recipe_name: str, emas: tuple[str, ...] = (), runs: Path = RUNS, seed: int = 0):
    """Train one recipe on one case, scoring it at the case's CPU-minute marks; cached by case and recipe."""
    case = CASES[case_name]
    recipe = resolve_recipe(recipe_name, case)
    file = run_file(case_name, recipe_name, case, recipe, emas, runs)
    if file.exists():
        return json.loads(file.read_text())
    ds = load_dataset(case.dataset)
    judge = load_judge(case, ds, runs)
    data = training_images(case, ds)
    marks = [60.0 * m for m in case.minutes]
    extra: dict = {}
    points: dict[str, list] = {"ema": [], **{f"ema-{e}": [] for e in emas}}
    labels = torch.arange(ds.num_classes).repeat_interleave(case.per_class)
    seeds = sample_seeds("bench-quality", ds.num_classes, case.per_class)
    twin: dict = {}
    print(
        f"[quality] {case_name} / {recipe_name}: {len(data)} training images, marks {case.minutes} CPU-min", flush=True
    )

    def evaluate_ema(progress: Progress, ema) -> dict:
        if "unet" not in twin:
            twin["unet"] = copy.deepcopy(progress.unet).eval().requires_grad_(False)
        net = twin["unet"]
        net.class_embedding = copy.deepcopy(progress.unet.class_embedding)
        ema.copy_to(list(net.parameters()))
        table = net.class_embedding.weight.detach().clone()
        net.class_embedding = torch.nn.Identity()
        gen = as_generator(net, table, scheduler, recipe.model, recipe.train, ds.resolution, ds.channels, "cpu")
        start = time.process_time()
        images = sample(gen, labels, seeds, recipe.sample, batch_size=256)
        sample_cpu = time.process_time() - start
        return {
            "step": progress.step,
            "cpu_minutes": progress.cpu_seconds / 60,
            "images_seen": progress.step * recipe.train.batch_size,
            **judge.score(images, labels),
            "sample_images_per_cpu_s": len(labels) / sample_cpu,
            "nfe": nfe_per_image(gen, recipe.sample),
            "n": len(labels),
            "precision_sampling": gen.precision.name,
        }

    def monitor(progress: Progress) -> bool:
        if not extra and emas:
            extra.update({f"ema-{e}": ema_model(e, progress.params) for e in emas})
        for ema in extra.values():
            ema.step(progress.params)
        if progress.cpu_seconds < marks[len(points["ema"])]:
            return False
        points["ema"].append(evaluate_ema(progress, progress.ema))
        for name, ema in extra.items():
            points[name].append(evaluate_ema(progress, ema))
        last = points["ema"][-1]
        partial = summary(points, stats=None, cpu_seconds=progress.cpu_seconds, steps=progress.step)
        atomic_write_json(file.with_suffix(".partial.json"), partial)  # an unfinished run still shows its marks
        print(f"[quality] {case_name} / {recipe_name}: {last['cpu_minutes']:.1f} CPU-min step {last['step']} "
              f"cond_acc {last['cond_acc']:.3f} ({last['cond_acc_rel']:.2f} of the judge) FD {last['fd']:.1f}",
              flush=True)  # fmt: skip
        return len(points["ema"]) == len(marks)

    def summary(points: dict, stats: dict | None, cpu_seconds: float, steps: int) -> dict:
        precision = resolve_precision(recipe.train.precision, torch.device("cpu"), key="train.precision")
        return {
            "case": case_name,
            "recipe_name": recipe_name,
            "recipe": recipe.identity(),
            "complete": stats is not None,  # False: written at a mark, the run did not reach its last one
            "train_images": len(data),
            "model_dir": str(model_dir),
            "judge_test_acc": judge.test_acc,
            "points": points,
            "train_stats": stats or precision.stats(),
            "train_images_per_cpu_s": steps * recipe.train.batch_size / cpu_seconds,
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0],
            "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        }

    scheduler = noise_scheduler(recipe.model, recipe.train)
    flip = ds.flip if recipe.train.flip is None else recipe.train.flip
    model_dir = runs / "models" / file.stem  # the EMA model at the last mark (the sampler check loads it)
    stats = train_generator(recipe.model, recipe.train, data.images, data.labels, ds.num_classes, model_dir,
                            seed=seed, flip=flip, device="cpu", progress=False, monitor=monitor)  # fmt: skip
    result = summary(points, stats, stats["cpu_seconds"], stats["steps"])
    atomic_write_json(file, result)
    file.with_suffix(".partial.json").unlink(missing_ok=True)
    return result


def cached_runs(runs: Path, case_name: str | None = None) -> list[dict]:
    """Finished runs, and the marks of unfinished ones (`complete` False) where no finished run replaces them."""
    out = {}
    for file in sorted(runs.glob("*__*__*.json")):
        if file.name.startswith("peer__"):
            continue
        run = json.loads(file.read_text())
        stem = file.name.removesuffix(".json").removesuffix(".partial")
        if (case_name is None or run["case"] == case_name) and (stem not in out or run.get("complete", True)):
            out[stem] = run
    return list(out.values())


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m study.bench.quality")
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--recipes", nargs="+", default=["today"])
    p.add_argument("--ema", nargs="*", default=[], help="extra EMAs scored in the same run: none, dDECAY, pPOWER")
    p.add_argument("--runs", type=Path, default=RUNS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--judge-only", action="store_true", help="train (or check) the case's judge and stop")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.judge_only:
        case = CASES[args.case]
        judge = load_judge(case, load_dataset(case.dataset), args.runs)
        print(json.dumps({"test_acc": judge.test_acc, "train": judge.metrics["train"]}, indent=1))
        return 0
    for name in args.recipes:
        run = quality_run(args.case, name, tuple(args.ema), args.runs)
        print(json.dumps({k: v for k, v in run.items() if k != "points"} | {"last": run["points"]["ema"][-1]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
