"""A quick calibration of a grid's costs on this machine: build small versions of its own artifacts, time each in
CPU seconds at one torch thread, and fit overhead + rate x work per workload (study.advise.cost).

    rates = calibrate(grid)          # ~20-90 s for CPU-sized grids; needs torch
    save_rates(rates, grid)          # study.advise.cost: kept per grid and read back torch-free

Two shrunken variants of the grid run in a temporary store, through the runner's own stage functions
(study.runner.stages.build_node): the first seed, the smallest base, no extra real sizes, every arm but pretrained
ones (their cost is the pipeline's, not measured here), and budgets a small (A) and three times larger (B) fraction
of the grid's: generator steps, classifier steps and synthetic volume. Each artifact's CPU time
(time.process_time, one torch thread, so a loaded machine slows the wall clock but not the figure) is one point of
its workload's line. Imports, the dataset's decoding and every stage's first run (~2 s of one-off set-up in a first
generator's training) are paid before any timing, by an untimed pass of variant A in its own store, so they do
not inflate the first point (which, under the larger B point, made a generator's fitted rate negative).
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from study.advise.cost import Rate, Rates, work, workload
from study.grid import Grid, expand
from study.runner.plan import make_plan

SCALES = {"A": 1, "B": 3}  # budget multipliers of the two variants


def _budgets(grid: Grid, scale: int) -> dict:
    clf_steps = int(np.clip(round(0.1 * (grid.classifier.steps or 300)), 5, 30)) * scale
    gen_steps = {
        name: int(np.clip(round(0.05 * arm.train.steps), 10, 50)) * scale for name, arm in grid.generators.items()
    }
    volume = int(min(grid.synthetic.volume or [5]) if grid.synthetic else 5) * scale
    return {"classifier": clf_steps, "generator": gen_steps, "volume": volume}


def variant(grid: Grid, scale: int) -> Grid:
    """The grid shrunk for calibration (see the module docstring)."""
    b = _budgets(grid, scale)
    clf = grid.classifier.model_copy(update={"steps": b["classifier"], "epochs": None,
                                             "warmup": min(grid.classifier.warmup, b["classifier"] // 2),
                                             "val_checks": min(grid.classifier.val_checks, b["classifier"])})  # fmt: skip
    gens = {}
    for name, arm in grid.generators.items():
        if arm.pretrained is not None:
            continue
        steps = b["generator"][name]
        train = arm.train.model_copy(update={"steps": steps, "warmup": min(arm.train.warmup, steps // 2)})
        gens[name] = arm.model_copy(update={"train": train})
    synthetic = grid.synthetic.model_copy(update={"volume": [b["volume"]], "ratio": None}) if grid.synthetic else None
    real = grid.real.model_copy(update={"base": [min(grid.real.base)], "extra": []})
    return grid.model_copy(update={"seeds": grid.seeds[:1], "real": real, "synthetic": synthetic,
                                   "generators": gens, "classifier": clf, "name": f"{grid.name}-calibration"})  # fmt: skip


def calibrate(grid: Grid, log=print) -> Rates:
    """Time the two variants' artifacts and fit each workload's (overhead, rate)."""
    import torch

    from study.runner.stages import Context, build_node

    torch.set_num_threads(1)
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    facts = {}
    with tempfile.TemporaryDirectory(prefix="study-calibration-") as tmp:
        for label, scale in (("warm-up", SCALES["A"]), *SCALES.items()):
            g = variant(grid, scale)
            plan = make_plan(g, expand(g))
            ctx = Context(g, str(Path(tmp) / f"store-{label}"), "cpu")
            if not facts:
                facts = _warm_up(ctx)
            for node in plan.nodes.values():
                start = time.process_time()
                outcome = build_node(node, ctx, threads=1)
                seconds = time.process_time() - start
                if outcome.status == "failed":
                    raise RuntimeError(f"calibration: {node.stage} {node.art.slug} failed: {outcome.error}")
                if label == "warm-up":
                    continue
                units = work(g, node, facts["n_classes"], facts["pool"])
                points[workload(g, node)].append((units, seconds))
                log(f"calibration {label}: {node.stage:<10} {node.art.slug:<44} {units:>10.0f} units {seconds:6.2f} s")
    by_key = {key: _line(pts) for key, pts in points.items()}
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    source = f"calibration {when} UTC on {platform.machine()} ({platform.processor() or 'cpu'}), 1 torch thread"
    return Rates(by_key, facts["n_classes"], facts["pool"], source, {"grid": grid.name})


def _warm_up(ctx) -> dict:
    """Pay imports, the dataset's decoding and first-model costs before timing; return the dataset's facts."""
    import study.models.classifier  # noqa: F401
    import study.models.generator  # noqa: F401
    import study.sampling.sampler  # noqa: F401

    ds = ctx.dataset()
    return {"n_classes": int(ds.num_classes), "pool": int(len(ds.train.labels))}


def _line(points: list[tuple[float, float]]) -> Rate:
    """Least-squares overhead + rate x units through the points (a single work size: rate only), both >= 0."""
    x, y = np.array(points, float).T
    if np.ptp(x) == 0:
        return Rate(0.0, float(y.mean() / x.mean()) if x.mean() > 0 else 0.0, len(x))
    slope, intercept = np.polyfit(x, y, 1)
    if intercept < 0:
        return Rate(0.0, float((x @ y) / (x @ x)), len(x))
    if slope < 0:
        return Rate(float(y.mean()), 0.0, len(x))
    return Rate(float(intercept), float(slope), len(x))
