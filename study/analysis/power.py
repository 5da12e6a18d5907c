"""How many seeds a study needs for its exchange rate beta to be pinned down, from a pilot of the same design.

    seeds = seeds_needed(pilot_row, beta=0.1, half_width=0.05)   # a row of equivalence_fit.csv (Equivalence.fit)
    seeds.exclude_zero, seeds.half_width                        # seeds for each goal (None: beyond MAX_SEEDS)

Each seed repeats the pilot's design (its bases, volumes, real-extra sizes and generators), so the information on
beta grows in proportion to the seeds and its standard error shrinks as 1 / sqrt(S):
    se(S) = se_pilot sqrt(S_pilot / S),      se_pilot = (beta_hi - beta_lo) / (2 t_{df}(level))
from the pilot's reported interval (the random-effect profile interval, so generator-to-generator spread counts),
with the interval's df growing with the seeds too (df(S) = df_pilot S / S_pilot; inf stays inf). Goals:
    interval excludes 0 with probability `power` at the true beta:  |beta| / se(S) >= t_{df(S)}(level) + z(power)
    half-width at most h:                                           t_{df(S)}(level) se(S) <= h
beta defaults to the pilot's estimate; pass an assumed value to plan for an effect the pilot did not show. The
curve's slope at the effective size is taken as the pilot's (beta changes it little at these sizes). Costs
microseconds; never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MAX_SEEDS = 200
POWER = 0.8


@dataclass(frozen=True)
class SeedPlan:
    arm: str
    pilot_seeds: int
    beta: float  # the rate planned for (the pilot's, or assumed)
    assumed: bool
    se_pilot: float
    exclude_zero: int | None  # seeds for the interval to exclude 0 with probability `power` (None: > MAX_SEEDS)
    half_width: int | None  # seeds for the stated half-width (None: not asked, or > MAX_SEEDS)
    target_half_width: float | None
    level: float
    power: float


def _quantile(level: float, df: float) -> float:
    return float(stats.t.ppf(0.5 + level / 2, df) if np.isfinite(df) else stats.norm.ppf(0.5 + level / 2))


def seeds_needed(
    row, *, beta: float | None = None, half_width: float | None = None, level: float = 0.9, power: float = POWER
) -> SeedPlan:
    """Seeds for an arm's interval on beta to exclude 0 (at `beta`, default the pilot's) with probability `power`,
    and to reach `half_width`, from the arm's pilot row (beta, beta_lo, beta_hi, n_seeds, interval_df)."""
    s0 = int(row["n_seeds"])
    df0 = float(row.get("interval_df", math.inf))
    df0 = math.inf if not np.isfinite(df0) else df0
    lo, hi = float(row["beta_lo"]), float(row["beta_hi"])
    se0 = (hi - lo) / (2 * _quantile(level, df0)) if np.isfinite(lo) and np.isfinite(hi) else math.nan
    target = float(row["beta"]) if beta is None else float(beta)

    def se(s: int) -> float:
        return se0 * math.sqrt(s0 / s)

    def df(s: int) -> float:
        return df0 * s / s0

    def first(ok) -> int | None:
        return next((s for s in range(2, MAX_SEEDS + 1) if ok(s)), None)

    excl = hw = None
    if np.isfinite(se0) and se0 > 0:
        z_power = float(stats.norm.ppf(power))
        excl = first(lambda s: abs(target) / se(s) >= _quantile(level, df(s)) + z_power) if target != 0 else None
        if half_width is not None:
            hw = first(lambda s: _quantile(level, df(s)) * se(s) <= half_width)
    return SeedPlan(str(row["arm"]), s0, target, beta is not None, se0, excl, hw, half_width, level, power)
