"""Run a grid: `python -m study.run GRID.yaml [options]`.

    python -m study.run grids/quickstart.yaml --dry-run     # the plan: cells, artifacts cached / to compute
    python -m study.run grids/quickstart.yaml               # compute every cell -> results/quickstart/cells.csv
    python -m study.run grids/quickstart.yaml --jobs 2      # two local worker processes
    python -m study.run grids/cifar.yaml --smoke            # the grid shrunk by its `smoke:` block
    python -m study.run grids/cifar.yaml --backend dask --address tcp://scheduler:8786
    python -m study.run grids/cifar.yaml --shard 3/8        # one of 8 array jobs sharing --results

Every artifact is cached by content under RESULTS/store: stopping (Ctrl-C, SIGKILL) and running the same
command again finishes the grid with the same numbers; a second identical run computes nothing.
Exit codes: 0 all cells done; 1 some cells failed (the others are done and kept); 2 bad input;
130 interrupted. Bad input is a `study.errors.StudyInputError`; any other exception is a bug and ends the
run with its traceback (inside a cell: the cell fails, exit 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from study.errors import BackendError, StudyInputError
from study.grid import expand, load_grid
from study.grid.schema import check_device
from study.runner.collect import write_table
from study.runner.integrity import check_store
from study.runner.plan import Plan, describe, make_plan
from study.runner.preflight import BadInput, check_results_dir
from study.store import DiskFullError, Store

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m study.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("grid", help="grid file (YAML)")
    p.add_argument("--smoke", action="store_true", help="deep-merge the grid's `smoke:` block (a tiny run)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and compute nothing")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers (torch threads are split among them)")
    p.add_argument("--backend", choices=("loky", "dask", "ray"), default="loky", help="where workers run")
    p.add_argument("--address", help="scheduler address for --backend dask|ray (none: start a local cluster)")
    p.add_argument("--shard", help="I/N: compute shard I (0-based) of N; shards may share --results")
    p.add_argument("--results", default="results", help="results root: <name>/ tables and store/ artifacts")
    p.add_argument("--force", action="store_true", help="recompute this grid's artifacts even when cached")
    p.add_argument("--device", help="override the grid's device: auto | cpu | cuda | cuda:N")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split("/")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        index, count = int(parts[0]), int(parts[1])
        if 0 <= index < count:
            return index, count
    raise BadInput(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")


def _device(text: str) -> str:
    try:
        return check_device(text)
    except ValueError as exc:
        raise BadInput(f"--device {text!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        grid = load_grid(args.grid, smoke=args.smoke)
        if args.device:
            grid = grid.model_copy(update={"device": _device(args.device)})
        shard = parse_shard(args.shard)
        if args.jobs < 1:
            raise BadInput(f"--jobs {args.jobs}: expected a positive number of workers")
        if args.backend == "ray" and args.jobs < 2:  # joblib's ray backend runs a 1-job call in the caller
            raise BadInput(
                f"--backend ray --jobs {args.jobs}: with one job joblib runs every stage in this process, not on "
                "the Ray cluster; give --jobs N >= 2 (the stages run at once)"
            )
        plan = make_plan(grid, expand(grid))  # reads pretrained models' local directories (their keys)
    except StudyInputError as exc:  # only input errors: a bug elsewhere propagates with its traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        check_results_dir(args.results, grid.name)  # before any work, in a dry run too
    except StudyInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    store = Store(Path(args.results) / "store")
    results_dir = Path(args.results) / grid.name
    if args.dry_run:
        print(describe(plan, store))
        return _preflight_only(plan, store, args)

    from study.runner.execute import shard_nodes

    nodes = shard_nodes(plan, shard)
    for line in check_store(plan, store, nodes):  # damaged artifacts and their dependants are rebuilt
        print(line, file=sys.stderr)
    print(describe(plan, store))
    todo = nodes if args.force else [n for n in nodes if not store.is_done(n.art)]
    if not todo:
        df = write_table(plan, store, results_dir)
        print(f"nothing to compute: all {len(nodes)} artifacts are cached; table: {results_dir / 'cells.csv'}")
        return _finish(df, len(plan.cells))
    try:
        return _compute(plan, todo, store, results_dir, args)
    except DiskFullError as exc:  # outside an artifact (the decode cache, the table): the run cannot go on
        print(f"error: {exc}\nfinished artifacts are kept: free space and run the same command", file=sys.stderr)
        return EXIT_FAILED


def _context(plan: Plan, store: Store, args):
    from study.runner.stages import Context

    return Context(
        plan.grid, str(store.root), plan.grid.device, progress=not args.quiet and args.jobs == 1, force=args.force
    )


def _preflight_only(plan: Plan, store: Store, args) -> int:
    """--dry-run: the real run's input checks (same messages, exit 2), nothing computed."""
    from study.runner.preflight import check_inputs

    try:
        n_classes = check_inputs(plan, _context(plan, store, args))
    except StudyInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"pre-flight: inputs checked ({n_classes} classes); a real run starts computing from here")
    return EXIT_OK


