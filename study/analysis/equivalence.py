"""Equivalence analysis: how many synthetic images are worth one real image, with honest intervals.

Reads only the cells table (DESIGN 3.3, `results/<name>/cells.csv`); never imports torch.

    eq = analyse(pd.read_csv("results/digits/cells.csv"))
    eq.equivalence          # one row per synthetic (arm, base, volume): n_eff, beta, k with intervals, verdict
    eq.fit                  # one row per arm: joint-model beta and k, closed-form c1, c2, K
    write_tables(eq, Path("results/digits"))        # equivalence.csv, equivalence_fit.csv (atomic)

    python -m study.equivalence results/digits [--n-boot 1000] [--level 0.9] [--seed 0] [--write]
    (the CLI analyses the grid's `analysis.metric` from plan.json, as the report does: study.analysis.metric)

Cost: seconds on 2 CPU cores (3 arms x 3 bases x 2 volumes x 3 seeds: ~0.5 s without the bootstrap, ~4 s with
1000 replicates, which refit the curve and every closed form; `--n-boot 0` skips them).

What is estimated. A cell has y = round(test_acc * n_test) correct test predictions, n = n_base + n_extra real
and n_syn synthetic training images (totals over classes). Failed cells are listed (`failed`), counted in
`n_failed`, and left out of every fit.

1. Real learning curve, per (dataset, classifier), on the done real-only and real-extra cells of all seeds:
   every family of study.analysis.curve is fitted by binomial maximum likelihood,
       glm-logit-log       logit p = a + b log n                        (statsmodels GLM, logit link)
       bounded-logit-log   p = 1/K + (c - 1/K) expit(a + b log n)       (chance floor 1/K, fitted ceiling c <= 1)
       power-law           1 - p = e_inf + A n^-alpha
   (the three-parameter ones with >= 4 distinct sizes), and the one with the lowest AIC is used (QAIC with the
   seed scatter at equal n as its dispersion: Burnham & Anderson 2002, 6.5), not a pre-test. Goodness: deviance
   and Pearson chi2 on their df, dispersion phi = max(1, chi2/df), a lack-of-fit F test against one mean per
   distinct n, F = [(D - D_sat) / (df - df_sat)] / [D_sat / df_sat], AIC, QAIC and delta_qaic per model.
   `Curve.model` and `Curve.reason` say which model was used and why; `Curve.goodness` has every row.

2. Effective real size and exchange rate, per synthetic group g = (arm, base, volume), pooling its seeds:
       p_g = sum y / sum n_test,   n_eff = acc^-1(p_g),   beta = (n_eff - n_base) / n_syn,   k = 1 / beta.
   beta is real images gained per synthetic image: signed (< 0 when synthetic data hurts, > 1 when a
   synthetic image is worth more than a real one); k is synthetic images per real image. Interval by the
   delta method on u = log n_eff (for the GLM, u = (logit p_g - a) / b):
       Var u = (du/dl)^2 phi_arm / (sum n_test p_g (1 - p_g)) + grad_theta(u)' Sigma_theta grad_theta(u)
   with phi_arm = max(1, the arm's pooled Pearson dispersion of cells about their group means) and
   Sigma_theta the curve's quasi-binomial covariance; u +- z se maps monotonically to n_eff and beta, with
   z the Student t quantile on phi_arm's df where phi_arm > 1 (an estimated variance), normal otherwise.
   The same per cell on its own (`per_cell`, with phi_arm: one seed carries the seed-to-seed scatter). The
   bootstrap below gives percentile intervals beside them (`beta_lo_boot`, `beta_hi_boot`).
   Verdict: "gain" when beta_lo > 0 (k = 1/beta, k_lo = 1/beta_hi, k_hi = 1/beta_lo); "hurts" when
   beta_hi < 0; "no measurable gain" otherwise. k = inf unless there is a gain (with "no measurable gain"
   k_lo = 1/beta_hi still bounds it from below). "not estimable", with a `reason`, where nothing can be
   estimated (every seed failed, no usable real curve). `extrapolated` flags n_eff outside the real sizes.

3. Joint model per arm, on the real cells and the arm's synthetic cells (study.analysis.joint, .mixed):
       acc = f(n_base + (beta + u_g) n_syn),   u_g ~ Normal(0, tau^2) per generator g
   with f the real curve's family (its params refitted jointly) and u_g the quality of the generator (and its
   sample set) a cell was trained on: cells of one generator are not independent given the curve (a closed-set
   arm has one generator per seed and base, its volumes prefixes of one sample set; an open-set arm one per
   seed, shared by every base). u_g is integrated out by adaptive Gauss-Hermite quadrature; tau = 0 is the
   earlier fixed-effect model exactly. Cells are overdispersed beyond their test set (classifier noise): the
   log-likelihood is divided by phi = max(1, Pearson chi2 / df) of an unpooled fit with one rate per
   (generator, base). beta's interval is the profile-likelihood set {beta : 2 [l_hat - l_p(beta)] <= q},
   q = F(1, nu)(level) with Satterthwaite's nu for a variance with a part from few generators (chi2_1 when
   phi = 1 and tau = 0). The arm's intervals (also per base) are two-stage ones instead
   (study.analysis.two_stage: one rate per generator, then beta +- t(G-1) se about the same fitted beta, the se from
   the rates' spread and the shared curve's covariance) with fewer than 5 generators (an open-set arm on fewer than 5 seeds: tau rests on
   too few draws) or where tau is estimated > 0 (a likelihood-ratio test of tau = 0 on the 50:50 chi2_0:chi2_1
   mixture gives p < 0.45; study.analysis.joint has the rule). Chosen by measured coverage (python -m
   study.analysis.coverage, reports/coverage.md).
   Columns: `n_generators`, `few_generators` (< 5: the two-stage interval, resting on very few draws),
   `generator_sd` (tau), `generator_p` (the test of tau = 0), `interval_df` (G - 1 for the two-stage one),
   `interval_method` (which of the two),
   `curve_model`. The same model with one rate per base size
   (`fit_by_base`, sharing the curve and tau) and one per volume give likelihood-ratio heterogeneity tests
   (`heterogeneity_base_*`, `heterogeneity_volume_*`: chi2, df, p). An upper end beyond beta = 1000 is reported
   as inf. Verdict and k as in 2 (with "no measurable gain", k_lo = 1/beta_hi bounds k from below).

4. The paper's closed form (SCIENCE.md 1, study.analysis.closed_form): n_syn matching n_real+ added real images
   at a base of n_base is n_base c1^(n_base/K) (c2^(n_real+ / n_base) - 1); inverted, it is an effective size
   n_eff = n_base + n_base ln(1 + n_syn / (n_base c1^(n_base/K))) / ln c2 inside the real curve, fitted with it by
   binomial likelihood on every cell (real cells and the arm's synthetic cells), a generator effect scaling the
   gain, profile-likelihood intervals. Only ln(c1)/K is identifiable, so K is fixed to the number of classes
   (the paper's reading) and has no interval; with a single base size c1 is not reported; nor when c2 is near 1
   (almost linear in n_real+: a constant exchange rate) or has no upper bound (no measurable gain). The figure's
   n_syn*(n_real+) points (monotone interpolation of pooled accuracies in log n_syn, no extrapolation) are for
   the eye only. `c2_published` is the paper's value for the same setting and generator kind, if any
   (`published`, `published_generator`; the setting is the grid's `analysis.published`, else the dataset
   column: study.analysis.published).

5. The fitted surfaces (study.analysis.surface): per arm, one rate, a rate per base and the closed form, the
   one with the lowest QAIC answers the planner's queries (`Equivalence.surface(arm)`, `python -m study.advise`).

Bootstrap (n_boot replicates from `seed`): each done cell is redrawn as a new seed and a new test sample
would give it, a beta-binomial count about its group's pooled accuracy with its arm's dispersion phi
(plain binomial when phi = 1); then the curve and every n_eff and beta are refitted and percentile intervals
taken.

Caveat, the per-group intervals of 2 and the bootstrap: cells of one seed share a base set (and a generator), and
both the delta method and the bootstrap treat them as independent. When a seed shifts every arm alike, the shift cancels in beta and the intervals are
conservative (simulated with a shared seed effect of sd 0.15 logits: 90% intervals covered 96-99%); with
independent noise only, they cover close to nominal (tests/test_equivalence.py checks 80-97% over 40 studies). The joint model of 3
allows for the shared generator.

Where each part lives: the table's checks and groups in study.analysis.cells; 1 in .curve (the curve families'
registry `FAMILIES`); 2 in .exchange; 3 in .joint and .mixed; 4 in .closed_form and .published; 5 in .surface;
the bootstrap in .bootstrap. This module runs them per (dataset, classifier) (`analyse`) and holds the command line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis.bootstrap import bootstrap, percentiles
from study.analysis.cells import (
    ARM_KEYS,
    CURVE_KEYS,
    GROUP_KEYS,
    REQUIRED_COLUMNS,
    EquivalenceError,
    Group,
    arm_mask,
    arms_of,
    check_cells,
    status_counts,
)
from study.analysis.closed_form import closed_form, closed_form_columns, closed_form_curve
from study.analysis.curve import FAMILIES, Curve, fit_curve, logit_log, power_law
from study.analysis.exchange import VERDICTS, arm_phis, equivalence_rows, k_of, verdict_of, with_verdict
from study.analysis.joint import BETA_MAX, fit_arm, joint_rows
from study.analysis.metric import MetricError, grid_metric, metric_label, on_metric
from study.analysis.published import PublishedMatch, grid_setting, match_published
from study.analysis.surface import ArmSurface, Widening, arm_surface
from study.grid import ANALYSIS_METRICS
from study.store import atomic_write_text, read_json
from study.table import TableError, read_cells

__all__ = [  # the analysis' public names, wherever they live
    "BETA_MAX", "FAMILIES", "REQUIRED_COLUMNS", "VERDICTS", "Curve", "Equivalence", "EquivalenceError", "analyse",
    "fit_arm", "fit_curve", "k_of", "logit_log", "main", "power_law", "verdict_of", "write_tables",
]  # fmt: skip

FIT_COLUMNS = [
    *CURVE_KEYS, *ARM_KEYS, "n_done", "n_failed", "n_seeds", "beta", "beta_lo", "beta_hi", "k", "k_lo", "k_hi",
    "verdict", "a", "b", "dispersion", "reason", "n_classes", "c1", "c1_lo", "c1_hi", "c2", "c2_lo", "c2_hi", "K",
    "K_lo", "K_hi", "c2_published", "published", "published_generator", "closed_form_points",
    "closed_form_interval", "closed_form_reason",
]  # fmt: skip
EQUIVALENCE_COLUMNS = [
    *GROUP_KEYS, "n_base", "n_syn", "n_seeds", "n_failed", "acc", "acc_base", "dispersion", "n_eff", "n_eff_lo",
    "n_eff_hi", "beta", "beta_lo", "beta_hi", "beta_lo_boot", "beta_hi_boot", "k", "k_lo", "k_hi", "verdict",
    "extrapolated", "reason",
]  # fmt: skip
FAILED_COLUMNS = ["cell", *CURVE_KEYS, "seed", "arm", "arm_kind", "base_per_class", "extra_per_class",
                  "volume_per_class", "error"]  # fmt: skip
COUNT_COLUMNS = (
    "base_per_class", "extra_per_class", "volume_per_class", "n_base", "n_extra", "n_syn", "n_real_plus", "n_test",
    "n_seeds", "n_failed", "n_done", "n_cells", "n_classes", "K", "closed_form_points",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Equivalence:
    """Everything `analyse` estimated, as tidy tables (see the module docstring for the formulas)."""

    curves: dict[tuple[str, str], Curve]  # (dataset, classifier) -> real learning curve
    per_cell: pd.DataFrame  # one row per done synthetic cell
    equivalence: pd.DataFrame  # one row per synthetic (arm, base_per_class, volume_per_class)
    fit: pd.DataFrame  # one row per arm: joint model and closed form
    fit_by_base: pd.DataFrame  # one row per arm and base size: the joint model's beta at that base
    closed_form: pd.DataFrame  # the n_syn*(n_real+) points per base (status says which entered the fit)
    closed_form_params: dict[tuple, tuple[float, float, float]]  # arm key -> (ln c1, ln ln c2, K) as fitted
    failed: pd.DataFrame  # the failed cells
    notes: list[str] = field(default_factory=list)  # caveats, in the order found
    level: float = 0.9
    n_boot: int = 0
    published: dict[str, PublishedMatch] = field(default_factory=dict)  # dataset -> the published setting matched
    surfaces: dict[tuple, ArmSurface] = field(default_factory=dict)  # arm key -> its fitted surfaces (the planner)

    def surface(self, arm: str) -> ArmSurface:
        """The fitted surfaces of the arm named `arm` (study.analysis.surface): the planner's queries."""
        found = [s for key, s in self.surfaces.items() if s.arm == arm]
        if len(found) != 1:
            known = sorted({s.arm for s in self.surfaces.values()})
            raise ValueError(f"arm {arm!r} matches {len(found)} fitted surfaces (arms with one: {known})")
        return found[0]

    @property
    def curve(self) -> Curve | None:
        """The real learning curve when the table has one (dataset, classifier); see `curves` otherwise."""
        if len(self.curves) > 1:
            raise ValueError(f"the table has {len(self.curves)} curves {sorted(self.curves)}: use .curves[key]")
        return next(iter(self.curves.values()), None)

    def closed_form_curve(self, arm: str, base: int, n_real_plus, *, mix=None, dataset=None, classifier=None):
        """The fitted n_syn (total synthetic images) matching `n_real_plus` added real images (totals) at a base of
        `base` images per class: n_base c1^(n_base/K) (c2^(n_real+/n_base) - 1). NaN where it was not fitted."""
        fit = self.fit[self.fit["arm"] == arm]
        for col, value in (("mix", mix), ("dataset", dataset), ("classifier", classifier)):
            if value is not None:
                fit = fit[fit[col] == value]
        if len(fit) != 1:
            raise ValueError(f"arm {arm!r} matches {len(fit)} rows of .fit; pass mix=, dataset= or classifier=")
        params = self.closed_form_params.get(tuple(fit.iloc[0][CURVE_KEYS + ARM_KEYS]))
        if params is None:
            return np.full_like(np.asarray(n_real_plus, float), np.nan)
        return closed_form_curve(params, base, n_real_plus)


