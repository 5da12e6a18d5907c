"""Runner benchmark: the quickstart from an empty cache, a fully cached rerun, and compute reuse.

    python -m study.bench runner [--grid grids/quickstart.yaml] [--jobs 1] [--results DIR]

With `--results DIR` (empty or absent) the timed run's results are kept there, so the same run can feed
`python -m study.report` (the committed reports/quickstart/ is made that way); by default a temporary
directory is used and removed.

Figures (reports/bench.json, section "runner"): `quickstart_s` (wall time from an empty store, dataset
decode included), `cached_rerun_s` (the same command again: plan, check, rewrite the table),
`reuse_ratio` (models a naive per-cell run would train, one generator per synthetic cell plus one
classifier per cell, over the models the content-addressed plan trains).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from study.bench.common import merge_results
from study.grid import expand, load_grid
from study.runner.plan import make_plan


def timed_run(grid: str, results: Path, jobs: int) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "study.run", grid, "--results", str(results), "--jobs", str(jobs), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def reuse_ratio(grid_path: str) -> tuple[float, int, int]:
    grid = load_grid(grid_path)
    cells = expand(grid)
    plan = make_plan(grid, cells)
    naive = len(cells) + sum(c.arm_kind in ("closed", "open") for c in cells)
    trained = sum(n.stage in ("generator", "classifier", "reference") for n in plan.nodes.values())
    return naive / trained, naive, trained


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench runner", description=__doc__.split("\n")[0])
    p.add_argument("--grid", default="grids/quickstart.yaml")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--results", type=Path, help="keep the run's results here (must be empty or absent)")
    args = p.parse_args(argv)
    if args.results is not None and args.results.exists() and any(args.results.iterdir()):
        print(f"error: --results {args.results} is not empty: the cold run needs an empty cache", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        results = args.results or Path(tmp) / "results"
        cold = timed_run(args.grid, results, args.jobs)
        warm = timed_run(args.grid, results, args.jobs)
    ratio, naive, trained = reuse_ratio(args.grid)
    figures = {
        "grid": args.grid,
        "jobs": args.jobs,
        "quickstart_s": round(cold, 1),
        "cached_rerun_s": round(warm, 2),
        "reuse_ratio": round(ratio, 2),
        "naive_models": naive,
        "trained_models": trained,
    }
    md = (
        f"## runner\n\n`python -m study.run {args.grid} --jobs {args.jobs}` from an empty cache: **{cold:.0f} s**; "
        f"the same command again (everything cached): **{warm:.1f} s**. Reuse: a naive per-cell run would train "
        f"{naive} models (a generator per synthetic cell and a classifier per cell); the plan trains {trained} "
        f"(ratio **{ratio:.2f}**)."
    )
    merge_results("runner", figures, md)
    print(md)
    return 0
