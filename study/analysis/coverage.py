"""How often the joint model's intervals cover a planted exchange rate, with and without generator effects shared
by the cells of one generator: the Monte-Carlo check behind the interval method (study.analysis.joint).

    python -m study.analysis.coverage --studies 200 --out reports/coverage.md    # ~1 h of one CPU core
    python -m study.analysis.coverage --studies 50 --seed 50 --csv more.csv      # more studies, saved as they come
    python -m study.analysis.coverage --tables a.csv more.csv --out reports/coverage.md   # the table of saved runs
    table = coverage_table(run_scenarios(SCENARIOS, studies=20))

Each simulated study (study.analysis.simulate) has 3 seeds, bases 10/20/40 per class, real-extra 10/30, volumes
10/20/40/80 per class, 10 classes, n_test 1000, classifier noise sd 0.1 on the logit, and two arms with planted
beta 0.3 and 0.1. A scenario adds a quality effect shared by every cell of one generator (on log beta), and may
make both arms open-set (one generator per seed, shared by every base). Per arm and per (arm, base), four
90% intervals are compared:
    reported    what the analysis reports (study.analysis.joint): the random-effect one, or the two-stage one for
                an arm with fewer than joint.FEW_GENERATORS generators (an open-set arm: one per seed) or where
                the test of tau = 0 rejects at joint.GENERATOR_TEST_LEVEL (`joint.uses_two_stage`);
    random      the profile-likelihood interval with a random effect per generator;
    fixed       the same likelihood with tau = 0: cells independent given the curve (the method before issue 18);
    two-stage   one rate per generator with the curve refitted, then mean +- t(G-1) se, the se from their spread
                and the shared curve's covariance (study.analysis.two_stage).
Coverage is the share of intervals holding the rate, with its Monte-Carlo standard error sqrt(c (1 - c) / n):
the mean rate over generators beta exp(sd^2 / 2), which all four estimate (the simulator plants beta_g =
beta exp(u_g), u_g ~ N(0, sd^2), whose median is beta), and beside it the planted median beta. Width is the median
of hi - lo, and the width ratio the median over intervals of each one's width over the fixed interval's of the
same study, arm and level. Never imports torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis.cells import Group, arm_mask, arms_of, check_cells, generator_of
from study.analysis.curve import fit_curve
from study.analysis.joint import fit_arm
from study.analysis.mixed import Data, unpooled_dispersion
from study.analysis.simulate import PlantedArm, seed_worth, simulate_cells
from study.analysis.two_stage import METHOD, two_stage

LEVEL = 0.9
DESIGN = {"bases": (10, 20, 40), "extras": (10, 30), "volumes": (10, 20, 40, 80), "seeds": (0, 1, 2), "n_test": 1000,
          "cell_sd": 0.1}  # fmt: skip
TRUTH = {"beta-0.3": 0.3, "beta-0.1": 0.1}


@dataclass(frozen=True)
class Scenario:
    name: str
    generator_sd: float = 0.0  # sd of the shared effect on log beta
    kind: str = "closed"  # open: one generator per seed, shared by every base
    seed_size_sd: float = 0.0  # sd of log of what a seed's real subset is worth per image (study.analysis.simulate)
    seed_sd: float = 0.0  # sd of a seed's shift of logit accuracy, on every cell of the seed

    def arms(self) -> list[PlantedArm]:
        return [PlantedArm(name, beta=beta, kind=self.kind) for name, beta in TRUTH.items()]


SCENARIOS = (
    Scenario("no shared effect"),
    Scenario("shared effect on log beta, sd 0.3", 0.3),
    Scenario("shared effect on log beta, sd 0.5", 0.5),
    Scenario("one generator per seed for every base (open), sd 0.3", 0.3, "open"),
)
SEED_SCENARIOS = (  # seeds that differ (issue 20)
    Scenario("no shared effect, seed logit shift sd 0.5", seed_sd=0.5),
    Scenario("no shared effect, seeds' real subsets worth exp(N(0, 0.8^2))", seed_size_sd=0.8),
)


def study_intervals(
    cells: pd.DataFrame, level: float = LEVEL, by_base: bool = True, seed_effect: str = "auto"
) -> list[dict]:
    """The four kinds of interval per arm (and per arm and base) of one simulated cells table: the reported, random
    and fixed ones exactly as study.analysis.joint computes them (per base: one fit sharing the curve and tau; the
    random-effect one is the reported one except where the two-stage rule replaced it), and the two-stage one
    (study.analysis.two_stage) for every arm. Each row also has the arm's p-value of tau = 0 (`generator_p`)."""
    table, _ = check_cells(cells)
    g = Group("simulated", "simulated", table, level)
    g = replace(g, curve=fit_curve(g.real_measurements, floor=g.chance))
    real = g.real_measurements
    rows = []
    for _, arm in arms_of(g.cells).iterrows():
        syn = g.done[arm_mask(g.done, arm)]
        gens = generator_of(syn).to_numpy()
        common = {"arm": arm["arm"], "truth": TRUTH.get(arm["arm"], np.nan)}
        for random in (True, False):
            fitted = fit_arm(g, real, syn, by_base, random=random, tests=False, seed_effect=seed_effect)
            for where, r in [("arm", fitted.row)] + [(f"base {b['base_per_class']:g}", b) for b in fitted.per_base]:
                key = "arm" if where == "arm" else r["base_per_class"]
                out = {**common, "where": where, "generators": r["n_generators"], "tau": r["generator_sd"],
                       "generator_p": fitted.row.get("generator_p", np.nan),
                       "seed_effect_used": fitted.row.get("seed_effect", ""), "seed_p": fitted.row.get("seed_p", np.nan)}  # fmt: skip
                ends = (r["beta"], r["beta_lo"], r["beta_hi"])
                if random:
                    rows.append({**out, "method": "reported", "two_stage": r["interval_method"] == METHOD,
                                 **dict(zip(("beta", "lo", "hi"), ends, strict=True))})  # fmt: skip
                    ends = fitted.profile.get(key, ends)
                rows.append({**out, "method": "random" if random else "fixed",
                             **dict(zip(("beta", "lo", "hi"), ends, strict=True))})  # fmt: skip
        used = fitted.row["seed_effect"]  # "auto" resolved by the seeds' test (study.analysis.joint.seed_choice)
        phi, _ = unpooled_dispersion(g.curve, Data.build(real, syn, gens, syn["base_per_class"]), used)
        subsets = [("arm", np.ones(len(syn), bool))]
        subsets += [(f"base {b:g}", (syn["base_per_class"] == b).to_numpy()) for b in sorted(syn["base_per_class"].unique())
                    if by_base]  # fmt: skip
        for where, mask in subsets:
            d = Data.build(real, syn[mask], gens[mask], np.zeros(int(mask.sum()), int))
            est = two_stage(g.curve, d, level, phi, used)
            rows.append({**common, "where": where, "method": "two-stage", "generators": est.n_generators,
                         "beta": est.beta, "lo": est.lo, "hi": est.hi, "tau": np.nan})  # fmt: skip
    return rows