# --- one (dataset, classifier) -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GroupResult:
    """What `analyse_group` estimated for one (dataset, classifier), and the caveats it found, in order."""

    curve: Curve | None
    equivalence: pd.DataFrame
    per_cell: pd.DataFrame
    fit: pd.DataFrame
    fit_by_base: pd.DataFrame
    closed_form: pd.DataFrame
    closed_form_params: dict[tuple, tuple[float, float, float]]
    notes: list[str]
    surfaces: dict[tuple, ArmSurface] = field(default_factory=dict)


def _with_curve(g: Group) -> tuple[Group, list[str]]:
    """The group with its real learning curve fitted (or the reason there is none), and the caveats so far."""
    notes = []
    try:
        g = replace(g, curve=fit_curve(g.real_measurements, g.dataset, g.classifier, floor=g.chance))
    except EquivalenceError as exc:
        g = replace(g, curve_problem=str(exc))
        notes.append(f"{g.where}: {exc}")
    if g.curve is not None and not g.curve.increasing:
        notes.append(f"{g.where}: the real learning curve does not rise with n (b = {g.curve.params['b']:.3g})")
    if g.real[g.real["arm_kind"] == "real-extra"].empty and not g.real.empty:
        notes.append(f"{g.where}: no real-extra cells: the closed form is fitted on the real curve alone, and there "
                     "are no n_syn*(n_real+) points to draw")  # fmt: skip
    if g.done["base_per_class"].nunique() == 1:
        notes.append(f"{g.where}: single base size: the closed form's c1 is not identifiable")
    if g.done["seed"].nunique() == 1:
        notes.append(f"{g.where}: single seed: seed-to-seed variance is not estimable, intervals cover test noise")
    return g, notes


