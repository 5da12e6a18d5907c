"""`python -m study.advise RESULTS_DIR | GRID [query] [options]`: questions asked forward, from a fitted study.

    python -m study.advise results/quickstart                          # verdicts and a planning table per arm
    python -m study.advise results/quickstart --base 50 --match-real 30    # synthetic per class worth 30 more real
    python -m study.advise results/quickstart --base 50 --target-acc 0.9   # synthetic per class for 90% accuracy
    python -m study.advise results/quickstart --base 50 --volume 200 --json  # accuracy and n_eff at 200 per class
    python -m study.advise grids/quickstart.yaml --jobs 2              # + what the grid costs before it runs
    python -m study.advise grids/quickstart.yaml --calibrate           # measure this grid's costs first (torch)
    python -m study.advise results/quickstart --half-width 0.05 --beta 0.02   # seeds needed (study.analysis.power)

Answers come from the fitted surfaces (study.analysis.surface): per arm, the one of three (one rate, a rate per base,
the paper's closed form) with the lowest QAIC; intervals hold parameter uncertainty and a new generator's spread;
`extrapolated` marks a query outside the measured bases, volumes or real sizes (its interval is then the envelope
of the three surfaces). The intervals come from the random-effect fits; for an arm whose beta interval is a two-stage
one (few generators, or generators that differ) they are widened, per side, to reach it (study.analysis.surface;
`interval_method` names which, the note and the arm's line say by how much).
`--json` prints one object per arm: {"arm", "query", "value", "lo", "hi", "extrapolated",
"unit", "model", "note", "interval_method", ...}, NaN as null and an unbounded end as Infinity (Python's json and pandas read both).
On a grid file: the results of the grid under `--results` (if it has run), the cost of what is not yet cached
(rates from a saved calibration of the grid, else reports/bench.json where its workloads match), and the seeds
needed. Exit codes: 0 answered; 2 bad input (the message names the file, option or value). Costs seconds (the
analysis); `--calibrate` tens of seconds (it trains small models).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import pandas as pd

from study.advise.cost import CostError, Rates, bench_rates, estimate, load_rates, rates_path, save_rates
from study.analysis.equivalence import EquivalenceError, analyse
from study.analysis.power import seeds_needed
from study.analysis.published import grid_setting
from study.grid import GridError, expand, load_grid
from study.runner.plan import make_plan
from study.store import Store, read_json
from study.table import TableError, read_cells

BENCH = Path(__file__).resolve().parents[2] / "reports" / "bench.json"


class AdviseError(ValueError):
    """Bad input to the planner: names the file, option or value and what was expected."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.advise", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("target", help="a results directory (with cells.csv) or a grid file (.yaml)")
    p.add_argument("--base", type=float, help="base real images per class the question is about")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--match-real", type=float, metavar="N", help="synthetic per class worth N more real per class")
    q.add_argument("--target-acc", type=float, metavar="ACC", help="synthetic per class to reach accuracy ACC")
    q.add_argument("--volume", type=float, metavar="V", help="expected accuracy and n_eff at V synthetic per class")
    p.add_argument("--arm", action="append", help="only these arms (repeatable)")
    p.add_argument("--json", action="store_true", help="print the answers as a JSON list, one object per arm")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--results", default="results", help="results root for a grid file (default results/)")
    p.add_argument("--jobs", type=int, default=2, help="workers the cost estimate assumes (default 2)")
    p.add_argument("--cores", type=int, help="cores the cost estimate assumes (default: this machine's)")
    p.add_argument("--calibrate", action="store_true", help="measure the grid's costs first (torch; tens of seconds)")
    p.add_argument("--beta", type=float, help="plan the seeds for this assumed beta instead of the pilot's")
    p.add_argument("--half-width", type=float, help="plan the seeds for this half-width of beta's interval")
    args = p.parse_args(argv)
    if (args.match_real is not None or args.target_acc is not None or args.volume is not None) and args.base is None:
        p.error("--match-real, --target-acc and --volume need --base (base real images per class)")
    if args.target_acc is not None and not 0 < args.target_acc < 1:
        p.error(f"--target-acc: expected an accuracy between 0 and 1, got {args.target_acc}")
    for name in ("base", "match_real", "volume", "half_width"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            p.error(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
    if not 0 < args.level < 1:
        p.error(f"--level: expected a number between 0 and 1, got {args.level}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        grid, results_dir = _target(Path(args.target), Path(args.results))
        lines, answers = [], []
        if results_dir is not None:
            eq = _analyse(results_dir, args.level)
            arms = [s for s in eq.surfaces.values() if not args.arm or s.arm in args.arm]
            if args.arm and not arms:
                raise AdviseError(
                    f"--arm {args.arm}: no such fitted arm (fitted: {sorted(s.arm for s in eq.surfaces.values())})"
                )
            answers = [_ask(s, args) for s in arms] if args.base is not None else []
            lines += _study_lines(eq, arms, answers, args, results_dir)
        elif args.base is not None:
            raise AdviseError(f"{args.target}: the grid has no results under {args.results}/ yet; a query needs a "
                              "fitted study (run it, or pass its results directory)")  # fmt: skip
        if grid is not None:
            lines += _cost_lines(grid, args)
    except (AdviseError, EquivalenceError, GridError, TableError, CostError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([a.as_json() for a in answers], indent=1))
    else:
        print("\n".join(lines))
    return 0


# --- inputs ------------------------------------------------------------------------------------------


def _target(target: Path, results_root: Path):
    """(grid or None, results directory or None) for a results directory or a grid file."""
    if target.is_dir():
        if not (target / "cells.csv").exists():
            raise AdviseError(f"{target / 'cells.csv'}: no results table (expected a results/<name>/ directory)")
        return None, target
    if target.suffix in (".yaml", ".yml"):
        grid = load_grid(target)
        results = results_root / grid.name
        return grid, results if (results / "cells.csv").exists() else None
    raise AdviseError(f"{target}: not found; expected a results directory with cells.csv or a grid file (.yaml)")


def _analyse(results_dir: Path, level: float):
    cells = read_cells(results_dir / "cells.csv")
    plan = read_json(results_dir / "plan.json", AdviseError)
    return analyse(cells, n_boot=0, level=level, published=grid_setting((plan or {}).get("grid")))


# --- answers -----------------------------------------------------------------------------------------


def _ask(surface, args):
    if args.match_real is not None:
        return surface.match_real(args.base, args.match_real)
    if args.target_acc is not None:
        return surface.target_acc(args.base, args.target_acc)
    if args.volume is not None:
        return surface.at_volume(args.base, args.volume)
    return surface.match_real(args.base, args.base)  # --base alone: what doubling the real data is worth


def _num(v: float, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return "inf" if math.isinf(v) else f"{v:.{digits}g}"


def _study_lines(eq, arms, answers, args, results_dir: Path) -> list[str]:
    pct = f"{args.level:.0%}"
    fit = eq.fit.set_index("arm") if len(eq.fit) else pd.DataFrame()
    lines = [f"study {results_dir}: {len(arms)} synthetic arm(s) fitted ({pct} intervals)"]
    for s in arms:
        r = fit.loc[s.arm] if s.arm in fit.index else None
        if r is None:
            continue
        k_text = (f"k = {_num(r['k'])} [{_num(r['k_lo'])}, {_num(r['k_hi'])}]" if r["verdict"] == "gain" else
                  f"k >= {_num(r['k_lo'])}" if r["verdict"] == "no measurable gain" and math.isfinite(r["k_lo"]) and
                  r["k_lo"] > 0 else "k not defined")  # fmt: skip
        flags = (
            [f"{int(r['n_generators'])} generators (few: the interval rests on them)"] if r["few_generators"] else []
        )
        if s.widening is not None:
            below, above = s.widening.arm
            flags.append(f"planner intervals widened to beta's two-stage interval (x{below:.3g} below, "
                         f"x{above:.3g} above)")  # fmt: skip
        if r.get("heterogeneity_base_p", 1) < 0.05:
            flags.append(f"beta differs between bases (p = {r['heterogeneity_base_p']:.2g})")
        lines.append(f"  {s.arm}: {r['verdict']}, beta = {_num(r['beta'])} [{_num(r['beta_lo'])}, {_num(r['beta_hi'])}],"
                     f" {k_text}; surface: {s.chosen}" + (f"; {'; '.join(flags)}" if flags else ""))  # fmt: skip
    if answers:
        lines.append(f"\n{answers[0].query.split(' at ')[0]} at base {args.base:g} per class:")
        for a in answers:
            extra = (
                f", n_eff {_num(a.n_eff)} [{_num(a.n_eff_lo)}, {_num(a.n_eff_hi)}] real/class"
                if a.unit == "accuracy"
                else ""
            )
            flag = " (extrapolated)" if a.extrapolated else ""
            lines.append(f"  {a.arm}: {_num(a.value)} [{_num(a.lo)}, {_num(a.hi)}] {a.unit}{extra}{flag}"
                         + (f" — {a.note}" if a.note else ""))  # fmt: skip
    elif arms:
        lines += ["", *planning_text(arms)]
    if args.beta is not None or args.half_width is not None or not answers:
        lines += ["", *_power_lines(eq, arms, args)]
    return lines


def planning_text(arms) -> list[str]:
    """Per arm and measured base: synthetic per class matching as many more real images as the base, and the
    accuracy at 4x the base in synthetic images."""
    lines = ["planning (per arm, at the measured bases): synthetic/class worth +base real/class; accuracy at 4x base"]
    for s in arms:
        for b in s.bases:
            m, v = s.match_real(b, b), s.at_volume(b, 4 * b)
            lines.append(f"  {s.arm:<12} base {b:>5g}: {_num(m.value)} [{_num(m.lo)}, {_num(m.hi)}]"
                         f"{' (extrapolated)' if m.extrapolated else ''};  acc {v.value:.3f} [{v.lo:.3f}, {v.hi:.3f}]"
                         f"{' (extrapolated)' if v.extrapolated else ''}")  # fmt: skip
    return lines


def _power_lines(eq, arms, args) -> list[str]:
    names = {s.arm for s in arms}
    lines = [f"seeds needed (each seed repeats this design; {args.level:.0%} intervals, 80% power):"]
    for _, row in eq.fit.iterrows():
        if row["arm"] not in names or not math.isfinite(row["beta_lo"]) or not math.isfinite(row["beta_hi"]):
            continue
        plan = seeds_needed(row, beta=args.beta, half_width=args.half_width, level=args.level)
        at = f"beta = {plan.beta:.3g}" + (" (assumed)" if plan.assumed else " (the pilot's)")
        text = f"  {plan.arm}: {plan.pilot_seeds} seeds now (se {plan.se_pilot:.3g}); to exclude 0 at {at}: "
        text += f"{plan.exclude_zero} seeds" if plan.exclude_zero else "more than 200 seeds (or beta = 0)"
        if args.half_width is not None:
            text += f"; half-width {args.half_width:g}: " + (f"{plan.half_width} seeds" if plan.half_width else
                                                           "more than 200 seeds")  # fmt: skip
        lines.append(text)
    return lines


# --- cost ----------------------------------------------------------------------------------------------


def _cost_lines(grid, args) -> list[str]:
    plan = make_plan(grid, expand(grid))
    store = Store(Path(args.results) / "store")
    done = plan.cached(store)
    todo = [n for n in plan.nodes.values() if n.key not in done]
    rates = _rates(grid, args, plan)
    cores = args.cores or len(os.sched_getaffinity(0))
    est = estimate(plan, rates, todo, jobs=args.jobs, cores=cores, strict=False)  # describe() names the gaps
    lines = ["", f"grid {grid.name}: {len(plan.nodes)} artifacts, {len(done)} cached, {len(todo)} to compute",
             est.describe(), "(a shared machine runs slower: the estimate is for idle cores)"]  # fmt: skip
    return lines


def _rates(grid, args, plan) -> Rates:
    path = rates_path(grid)
    if args.calibrate:
        from study.advise.calibrate import calibrate

        rates = calibrate(grid, log=lambda text: print(text, file=sys.stderr))
        save_rates(rates, grid)
        return rates
    saved = load_rates(path)
    if saved is not None:
        return saved
    bench = read_json(BENCH, AdviseError) or {}
    facts = _dataset_facts(Path(args.results) / grid.name)
    if not bench or facts is None:
        raise CostError(f"no measured costs for grid {grid.name}: run `python -m study.advise {args.target} "
                        f"--calibrate` once (it saves them to {path})")  # fmt: skip
    return bench_rates(grid, bench, *facts)


def _dataset_facts(results_dir: Path) -> tuple[int, int] | None:
    """(classes, training images) from an earlier run's table, if any (the bench path needs the class count)."""
    if not (results_dir / "cells.csv").exists():
        return None
    cells = read_cells(results_dir / "cells.csv")
    k = cells["n_classes"].dropna()
    return (int(k.iloc[0]), 0) if len(k) else None