def own_rate_factor(seed: int, scenario: Scenario) -> float:
    """With seeds whose real subsets are worth w_s images per nominal one (`seed_size_sd`), the rate the models can
    see: a synthetic image worth beta nominal images is worth beta / w_s of its own seed's real images, and no
    model can tell the nominal image from the seeds' average one (a seed effect sums to 0 over seeds), so the
    estimand is beta times the mean over the study's seeds of 1 / w_s; 1 without seed size effects."""
    if scenario.seed_size_sd == 0:
        return 1.0
    worth = seed_worth(seed, DESIGN["seeds"], scenario.seed_size_sd)
    return float(np.mean([1 / w for w in worth.values()]))


def run_scenarios(scenarios=SCENARIOS, studies: int = 200, seed: int = 0, by_base: bool = True, log=None,
                  partial: Path | None = None, seed_effect: str = "auto") -> pd.DataFrame:  # fmt: skip
    """Every interval of `studies` simulated studies per scenario (study `i` of every scenario is drawn from seed
    `seed + i`, its `study` number, so scenarios differ only in the generator effects and runs with different
    seeds add up). Studies interleave the scenarios, so a run
    stopped early is balanced; `partial` gets every study's rows as they come."""
    rows = []
    start = time.process_time()
    for i in range(studies):
        for scenario in scenarios:
            cells = simulate_cells(scenario.arms(), generator_sd=scenario.generator_sd, seed=seed + i,
                                   seed_sd=scenario.seed_sd, seed_size_sd=scenario.seed_size_sd, **DESIGN)  # fmt: skip
            own = own_rate_factor(seed + i, scenario)
            new = [{"scenario": scenario.name, "study": seed + i, "seed_effect": seed_effect, **r,
                    "truth": r["truth"] * own} for r in study_intervals(cells, by_base=by_base, seed_effect=seed_effect)]  # fmt: skip
            rows += new
            if partial is not None:
                pd.DataFrame(new).to_csv(partial, mode="a", header=not partial.exists(), index=False)
        if log is not None:
            print(f"{i + 1}/{studies} studies per scenario, {time.process_time() - start:.0f} s CPU", file=log,
                  flush=True)  # fmt: skip
    return pd.DataFrame(rows)


def estimand(intervals: pd.DataFrame, which: str = "mean") -> pd.Series:
    """The rate an interval should hold: the planted median beta ("median"), or the mean rate over generators
    beta exp(sd^2 / 2) ("mean"), which is what every method here estimates (the random effect is additive on beta
    with mean 0, the two-stage estimate averages the beta_g) while the simulator plants beta_g = beta exp(u_g) with
    u_g ~ N(0, sd^2) (study.analysis.simulate); sd from the scenario's name in SCENARIOS."""
    if which == "median":
        return intervals["truth"]
    sd = {s.name: s.generator_sd for s in SCENARIOS + SEED_SCENARIOS}
    unknown = set(intervals["scenario"]) - set(sd)
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}: expected names from SCENARIOS {list(sd)}")
    return intervals["truth"] * np.exp(intervals["scenario"].map(sd) ** 2 / 2)