def analyse_group(g: Group, n_boot: int, rng, by_base: bool, published: PublishedMatch | None) -> GroupResult:
    """Curve, exchange rates, joint model, closed form and bootstrap of one (dataset, classifier)."""
    g, notes = _with_curve(g)
    phis = arm_phis(g)
    eq, per_cell = equivalence_rows(g, phis)
    arms = arms_of(g.cells)
    fits, per_base, arm_fits = joint_rows(g, arms, by_base) if g.curve is not None else ([], [], {})
    n_classes = float(g.cells["n_classes"].dropna().iloc[0]) if g.cells["n_classes"].notna().any() else np.nan
    closed_forms = [closed_form(g, arm, n_classes) for _, arm in arms.iterrows()]

    beta_reps = None
    if n_boot > 0 and g.usable_curve:
        beta_reps, theta = bootstrap(g, eq, phis, n_boot, rng)
        failed = np.isnan(theta).any(axis=1).mean()
        if failed > 0.05:
            notes.append(f"{g.where}: {failed:.0%} of bootstrap curve refits failed; intervals use the rest")
    if any(cf.theta is not None for cf in closed_forms):
        notes.append(f"{g.where}: closed form: K is fixed to the class count ({n_classes:g}); only ln(c1)/K is "
                     "identifiable, so K has no interval")  # fmt: skip
    if len(eq):
        lo_hi = percentiles(beta_reps, g.level) if beta_reps is not None else (np.nan, np.nan)
        eq["beta_lo_boot"], eq["beta_hi_boot"] = lo_hi

    closed = [closed_form_columns(cf, published) for cf in closed_forms]
    per_base = pd.DataFrame(per_base)
    points = [cf.points.assign(**cf.arm.to_dict()) for cf in closed_forms if cf.points is not None]
    return GroupResult(
        curve=g.curve, equivalence=eq, per_cell=per_cell, fit=_fit_table(g, arms, fits, closed),
        fit_by_base=with_verdict(per_base) if len(per_base) else per_base,
        closed_form=pd.concat(points, ignore_index=True) if points else pd.DataFrame(),
        closed_form_params={cf.key: (*cf.theta, cf.n_classes) for cf in closed_forms if cf.theta is not None},
        notes=notes, surfaces=_surfaces(g, arms, arm_fits, closed_forms),
    )  # fmt: skip


