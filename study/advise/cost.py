"""What a grid costs on this machine before it runs: CPU seconds per artifact from measured rates, summed over the
artifacts the plan still has to compute, and a wall-time estimate for N local workers.

    rates = load_rates(path)                      # a saved calibration (study.advise.calibrate) or bench figures
    est = estimate(plan, rates, todo, jobs=2)     # est.cpu_seconds, est.wall_seconds, est.by_stage
    print(est.describe())

The model: an artifact costs overhead + rate x work (CPU seconds at one torch thread, the runner's setting for
`--jobs` = cores), with work in units the cost scales with and one (overhead, rate) per workload (what the rate
depends on: the model and its input size; never the data's content):
    generator   training images (steps x batch)                              per generator model + training spec
    samples     network evaluations x images (NFE per image x volume x K)    per generator model
    classifier  training images (steps x batch, or epochs x its images)      per classifier spec (the reference too)
    diagnostics images compared ((volume + base) x K per sample set)         per generator model + diagnostics spec
Wall time: the plan's waves (an artifact waits for its parents) run one after another; inside a wave the work is
shared by min(jobs, cores) workers, and no wave is shorter than its longest artifact. Process start-up and the
table writes are left out (seconds). Never imports torch (the rates come from a file).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from study.grid import Grid, expand
from study.keys import canonical_json, key_of
from study.paths import default_cache_dir
from study.runner.plan import Node, Plan, sample_nfe_per_image
from study.sampling import cost
from study.store import atomic_write_text

STAGES = ("reference", "generator", "samples", "classifier", "diagnostics")


class CostError(ValueError):
    """No measured rate for a workload of the grid: names it and how to measure it."""


@dataclass(frozen=True)
class Rate:
    overhead: float  # CPU seconds per artifact
    per_unit: float  # CPU seconds per unit of work
    points: int = 0  # calibration artifacts it was fitted on


@dataclass(frozen=True)
class Rates:
    """Measured rates by workload key, with the dataset facts the work counts need."""

    by_key: dict[str, Rate]
    n_classes: int
    pool: int  # training images of the dataset (the reference classifier's and epochs budgets)
    source: str  # e.g. "calibration 2026-11-29 on x86_64, 1 thread"
    meta: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"by_key": {k: vars(r) for k, r in self.by_key.items()}, "n_classes": self.n_classes,
                           "pool": self.pool, "source": self.source, "meta": self.meta}, indent=1)  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Rates:
        d = json.loads(text)
        return cls({k: Rate(**r) for k, r in d["by_key"].items()}, d["n_classes"], d["pool"], d["source"], d["meta"])


def workload(grid: Grid, node: Node) -> str:
    """The workload key of a node: what its per-unit cost depends on."""
    data = {"dataset": canonical_json(grid.dataset.model_dump(mode="json", exclude={"root", "path"}))}
    if node.stage in ("classifier", "reference"):
        spec = grid.classifier.model_dump(mode="json", exclude={"steps", "epochs", "mix", "eval_batch_size"})
        return "classifier:" + key_of({**data, "classifier": spec})[:16]
    arm = grid.generators[node.arm]
    model = {**data, "model": arm.model.model_dump(mode="json")}
    if node.stage == "diagnostics":
        return "diagnostics:" + key_of({**model, "diagnostics": grid.diagnostics.model_dump(mode="json")})[:16]
    if node.stage == "generator":
        train = arm.train.model_dump(mode="json", exclude={"steps", "checkpoint_every", "warmup"})
        return "generator:" + key_of({**model, "train": train})[:16]
    return "samples:" + key_of(model)[:16]


def work(grid: Grid, node: Node, n_classes: int, pool: int) -> float:
    """Units of work of a node (see the module docstring)."""
    if node.stage in ("classifier", "reference"):
        clf = grid.classifier
        if clf.steps:
            return float(clf.steps * clf.batch_size)
        images = pool if node.stage == "reference" else ((node.real_per_class or 0) + node.volume_per_class) * n_classes
        return float(clf.epochs * images)
    if node.stage == "diagnostics":
        return float((node.volume_per_class + (node.base_per_class or 0)) * n_classes)
    arm = grid.generators[node.arm]
    if node.stage == "generator":
        return 0.0 if arm.pretrained is not None else float(arm.train.steps * arm.train.batch_size)
    per_image = sample_nfe_per_image(grid, node)
    return float(per_image * (node.volume_per_class * n_classes + cost.search_images(arm.sample)))


@dataclass(frozen=True)
class Estimate:
    cpu_by_stage: dict[str, float]
    artifacts_by_stage: dict[str, int]
    wall_seconds: float
    jobs: int
    cores: int
    source: str
    unmeasured: dict[str, int] = field(default_factory=dict)  # stage -> artifacts left out (no measured rate)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_stage.values())

    def describe(self) -> str:
        parts = ", ".join(f"{s} {self.artifacts_by_stage[s]} x -> {self.cpu_by_stage[s]:.0f} s"
                          for s in STAGES if self.artifacts_by_stage.get(s))  # fmt: skip
        missing = ", ".join(f"{s} {n} x" for s, n in self.unmeasured.items())
        return (f"estimated cost: {self.cpu_seconds:.0f} CPU s at one thread ({parts}); wall time with --jobs "
                f"{self.jobs} on {self.cores} cores of an otherwise idle machine: ~{self.wall_seconds / 60:.1f} min "
                f"(rates: {self.source})" + (f"; not included, no measured rate: {missing} (--calibrate measures "
                                             "them)" if missing else ""))  # fmt: skip


def node_seconds(grid: Grid, node: Node, rates: Rates) -> float:
    key = workload(grid, node)
    if node.stage == "generator" and grid.generators[node.arm].pretrained is not None:
        return 0.0
    rate = rates.by_key.get(key)
    if rate is None:
        raise CostError(f"no measured rate for the {node.stage} workload of {node.art.slug} ({key}); measure it with "
                        "`python -m study.advise GRID --calibrate`")  # fmt: skip
    return rate.overhead + rate.per_unit * work(grid, node, rates.n_classes, rates.pool)


def estimate(
    plan: Plan, rates: Rates, todo: list[Node], jobs: int = 1, cores: int = 1, strict: bool = True
) -> Estimate:
    """CPU seconds per stage of the `todo` nodes and the wall time of running them wave by wave. A workload without
    a measured rate raises CostError, or with `strict=False` is left out and counted in `unmeasured`."""
    unmeasured: dict[str, int] = defaultdict(int)
    if not strict:
        for n in todo:
            if workload(plan.grid, n) not in rates.by_key and not _pretrained(plan.grid, n):
                unmeasured[n.stage] += 1
        todo = [n for n in todo if workload(plan.grid, n) in rates.by_key or _pretrained(plan.grid, n)]
    seconds = {n.key: node_seconds(plan.grid, n, rates) for n in todo}
    by_stage, count = defaultdict(float), defaultdict(int)
    for n in todo:
        by_stage[n.stage] += seconds[n.key]
        count[n.stage] += 1
    depth: dict[str, int] = {}
    for node in plan.nodes.values():  # parents come first in plan order
        depth[node.key] = 1 + max((depth[p] for p in node.parents), default=-1)
    waves = defaultdict(list)
    for n in todo:
        waves[depth[n.key]].append(seconds[n.key])
    workers = max(1, min(jobs, cores))
    wall = sum(max(sum(w) / workers, max(w)) for w in waves.values())
    return Estimate(dict(by_stage), dict(count), wall, jobs, cores, rates.source, dict(unmeasured))


def _pretrained(grid: Grid, node: Node) -> bool:
    return node.stage == "generator" and grid.generators[node.arm].pretrained is not None


def bench_rates(grid: Grid, bench: dict, n_classes: int, pool: int) -> Rates:
    """Rates from reports/bench.json for the workloads it measured: the CPU default classifier
    (`classifier.train_images_per_s`), and per generator arm whose model and training spec (all but the step
    count) are a recipe of `generator.quality[<dataset>]`, its training images per CPU second and the median
    sampling images per CPU second over its points (per network evaluation: / nfe). Throughput only, no
    per-artifact overhead; other workloads (e.g. the sample-set diagnostics) stay unmeasured (CostError on use,
    or left out with estimate(..., strict=False))."""
    by_key = {}
    clf, gen = bench.get("classifier", {}), bench.get("generator", {})
    default = clf.get("cpu_default")
    mine = grid.classifier.model_dump(mode="json", exclude_unset=True)
    if default and {k: v for k, v in mine.items() if k not in ("mix",)} == default and clf.get("train_images_per_s"):
        node = Node(art=_Fake("reference"))
        by_key[workload(grid, node)] = Rate(0.0, 1.0 / clf["train_images_per_s"])
    recipes = gen.get("quality", {}).get(grid.dataset.name, {})
    for name, arm in grid.generators.items():
        if arm.pretrained is not None:
            continue
        for measured in recipes.values():
            if not _same_recipe(arm, measured.get("recipe", {})):
                continue
            if measured.get("train_images_per_cpu_s"):
                rate = Rate(0.0, 1.0 / measured["train_images_per_cpu_s"])
                by_key[workload(grid, Node(art=_Fake("generator"), arm=name))] = rate
            points = [p for p in measured.get("points", {}).get("ema", []) if p.get("sample_images_per_cpu_s")]
            if points:
                per_nfe = sorted(p["sample_images_per_cpu_s"] * p["nfe"] for p in points)[len(points) // 2]
                by_key[workload(grid, Node(art=_Fake("samples"), arm=name))] = Rate(0.0, 1.0 / per_nfe)
            break
    return Rates(by_key, n_classes, pool, "reports/bench.json (throughput, no per-artifact overhead)")


def _same_recipe(arm, recipe: dict) -> bool:
    """Whether an arm's model and training spec (but its step count) are those of a bench recipe (overrides of the
    schema's defaults)."""
    try:
        model = type(arm.model).model_validate(recipe.get("model", {}))
        train = type(arm.train).model_validate(recipe.get("train", {}))
    except ValueError:
        return False
    return arm.model.model_dump(mode="json") == model.model_dump(mode="json") and _but_steps(arm.train) == _but_steps(
        train
    )


def _but_steps(train) -> dict:
    return train.model_dump(mode="json", exclude={"steps", "checkpoint_every"})


@dataclass(frozen=True)
class _Fake:
    """Stands in for an Artifact where only the stage matters (workload keys of bench figures)."""

    stage: str
    slug: str = ""
    key: str = ""


def rates_path(grid: Grid) -> Path:
    """Where a grid's calibration is kept: named by the grid and a hash of its workloads (not its sizes), beside the
    decoded-data cache ($STUDY_CACHE/../calibration/)."""
    from study.runner.plan import make_plan

    keys = sorted({workload(grid, n) for n in make_plan(grid, expand(grid)).nodes.values()})
    return default_cache_dir().parent / "calibration" / f"{grid.name}-{key_of(keys)[:12]}.json"


def save_rates(rates: Rates, grid: Grid) -> Path:
    path = rates_path(grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, rates.to_json())
    return path


def load_rates(path: Path) -> Rates | None:
    return Rates.from_json(path.read_text()) if path.exists() else None