def coverage_table(intervals: pd.DataFrame, which: str = "mean") -> pd.DataFrame:
    """Coverage of the `which` estimand (`estimand`, with its Monte-Carlo SE), median width and median width ratio
    to the fixed interval, per scenario, level (arm or base) and method; for the reported intervals also the share
    that are two-stage ones (`two_stage_share`, NaN for the other methods)."""
    truth = estimand(intervals, which)
    frame = intervals.assign(level=np.where(intervals["where"] == "arm", "per arm", "per base"),
                             covered=(intervals["lo"] <= truth) & (truth <= intervals["hi"]),
                             width=intervals["hi"] - intervals["lo"])  # fmt: skip
    keys = ["scenario", "study", "arm", "where"]
    fixed = frame.loc[frame["method"] == "fixed", [*keys, "width"]].rename(columns={"width": "fixed_width"})
    frame = frame.merge(fixed, on=keys, how="left")
    frame["ratio"] = frame["width"] / frame["fixed_width"]
    if "two_stage" not in frame:  # tables saved before the column
        frame["two_stage"] = np.nan
    rows = []
    for (scenario, level, method), g in frame.groupby(["scenario", "level", "method"], sort=False):
        c = float(g["covered"].mean())
        rows.append({"scenario": scenario, "level": level, "method": method, "intervals": len(g), "coverage": c,
                     "mc_se": float(np.sqrt(c * (1 - c) / len(g))), "median_width": float(g["width"].median()),
                     "width_ratio": float(g["ratio"].median()),
                     "two_stage_share": float(g["two_stage"].astype(float).mean())})  # fmt: skip
    return pd.DataFrame(rows)


def _markdown(intervals: pd.DataFrame, studies: int, seconds: float, wall: float = float("nan"), note: str = ""
              ) -> str:  # fmt: skip
    took = f"{seconds / 60:.0f} min of CPU" + (f", {wall / 60:.0f} min wall" if np.isfinite(wall) else "")
    lines = ["# Coverage of the exchange-rate intervals", "",
             f"Written by `python -m study.analysis.coverage` (at least {studies} simulated studies per scenario, "
             f"{took}{'; ' + note if note else ''}). Design: {DESIGN}; arms with planted beta "
             f"{list(TRUTH.values())}; nominal {LEVEL:.0%}. Coverage ± its Monte-Carlo standard error; w: median of "
             "hi - lo; ×: median width ratio to the fixed interval of the same study, arm and level; reported: "
             "two-stage: the share of reported intervals that are two-stage ones (study.analysis.joint's rule).",
             ""]  # fmt: skip
    for which, title in (("mean", "Coverage of the mean rate over generators, beta exp(sd^2 / 2) (what the methods "
                                  "estimate)"), ("median", "Coverage of the planted median rate beta")):  # fmt: skip
        lines += [f"## {title}", "", *_rows(coverage_table(intervals, which)), ""]
    return "\n".join(lines)


def _rows(table: pd.DataFrame) -> list[str]:
    lines = ["| scenario | level | reported | reported: two-stage | random effect | fixed (cells independent) "
             "| two-stage t(G-1) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    wide = table.pivot_table(index=["scenario", "level"], columns="method", values=["coverage", "mc_se",
                             "median_width", "width_ratio"], sort=False)  # fmt: skip
    share = table[table["method"] == "reported"].set_index(["scenario", "level"])["two_stage_share"]
    for (scenario, level), r in wide.iterrows():
        cell = [f"{r[('coverage', m)]:.1%} ± {r[('mc_se', m)]:.1%} (w {r[('median_width', m)]:.3f}, "
                f"{r[('width_ratio', m)]:.2f}×)" for m in ("reported", "random", "fixed", "two-stage")]  # fmt: skip
        used = share.get((scenario, level), np.nan)
        cell.insert(1, "?" if np.isnan(used) else f"{used:.0%}")
        lines.append(f"| {scenario} | {level} | " + " | ".join(cell) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.analysis.coverage", description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the table as markdown here")
    parser.add_argument("--csv", type=Path, help="append every interval here, study by study")
    parser.add_argument(
        "--tables",
        type=Path,
        nargs="+",
        metavar="CSV",
        help="no new studies: the table of intervals saved by earlier --csv runs (different --seed)",
    )
    parser.add_argument("--cpu-minutes", type=float, help="with --tables: the CPU minutes they took, for the header")
    parser.add_argument("--note", default="", help="added to the header, e.g. how the machine was shared")
    args = parser.parse_args(argv)
    start, wall = time.process_time(), time.perf_counter()
    if args.tables:
        intervals = pd.concat([pd.read_csv(path) for path in args.tables], ignore_index=True)
        studies = int(intervals.groupby("scenario")["study"].nunique().min())
        seconds, wall = (60 * args.cpu_minutes if args.cpu_minutes else float("nan")), float("nan")
    else:
        intervals = run_scenarios(
            SCENARIOS + SEED_SCENARIOS, studies=args.studies, seed=args.seed, log=sys.stderr, partial=args.csv
        )
        studies, seconds, wall = args.studies, time.process_time() - start, time.perf_counter() - wall
    text = _markdown(intervals, studies, seconds, wall, args.note)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