def _surfaces(g: Group, arms: pd.DataFrame, arm_fits: dict, closed_forms) -> dict[tuple, ArmSurface]:
    """Per arm with a joint fit: its fitted surfaces (study.analysis.surface), for the planner and the report."""
    out = {}
    # A closed form without an upper bound on c2 (no gain, or c1 and c2 traded off) is no surface to plan with.
    closed = {cf.key: cf.fitted for cf in closed_forms if cf.hi is not None and np.isfinite(cf.hi[1])}
    for _, arm in arms.iterrows():
        key = tuple(arm[CURVE_KEYS + ARM_KEYS])
        fitted = arm_fits.get(key)
        if fitted is None or not fitted.models:
            continue
        cells = g.done[arm_mask(g.done, arm)]
        out[key] = arm_surface(arm, fitted.models, closed.get(key), cells, g.curve, g.level,
                               widening=Widening.of(fitted.row, fitted.per_base, fitted.profile))  # fmt: skip
    return out


def _fit_table(g: Group, arms: pd.DataFrame, fits: list[dict], closed: list[dict]) -> pd.DataFrame:
    if arms.empty:
        return pd.DataFrame()
    joint = pd.DataFrame(fits) if fits else arms.assign(reason=f"no real learning curve: {g.curve_problem}")
    for col in ("beta", "beta_lo", "beta_hi"):
        if col not in joint:
            joint[col] = np.nan
    out = with_verdict(joint).merge(pd.DataFrame(closed), on=CURVE_KEYS + ARM_KEYS, how="left")
    return out.merge(status_counts(g.cells, ARM_KEYS), on=ARM_KEYS, how="left")


