"""Simulated cells tables with a planted truth, for testing the equivalence analysis and the report.

A simulated table has exactly the columns the runner writes (study.table, with their dtypes), so anything that
reads `results/<name>/cells.csv` can be tested on it without training a model:

    from study.analysis.simulate import PlantedArm, simulate_cells
    cells = simulate_cells([PlantedArm("closed", beta=0.3), PlantedArm("open", beta=-0.1, kind="open")])

The truth. Real data follow a learning curve acc(n) (default: logit acc = a + b log n). A synthetic arm
turns n_syn synthetic images on a base of n_base real ones into an effective real size n_eff, either at a
constant exchange rate (`beta`: n_eff = n_base + beta n_syn; < 0 hurts, > 1 beats real data) or by the
paper's closed form (`c1`, `c2`, `K`: the n_syn matching n_real+ added real images is
n_base c1^(n_base/K) (c2^(n_real+/n_base) - 1), inverted). A cell's accuracy is acc(n_eff), shifted on the
logit scale by a seed effect (`seed_sd`: shared by every cell of a seed, like the base set) and a cell effect
(classifier training noise), then observed through a binomial test set of n_test images. `seed_size_sd` plants
the other kind of seed effect: a seed's real subset (nested: its base and extra images) is worth w_s =
exp(a_s), a_s ~ Normal(0, seed_size_sd), images per nominal image, n_eff = w_s (n_base + n_extra) + gain,
the gain (n_syn's part) untouched, as when one seed's base subset happens to teach little.

Generators, as the runner has them: a closed-set arm trains one generator (and draws one sample set) per seed
and base size, whose smaller volumes are prefixes of its largest; an open-set arm one per seed, shared by
every base size. `generator_sd` plants a quality effect shared by every cell of one generator: its gain
n_eff - n_base is multiplied by exp(u), u ~ Normal(0, generator_sd) (an effect on log beta for a constant-rate
arm). Rows carry the generator and its sample set as `generator_key` and `samples_key`
("sim-<arm>-s<seed>[-b<base>]"), so the analysis can tell which cells share one. Cells fail at
random with `fail_rate` (status "failed", no metrics). As in the runner, real cells of one seed with the same
real size (base b + extra e and base b + e: nested subsets, the same images) are one measurement with one
`cell_key`. What a simulated study has no such thing for is empty: metrics other than accuracy, compute time,
the classifier's artifact key and sample-set diagnostics (NaN or empty); a closed-set generator is recorded as trained on its
base set (`gen_train_images` = n_base). Everything is drawn from `seed`: same arguments, same table. Never
imports torch; costs milliseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from study.analysis.curve import logit_log
from study.grid import Cell
from study.table import conform

DEFAULT_CURVE = functools.partial(logit_log, a=-2.0, b=0.7)  # 100 images: 0.77, 400: 0.90, 1600: 0.97


@dataclass(frozen=True)
class PlantedArm:
    """One synthetic arm and its true effect: give `beta`, or `c2` (with `c1`, default 1, and `K`, default
    the number of classes) for the paper's closed form."""

    name: str
    beta: float | None = None  # real images gained per synthetic image
    c1: float = 1.0
    c2: float | None = None
    K: float | None = None
    kind: str = "closed"  # closed | open
    strategy: str = "conditional"
    mix: str = "uniform"

    def __post_init__(self):
        if (self.beta is None) == (self.c2 is None):
            raise ValueError(
                f"arm {self.name!r}: give exactly one of `beta` or `c2` (closed form), got neither or both"
            )
        if self.c2 is not None and not self.c2 > 1:
            raise ValueError(f"arm {self.name!r}: c2 must be > 1, got {self.c2}")
        if self.kind not in ("closed", "open"):
            raise ValueError(f"arm {self.name!r}: kind must be 'closed' or 'open', got {self.kind!r}")

    def n_eff(self, n_base, n_syn, n_classes: int):
        """The effective real size of n_base real plus n_syn synthetic images (totals)."""
        n_base, n_syn = np.asarray(n_base, float), np.asarray(n_syn, float)
        if self.beta is not None:
            return n_base + self.beta * n_syn
        K = self.K if self.K is not None else n_classes  # noqa: N806 (the paper's name)
        scale = n_base * self.c1 ** (n_base / K)
        return n_base + n_base * np.log1p(n_syn / scale) / np.log(self.c2)

    def true_beta(self, n_base, n_syn, n_classes: int):
        """The planted exchange rate (n_eff - n_base) / n_syn at these sizes."""
        return (self.n_eff(n_base, n_syn, n_classes) - np.asarray(n_base, float)) / np.asarray(n_syn, float)


def _cells(arms, bases, extras, volumes, seeds) -> list[tuple[Cell, PlantedArm | None]]:
    out = []
    for seed in seeds:
        for base in bases:
            out.append((Cell(seed, base, "real-only", "real-only"), None))
            out += [(Cell(seed, base, "real-extra", "real-extra", extra_per_class=e), None) for e in extras]
            for arm in arms:
                out += [(Cell(seed, base, arm.name, arm.kind, volume_per_class=v), arm) for v in volumes]
    return out


