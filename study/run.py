"""Run a grid: `python -m study.run GRID.yaml [options]`.

    python -m study.run grids/quickstart.yaml --dry-run       # the plan: cells, artifacts cached / to compute
    python -m study.run grids/quickstart.yaml                 # compute every cell, write results/<name>/cells.csv
    python -m study.run grids/cifar.yaml --smoke              # the grid shrunk by its `smoke:` block

Exit codes: 0 all cells done; 1 some cells failed (the others are done and kept); 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study.config import GridError, expand, load_grid
from study.plan import describe, make_plan
from study.store import Store

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m study.run",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", help="grid file (YAML)")
    p.add_argument("--smoke", action="store_true", help="deep-merge the grid's `smoke:` block (a tiny run)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and compute nothing")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers (torch threads are split among them)")
    p.add_argument("--backend", choices=("loky", "dask", "ray"), default="loky")
    p.add_argument("--address", help="scheduler address for --backend dask|ray (none: start a local cluster)")
    p.add_argument("--shard", help="I/N: run only shard I of N (0-based); shards share --results safely")
    p.add_argument("--results", default="results", help="results root: <name>/ tables and store/ artifacts")
    p.add_argument("--force", action="store_true", help="recompute this grid's cells even when cached")
    p.add_argument("--device", help="override the grid's device (auto | cpu | cuda | cuda:N)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        grid = load_grid(args.grid, smoke=args.smoke)
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    plan = make_plan(grid, expand(grid))
    store = Store(Path(args.results) / "store")
    print(describe(plan, store))
    if args.dry_run:
        return EXIT_OK
    print("error: execution is not available in this version; use --dry-run", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