def _compute(plan: Plan, todo, store: Store, results_dir: Path, args) -> int:
    from tqdm import tqdm

    from study.runner.execute import run_nodes
    from study.runner.preflight import check_inputs

    ctx = _context(plan, store, args)
    try:
        n_classes = check_inputs(plan, ctx)
    except StudyInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts: dict[str, Counter] = defaultdict(Counter)
    seconds: dict[str, float] = defaultdict(float)
    bar = tqdm(total=len(todo), unit="artifact", disable=args.quiet, dynamic_ncols=True, position=0)
    last_write = [0.0]

    def on_outcome(node, outcome):
        counts[node.stage][outcome.status] += 1
        seconds[node.stage] += outcome.seconds
        bar.update(1)
        bar.set_description(f"{node.stage} {node.art.slug}"[:48])
        if outcome.status == "failed":
            tqdm.write(f"FAILED {node.stage} {node.art.slug}: {outcome.error}")
        if node.stage == "classifier" and time.monotonic() - last_write[0] > 2.0:  # cells as they finish
            last_write[0] = time.monotonic()
            try:
                write_table(plan, store, results_dir, n_classes)
            except DiskFullError as exc:  # the artifacts go on; the table is written again at the end
                tqdm.write(f"cannot update the table: {exc}")

    start = time.perf_counter()
    try:
        run_nodes(plan, todo, ctx, jobs=args.jobs, backend=args.backend, address=args.address, on_outcome=on_outcome)
    except KeyboardInterrupt:
        bar.close()
        write_table(plan, store, results_dir, n_classes)
        print("\ninterrupted: finished artifacts are kept; run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BackendError as exc:  # a backend that cannot start (missing extra, unreachable scheduler)
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bar.close()
    df = write_table(plan, store, results_dir, n_classes)
    print(f"computed in {time.perf_counter() - start:.1f} s:")
    for stage, c in counts.items():
        print(
            f"  {stage:<12} built {c['built']:>4}  cached {c['cached']:>4}  failed {c['failed']:>4}"
            f"  compute {seconds[stage]:8.1f} s"
        )
    print(f"table: {results_dir / 'cells.csv'}")
    return _finish(df, len(plan.cells))


def _finish(df, n_cells: int) -> int:
    done, failed = int((df["status"] == "done").sum()), df[df["status"] == "failed"]
    print(f"cells: {done} done, {len(failed)} failed, {n_cells - done - len(failed)} not run (of {n_cells})")
    for _, row in failed.head(10).iterrows():
        print(f"  failed {row['cell']}: {row['error']}")
    if len(failed) > 10:
        print(f"  ... and {len(failed) - 10} more (see cells.csv)")
    return EXIT_FAILED if len(failed) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