def seed_worth(seed: int, seeds, seed_size_sd: float) -> dict:
    """What each seed's real subset is worth per nominal image in the table `simulate_cells(..., seed=seed)` draws
    with `seed_size_sd`: w_s = exp(a_s), a_s ~ Normal(0, seed_size_sd), from its own stream (so tables without it
    are unchanged)."""
    draws = np.random.default_rng([seed, 2]).normal(0.0, seed_size_sd, len(seeds))
    return dict(zip(seeds, np.exp(draws), strict=True))


def simulate_cells(
    arms: Sequence[PlantedArm] = (PlantedArm("closed", beta=0.3),),
    *,
    bases: Sequence[int] = (10, 20, 40),  # base images per class
    extras: Sequence[int] = (10, 30),  # extra real images per class (real-extra arm)
    volumes: Sequence[int] = (20, 80),  # synthetic images per class
    seeds: Sequence[int] = (0, 1, 2),
    n_classes: int = 10,
    n_test: int = 1000,
    curve: Callable[[np.ndarray], np.ndarray] = DEFAULT_CURVE,  # true accuracy at n real images
    seed_sd: float = 0.0,  # sd of a seed's shift of logit accuracy (shared by its cells)
    seed_size_sd: float = 0.0,  # sd of log of what a seed's real subset is worth per nominal image (its cells)
    cell_sd: float = 0.0,  # sd of each cell's own shift of logit accuracy (training noise)
    generator_sd: float = 0.0,  # sd of a generator's effect on log of its gain (n_eff - n_base), shared by its cells
    fail_rate: float = 0.0,  # probability that a cell failed
    dataset: str = "simulated",
    classifier: str = "simulated",
    seed: int = 0,
) -> pd.DataFrame:
    """A cells table (every study.table column) drawn from the planted truth described in the module docstring.
    test_bacc equals test_acc (balanced classes); test_auc, test_nll and test_ece are not simulated (NaN)."""
    names = [a.name for a in arms]
    if len(set(names)) != len(names) or {"real-only", "real-extra"} & set(names):
        raise ValueError(f"arm names must be distinct and not real-only/real-extra, got {names}")
    rng = np.random.default_rng(seed)
    gen_rng = np.random.default_rng([seed, 1])  # its own stream: tables without generator effects are unchanged
    seed_shift = dict(zip(seeds, rng.normal(0.0, seed_sd, len(seeds)), strict=True))
    worth = seed_worth(seed, seeds, seed_size_sd)
    rows, measured, generators = [], {}, {}
    for cell, arm in _cells(arms, bases, extras, volumes, seeds):
        n_base, n_extra, n_syn = (
            v * n_classes for v in (cell.base_per_class, cell.extra_per_class, cell.volume_per_class)
        )
        gen = None if arm is None else generator_name(arm, cell.seed, cell.base_per_class)
        if gen is not None and gen not in generators:
            generators[gen] = float(np.exp(gen_rng.normal(0.0, generator_sd))) if generator_sd > 0 else 1.0
        if arm is None:
            n = worth[cell.seed] * (n_base + n_extra)
        else:
            n = worth[cell.seed] * n_base + generators[gen] * (float(arm.n_eff(n_base, n_syn, n_classes)) - n_base)
        if not n > 0:
            raise ValueError(f"arm {arm.name!r} plants n_eff = {n:g} <= 0 at base {n_base}, n_syn {n_syn}: raise beta")
        key = f"real{n_base + n_extra}-s{cell.seed}" if arm is None else cell.label
        if key not in measured:
            p = special.expit(special.logit(curve(np.float64(n))) + seed_shift[cell.seed] + rng.normal(0.0, cell_sd))
            measured[key] = (rng.binomial(n_test, p) / n_test, rng.random() < fail_rate)
        acc, failed = measured[key]
        rows.append({
            "cell": cell.label, "dataset": dataset, "seed": cell.seed, "base_per_class": cell.base_per_class,
            "n_base": n_base, "arm": cell.arm, "arm_kind": cell.arm_kind, "extra_per_class": cell.extra_per_class,
            "n_extra": n_extra, "volume_per_class": cell.volume_per_class, "n_syn": n_syn, "classifier": classifier,
            "test_acc": np.nan if failed else acc, "test_bacc": np.nan if failed else acc,
            "n_test": None if failed else n_test, "status": "failed" if failed else "done",
            "error": "RuntimeError: simulated failure" if failed else "", "n_classes": n_classes, "cell_key": key,
            "generator_key": gen, "samples_key": gen, **_arm_columns(arm, dataset, n_base),
        })  # fmt: skip
    return conform(pd.DataFrame(rows))


def generator_name(arm: PlantedArm, seed: int, base_per_class: int) -> str:
    """The simulated generator (and sample set) of an arm's cell: per seed and base for a closed-set arm, per seed
    for an open-set one (trained on the pool, shared by every base size)."""
    return f"sim-{arm.name}-s{seed}" + (f"-b{base_per_class}" if arm.kind == "closed" else "")


def _arm_columns(arm: PlantedArm | None, dataset: str, n_base: int) -> dict:
    """What a row says about its arm: strategy, batch mixing, label policy and what the generator saw."""
    if arm is None:
        return {"strategy": "none", "mix": "none", "labels": "none"}
    closed = arm.kind == "closed"
    return {"strategy": arm.strategy, "mix": arm.mix, "labels": "class" if arm.strategy == "conditional" else "new-class",
            "gen_train_images": n_base if closed else None,
            "gen_train_data": f"{dataset}:train[{n_base}]" if closed else None}  # fmt: skip