# --- the whole table ---------------------------------------------------------------------------------


def _frame(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Concatenate per-group tables: `columns` first, counts as (nullable) integers where they are whole."""
    parts = [p for p in parts if len(p)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    for col in COUNT_COLUMNS:
        if col in df.columns and len(df) and pd.api.types.is_numeric_dtype(df[col]):
            values = df[col].to_numpy(float)
            if np.all(np.isnan(values) | (values % 1 == 0)):
                df[col] = pd.array(np.where(np.isnan(values), 0, values).astype(np.int64), dtype="Int64")
                df.loc[np.isnan(values), col] = pd.NA
    return df[[c for c in columns if c in df.columns] + [c for c in df.columns if c not in columns]]


def analyse(
    cells: pd.DataFrame,
    n_boot: int = 1000,
    level: float = 0.9,
    seed: int = 0,
    by_base: bool = True,
    *,
    published: str | None = None,
) -> Equivalence:
    """Estimate, per synthetic arm, how many synthetic images are worth one real image (module docstring).

    `n_boot` bootstrap replicates (0 skips the bootstrap), `level` of every interval, `seed` of the
    bootstrap; `by_base=False` skips the joint model per base size (`fit_by_base`), the slowest part without
    the bootstrap. `published`: the published setting the grid names (its `analysis.published`; None: matched
    by the dataset column, study.analysis.published)."""
    if not 0.0 < level < 1.0:
        raise EquivalenceError(f"level must be in (0, 1), got {level!r}")
    if int(n_boot) != n_boot or n_boot < 0:
        raise EquivalenceError(f"n_boot must be a whole number >= 0, got {n_boot!r}")
    table, notes = check_cells(cells)
    matches = _published(table, published)
    failed = table[table["status"] == "failed"]
    if len(failed):
        notes.append(f"{len(failed)} of {len(table)} cells failed: left out of every fit, listed in .failed")
    if len(failed) == len(table):
        notes.append("every cell failed: nothing to estimate")
    rng = np.random.default_rng(seed)
    results = []
    for (dataset, classifier), cells_g in table.groupby(CURVE_KEYS, sort=True):
        results.append(analyse_group(Group(dataset, classifier, cells_g, level), int(n_boot), rng, by_base,
                                     matches.get(dataset)))  # fmt: skip
        notes += results[-1].notes
    return Equivalence(
        curves={(r.curve.dataset, r.curve.classifier): r.curve for r in results if r.curve is not None},
        per_cell=_frame([r.per_cell for r in results], ["cell"]),
        equivalence=_frame([r.equivalence for r in results], EQUIVALENCE_COLUMNS).assign(level=level),
        fit=_frame([r.fit for r in results], FIT_COLUMNS).assign(level=level),
        fit_by_base=_frame([r.fit_by_base for r in results], [*CURVE_KEYS, *ARM_KEYS, "base_per_class"]),
        closed_form=_frame([r.closed_form for r in results], [*CURVE_KEYS, *ARM_KEYS]),
        closed_form_params={k: v for r in results for k, v in r.closed_form_params.items()},
        surfaces={k: v for r in results for k, v in r.surfaces.items()},
        failed=_frame([failed[FAILED_COLUMNS]], FAILED_COLUMNS),
        notes=notes,
        level=level,
        n_boot=int(n_boot),
        published=matches,
    )


def _published(table: pd.DataFrame, setting: str | None) -> dict[str, PublishedMatch]:
    datasets = sorted(table["dataset"].unique())
    if setting is not None and len(datasets) > 1:
        raise EquivalenceError(f"published setting {setting!r} given for a table of several datasets {datasets}")
    try:
        matches = {d: match_published(d, setting) for d in datasets}
    except ValueError as exc:
        raise EquivalenceError(str(exc)) from None
    return {d: m for d, m in matches.items() if m is not None}


def write_tables(eq: Equivalence, results_dir: Path) -> None:
    """Write equivalence.csv and equivalence_fit.csv into `results_dir`, each atomically."""
    results_dir = Path(results_dir)
    atomic_write_text(results_dir / "equivalence.csv", eq.equivalence.to_csv(index=False))
    atomic_write_text(results_dir / "equivalence_fit.csv", eq.fit.to_csv(index=False))


# --- command line ------------------------------------------------------------------------------------


def _show(df: pd.DataFrame, columns: list[str]) -> str:
    if df.empty:
        return "  (none)"
    return df[[c for c in columns if c in df.columns]].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.equivalence", description=__doc__.split("\n")[0])
    parser.add_argument("results_dir", type=Path, help="a results/<name>/ directory holding cells.csv")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (0: delta/Wald only)")
    parser.add_argument("--level", type=float, default=0.9, help="confidence level of every interval")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--write", action="store_true", help="also write equivalence.csv and equivalence_fit.csv")
    args = parser.parse_args(argv)
    path = args.results_dir / "cells.csv"
    try:
        cells = read_cells(path)
    except FileNotFoundError:
        print(f"error: {path}: no cells table (run `python -m study.run GRID.yaml` first)", file=sys.stderr)
        return 2
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        grid = (read_json(args.results_dir / "plan.json", EquivalenceError) or {}).get("grid")
        metric = grid_metric(grid, cells)  # the grid's analysis.metric, as the report analyses it
        eq = analyse(on_metric(cells, metric), n_boot=args.n_boot, level=args.level, seed=args.seed,
                     published=grid_setting(grid))  # fmt: skip
    except (EquivalenceError, MetricError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    if metric != "test_acc":
        print(f"Measured on {metric_label(metric)} (analysis.metric: {metric}): `acc` is its proportion over its "
              f"effective binomial trials ({ANALYSIS_METRICS[metric].trials}; study.analysis.metric)\n")  # fmt: skip
    _print(eq)
    if args.write:
        write_tables(eq, args.results_dir)
        print(f"wrote {args.results_dir / 'equivalence.csv'} and {args.results_dir / 'equivalence_fit.csv'}")
    return 0


def _print(eq: Equivalence) -> None:
    pct = f"{eq.level:.0%}"
    for curve in eq.curves.values():
        print(f"Real learning curve {curve.dataset}/{curve.classifier}: {curve.model} ({curve.reason})")
        print(_show(curve.goodness, ["model", "cells", "deviance", "df", "dispersion", "lof_F", "lof_p", "aic"]))
    print(f"\nEquivalence per arm, base and volume ({pct} intervals; k = synthetic images per real image)")
    print(_show(eq.equivalence, ["arm", "mix", "base_per_class", "volume_per_class", "n_seeds", "n_failed", "acc",
                                 "n_eff", "beta", "beta_lo", "beta_hi", "k", "k_lo", "k_hi", "verdict"]))  # fmt: skip
    print(f"\nJoint model and closed form per arm ({pct} intervals)")
    print(_show(eq.fit, ["arm", "mix", "beta", "beta_lo", "beta_hi", "k", "k_lo", "k_hi", "verdict", "c1", "c2",
                         "c2_lo", "c2_hi", "K", "c2_published"]))  # fmt: skip
    reasons = eq.fit[["arm", "reason", "closed_form_reason"]] if len(eq.fit) else pd.DataFrame()
    for row in reasons.itertuples(index=False):
        for text in (row.reason, row.closed_form_reason):
            if isinstance(text, str) and text:
                print(f"  {row.arm}: {text}")
    if len(eq.failed):
        print(f"\nFailed cells ({len(eq.failed)})")
        print(_show(eq.failed, ["cell", "error"]))
    for note in eq.notes:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
