"""Equivalence analysis: how many synthetic images are worth one real image, with honest intervals.

Reads only the cells table (DESIGN 3.3, `results/<name>/cells.csv`); never imports torch.

    eq = analyse(pd.read_csv("results/digits/cells.csv"))
    eq.equivalence          # one row per synthetic (arm, base, volume): n_eff, beta, k with intervals, verdict
    eq.fit                  # one row per arm: joint-model beta and k, closed-form c1, c2, K
    write_tables(eq, Path("results/digits"))        # equivalence.csv, equivalence_fit.csv (atomic)

    python -m study.equivalence results/digits [--n-boot 1000] [--level 0.9] [--seed 0] [--write]

Cost: seconds on 2 CPU cores (3 arms x 3 bases x 2 volumes x 3 seeds: ~0.5 s without the bootstrap, ~4 s with
1000 replicates, which refit the curve and every closed form; `--n-boot 0` skips them).

What is estimated. A cell has y = round(test_acc * n_test) correct test predictions, n = n_base + n_extra real
and n_syn synthetic training images (totals over classes). Failed cells are listed (`failed`), counted in
`n_failed`, and left out of every fit.

1. Real learning curve, per (dataset, classifier), on the done real-only and real-extra cells of all seeds:
       y ~ Binomial(n_test, p),   logit p = a + b log n                 (statsmodels GLM, logit link)
   Goodness: deviance and Pearson chi2 on their df, dispersion phi = max(1, chi2/df) (seeds add variance beyond
   the binomial test noise, so standard errors are quasi-binomial), and a lack-of-fit F test against one
   mean per distinct n (the scatter of seeds at one n is the pure error):
       F = [(D - D_sat) / (df - df_sat)] / [D_sat / df_sat].
   With >= 4 distinct sizes the saturating power law in error is fitted beside it,
       1 - p = e_inf + A n^-alpha                       (scipy curve_fit, weights 1/Var p, bounded params)
   and is used instead when the GLM's lack of fit is significant (p < 0.05) and the power law's is smaller.
   `Curve.model` and `Curve.reason` say which model was used and why; `Curve.goodness` has both rows.

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

3. Joint model per arm, on the real cells and the arm's synthetic cells (per base size in `fit_by_base`):
       logit p = a + b log(n + beta n_syn)
   beta by profile likelihood: a statsmodels GLM in (a, b) at each beta (any beta > -min n/n_syn, so
   negative values are allowed), maximised by a grid and Brent's method; the interval is the
   likelihood-ratio set {beta : [D(beta) - D(beta_hat)] / phi <= q} with q = chi2_1(level), or
   F(1, N-3)(level) when the dispersion phi = Pearson chi2 / (N - 3) exceeds 1. An upper end beyond
   beta = 1000 is reported as inf. Verdict and k as in 2.

4. The paper's closed form (SCIENCE.md 1). For each base and each real-extra size n_real+, n_syn* is the
   synthetic amount whose pooled accuracy matches the pooled real-extra accuracy, by monotone
   interpolation in log n_syn (isotonic fit of the arm's accuracies over volumes, then linear in
   log n_syn; no extrapolation: targets outside the volumes' range are kept in `closed_form` with their
   status and left out of the fit). Then, by nonlinear least squares on the log scale,
       log(n_syn* / n_base) = (n_base / K) ln c1 + ln(c2^(n_real+ / n_base) - 1).
   Only ln(c1)/K is identifiable, so K is fixed to the number of classes (the paper's reading) and has no
   interval; with a single base size c1 (how the synthetic need grows with the base) is not identifiable
   and only c2 is reported; nor is it when c2 < 1.01, where the points are almost linear in n_real+ (a
   constant exchange rate) and c1 runs off to make up for ln c2 -> 0. Intervals: bootstrap percentiles (Wald
   from the least-squares covariance when n_boot = 0). `c2_published` is the paper's value for the same
   dataset and generator kind, if any. Linear interpolation in log n_syn bends the points slightly, so use
   volumes no more than ~2x apart.

Bootstrap (n_boot replicates from `seed`): each done cell is redrawn as a new seed and a new test sample
would give it, a beta-binomial count about its group's pooled accuracy with its arm's dispersion phi
(plain binomial when phi = 1); then the curve, every n_eff and beta, and the closed form are refitted and
percentile intervals taken.

Caveat, both intervals: cells of one seed share a base set, and both the delta method and the bootstrap treat
them as independent. When a seed shifts every arm alike, the shift cancels in beta and the intervals are
conservative (simulated with a shared seed effect of sd 0.15 logits: 90% intervals covered 96-99%); with
independent noise only, they cover close to nominal (tests/test_equivalence.py checks 80-97% over 50 studies).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, special, stats
from scipy.optimize import isotonic_regression

from study.store import atomic_write_text

REQUIRED_COLUMNS = (
    "cell", "dataset", "seed", "base_per_class", "n_base", "arm", "arm_kind", "strategy", "extra_per_class",
    "n_extra", "volume_per_class", "n_syn", "classifier", "test_acc", "n_test", "status", "error",
)  # fmt: skip
REAL_KINDS = ("real-only", "real-extra")
SYNTHETIC_KINDS = ("closed", "open")
CURVE_KEYS = ["dataset", "classifier"]
ARM_KEYS = ["arm", "arm_kind", "strategy", "mix"]  # what an arm is: its name, generator kind, sampling and mixing
GROUP_KEYS = CURVE_KEYS + ARM_KEYS + ["base_per_class", "volume_per_class"]
VERDICTS = ("gain", "no measurable gain", "hurts", "not estimable")  # the values of every `verdict` column
BETA_MAX = 1000.0  # joint-model upper ends beyond this many real images per synthetic image are reported as inf
LACK_OF_FIT_P = 0.05
C2_LINEAR = 1.01  # below this c2^x - 1 is within 1% of linear for x <= 2: c1 is then not identifiable

# The paper's exchange rates c2 (SCIENCE.md 1; from a secondary source, approximate).
PUBLISHED_C2 = pd.DataFrame(
    [
        ("cifar10", "CIFAR-10", "closed", "EDM", 2.53),
        ("cifar10", "CIFAR-10", "open", "Stable Diffusion", 2.93),
        ("bloodmnist", "BloodMNIST", "closed", "EDM", 3.88),
        ("imagenet100", "ImageNet-100", "closed", "DiT-XL/2", 37.84),
        ("imagenet100", "ImageNet-100", "open", "Stable Diffusion", 1.68),
    ],
    columns=["key", "dataset", "arm_kind", "generator", "c2"],
)


class EquivalenceError(ValueError):
    """A cells table that cannot be analysed: the message names the column, the cells and what was expected."""


# --- curve families ----------------------------------------------------------------------------------
# Each family maps n to accuracy, and logit-accuracy back to log n. The inverses broadcast over their
# parameters, so one call serves every bootstrap replicate.


def logit_log(n, a: float, b: float):
    """acc(n) = expit(a + b log n): the GLM's real learning curve."""
    return special.expit(a + b * np.log(n))


def power_law(n, e_inf: float, amp: float, alpha: float):
    """acc(n) = 1 - e_inf - amp n^-alpha: error falls as a power of n towards the floor e_inf."""
    return 1.0 - e_inf - amp * np.power(n, -alpha)


def _log_n_logit_log(ell, a, b):
    return (ell - a) / b


def _log_n_power_law(ell, e_inf, amp, alpha):
    gap = 1.0 - e_inf - special.expit(ell)  # how far below the asymptote; <= 0 is beyond the curve's reach
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, -np.log(np.where(gap > 0, gap, 1.0) / amp) / alpha, np.inf)


FAMILIES: dict[str, tuple[Callable, Callable, tuple[str, ...]]] = {
    "glm-logit-log": (logit_log, _log_n_logit_log, ("a", "b")),
    "power-law": (power_law, _log_n_power_law, ("e_inf", "amp", "alpha")),
}


@dataclass(frozen=True, eq=False)
class Curve:
    """The real learning curve of one (dataset, classifier): which model, why, how well it fits."""

    dataset: str
    classifier: str
    model: str  # "glm-logit-log" | "power-law"
    reason: str  # why this model was used
    params: dict[str, float]
    cov: np.ndarray  # quasi-binomial covariance of the params (dispersion applied)
    dispersion: float  # phi = max(1, Pearson chi2 / df)
    goodness: pd.DataFrame  # one row per model fitted: deviance, df, Pearson chi2, lack-of-fit F test, AIC
    points: pd.DataFrame  # the real cells it was fitted on: seed, n, correct, n_test, acc
    increasing: bool  # accuracy rises with n (else effective sizes are undefined)

    @property
    def theta(self) -> np.ndarray:
        return np.array(list(self.params.values()))

    @property
    def n_range(self) -> tuple[float, float]:
        return float(self.points["n"].min()), float(self.points["n"].max())

    def acc(self, n):
        """Fitted accuracy at n real training images."""
        return FAMILIES[self.model][0](np.asarray(n, float), *self.theta)

    def n(self, acc):
        """The inverse: real training images needed for accuracy `acc` (inf beyond the curve's asymptote)."""
        return np.exp(self.log_n(special.logit(np.asarray(acc, float))))

    def log_n(self, ell, theta=None):
        """log n at logit-accuracy `ell`; `theta` (rows of parameters) broadcasts against `ell`."""
        theta = self.theta if theta is None else theta
        return FAMILIES[self.model][1](ell, *(theta[..., j] for j in range(theta.shape[-1])))


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
        row = fit.iloc[0]
        params = self.closed_form_params.get(tuple(row[CURVE_KEYS + ARM_KEYS]))
        x = np.asarray(n_real_plus, float)
        if params is None:
            return np.full_like(x, np.nan)
        ln_c1, lnln_c2, classes = params
        n_base = base * classes
        return n_base * np.exp(_closed_form_log(n_base / classes, x / n_base, ln_c1, lnln_c2))


# --- the table ---------------------------------------------------------------------------------------


def _cells_named(t: pd.DataFrame, mask) -> str:
    names = t.loc[mask, "cell"].astype(str).tolist()
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_cells(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Validate a cells table and return a normalised copy (with `correct`, `n_real`, `classes`) and notes.

    Raises EquivalenceError naming the missing columns, or the column, the cells and what was expected."""
    if not isinstance(cells, pd.DataFrame):
        raise EquivalenceError(f"expected a pandas DataFrame of cells, got {type(cells).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in cells.columns]
    if missing:
        raise EquivalenceError(f"cells table: missing column(s) {missing}; the table needs {list(REQUIRED_COLUMNS)}")
    if cells.empty:
        raise EquivalenceError("cells table: no rows (no cell has finished or failed yet)")
    t = cells.copy().reset_index(drop=True)
    notes = []
    real_row = t["arm_kind"].isin(REAL_KINDS)
    if "mix" not in t.columns:
        t["mix"] = np.where(real_row, "none", "uniform")
        notes.append("no `mix` column: every synthetic arm is taken as uniform mixing")
    for col in ("cell", "dataset", "classifier", "arm", "arm_kind", "status", "strategy", "mix", "error"):
        t[col] = t[col].fillna("").astype(str)
    for col, allowed in (("status", ("done", "failed")), ("arm_kind", REAL_KINDS + SYNTHETIC_KINDS)):
        bad = ~t[col].isin(allowed)
        if bad.any():
            raise EquivalenceError(
                f"cells table: column {col!r} has {sorted(set(t.loc[bad, col]))} (cells {_cells_named(t, bad)}); "
                f"expected one of {list(allowed)}"
            )
    dup = t["cell"].duplicated(keep=False)
    if dup.any():
        raise EquivalenceError(f"cells table: cell names repeat ({_cells_named(t, dup)}); expected one row per cell")

    numeric = ("base_per_class", "n_base", "extra_per_class", "n_extra", "volume_per_class", "n_syn")
    for col in (*numeric, "test_acc", "n_test"):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype(float)
    # Sizes an arm does not use may be blank; they are zero.
    for cols, uses in (
        (("extra_per_class", "n_extra"), ["real-extra"]),
        (("volume_per_class", "n_syn"), SYNTHETIC_KINDS),
    ):
        for col in cols:
            t.loc[~t["arm_kind"].isin(uses), col] = t.loc[~t["arm_kind"].isin(uses), col].fillna(0.0)

    done = t["status"] == "done"
    _check_done_rows(t, done)
    t["classes"] = t["n_base"] / t["base_per_class"]
    per_dataset = t[done].groupby("dataset")["classes"].nunique()
    if (per_dataset > 1).any():
        ds = per_dataset[per_dataset > 1].index[0]
        raise EquivalenceError(
            f"cells table: n_base / base_per_class differs between done cells of dataset {ds!r}; "
            "expected one class count per dataset"
        )
    # Failed cells may lack sizes (the class count was unknown); take the dataset's class count.
    t["classes"] = t["dataset"].map(t[done].groupby("dataset")["classes"].first())
    for total, per_class in (
        ("n_base", "base_per_class"),
        ("n_extra", "extra_per_class"),
        ("n_syn", "volume_per_class"),
    ):
        t[total] = t[total].fillna(t[per_class] * t["classes"])
    t["n_real"] = t["n_base"] + t["n_extra"]
    t["correct"] = np.round(t["test_acc"] * t["n_test"])
    return t, notes


def _check_done_rows(t: pd.DataFrame, done: pd.Series) -> None:
    def need(mask, column: str, expected: str) -> None:
        mask = done & mask
        if mask.any():
            raise EquivalenceError(
                f"cells table: column {column!r} must be {expected} in done cells (bad: {_cells_named(t, mask)})"
            )

    need(t["seed"].isna(), "seed", "given")
    for col in ("base_per_class", "n_base", "extra_per_class", "n_extra", "volume_per_class", "n_syn"):
        need(t[col].isna(), col, "a number")
    need(~t["test_acc"].between(0.0, 1.0), "test_acc", "an accuracy in [0, 1]")
    need(~(t["n_test"] > 0) | (t["n_test"] % 1 != 0), "n_test", "a positive whole number")
    need(~(t["base_per_class"] > 0) | ~(t["n_base"] > 0), "base_per_class", "positive (with n_base > 0)")
    need((t["n_base"] % t["base_per_class"]) != 0, "n_base", "a whole multiple of base_per_class (the class count)")
    classes = t["n_base"] / t["base_per_class"]
    need(t["arm_kind"].isin(SYNTHETIC_KINDS) & ~(t["n_syn"] > 0), "n_syn", "positive for synthetic arms")
    need((t["arm_kind"] == "real-extra") & ~(t["n_extra"] > 0), "n_extra", "positive for real-extra cells")
    need(t["n_syn"] != t["volume_per_class"] * classes, "n_syn", "volume_per_class x classes (n_base / base_per_class)")
    need(
        t["n_extra"] != t["extra_per_class"] * classes, "n_extra", "extra_per_class x classes (n_base / base_per_class)"
    )


# --- the real learning curve -------------------------------------------------------------------------


def _clip(p):
    return np.clip(p, 1e-12, 1.0 - 1e-12)


def _deviance(y, m, mu) -> float:
    return float(sm.families.Binomial().deviance(y / m, _clip(mu), var_weights=m))


def _loglike(y, m, mu) -> float:
    return float(sm.families.Binomial().loglike(y / m, _clip(mu), var_weights=m))


def _pearson(y, m, mu) -> float:
    mu = _clip(mu)
    return float(np.sum((y - m * mu) ** 2 / (m * mu * (1.0 - mu))))


def _fit_glm(x, y, m, start=None):
    """Binomial GLM with logit link of correct counts on [1, x]."""
    design = np.column_stack([np.ones_like(x), x])
    return sm.GLM(np.column_stack([y, m - y]), design, family=sm.families.Binomial()).fit(start_params=start)


def _fit_power_law(n, y, m, start=None):
    """Least squares of accuracies on the power law with binomial weights; (params, unscaled cov) or None."""
    acc = y / m
    p = (y + 0.5) / (m + 1.0)  # keeps the weight finite for a perfect or zero score
    sigma = np.sqrt(p * (1.0 - p) / m)
    if start is None:
        err = 1.0 - acc
        e0 = 0.5 * max(err.min(), 1e-6)
        slope, icpt = np.polyfit(np.log(n), np.log(np.maximum(err - e0, 1e-9)), 1)
        start = [e0, float(np.exp(icpt)), float(np.clip(-slope, 0.05, 5.0))]
    try:
        popt, pcov = optimize.curve_fit(
            power_law, n, acc, p0=start, sigma=sigma, absolute_sigma=True,
            bounds=([0.0, 1e-12, 1e-3], [1.0, np.inf, 10.0]), max_nfev=2000,
        )  # fmt: skip
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    if not np.all(np.isfinite(pcov)):
        return None
    return popt, pcov


def _pure_error(n, y, m) -> tuple[float, int]:
    """Deviance and df of one pooled mean per distinct n: the seed-to-seed scatter, free of any curve shape."""
    _, idx = np.unique(n, return_inverse=True)
    mu = np.bincount(idx, y) / np.bincount(idx, m)
    return _deviance(y, m, mu[idx]), len(n) - idx.max() - 1


def _goodness(model: str, y, m, mu, k: int, d_sat: float, df_sat: int) -> dict:
    dev, df = _deviance(y, m, mu), len(y) - k
    chi2 = _pearson(y, m, mu)
    row = {"model": model, "params": k, "cells": len(y), "deviance": dev, "df": df, "pearson_chi2": chi2,
           "dispersion": chi2 / df if df > 0 else np.nan, "aic": -2.0 * _loglike(y, m, mu) + 2 * k,
           "lof_F": np.nan, "lof_df1": df - df_sat, "lof_df2": df_sat, "lof_p": np.nan}  # fmt: skip
    if df_sat > 0 and df - df_sat > 0 and d_sat > 0:
        row["lof_F"] = ((dev - d_sat) / (df - df_sat)) / (d_sat / df_sat)
        row["lof_p"] = float(stats.f.sf(row["lof_F"], df - df_sat, df_sat))
    return row


def fit_curve(real: pd.DataFrame, dataset: str = "", classifier: str = "") -> Curve:
    """Fit the real learning curve to done real cells (columns n_real, correct, n_test, seed)."""
    n = real["n_real"].to_numpy(float)
    y, m = real["correct"].to_numpy(float), real["n_test"].to_numpy(float)
    sizes = np.unique(n)
    if len(sizes) == 0:
        raise EquivalenceError("no done real-only or real-extra cells: there is no real learning curve")
    if len(sizes) < 2:
        raise EquivalenceError(
            f"real cells cover one training size only (n = {sizes[0]:g}): "
            "the real learning curve needs real-extra cells or more base sizes"
        )
    d_sat, df_sat = _pure_error(n, y, m)
    glm = _fit_glm(np.log(n), y, m)
    rows = [_goodness("glm-logit-log", y, m, glm.mu, 2, d_sat, df_sat)]
    power = _fit_power_law(n, y, m) if len(sizes) >= 4 else None
    if power is not None:
        rows.append(_goodness("power-law", y, m, power_law(n, *power[0]), 3, d_sat, df_sat))
    goodness = pd.DataFrame(rows)
    p_glm = rows[0]["lof_p"]
    p_pow = rows[1]["lof_p"] if power is not None else np.nan
    model = "glm-logit-log"
    if np.isnan(p_glm):
        reason = "GLM: lack of fit not testable (no size with several seeds, or 2 sizes)"
    elif p_glm >= LACK_OF_FIT_P:
        reason = f"GLM: no significant lack of fit (F = {rows[0]['lof_F']:.2f}, p = {p_glm:.2g})"
    elif power is not None and p_pow > p_glm:
        model = "power-law"
        reason = f"power law: the GLM lacks fit (p = {p_glm:.2g}) and the power law fits better (p = {p_pow:.2g})"
    else:
        why = (
            "the power law needs >= 4 sizes" if len(sizes) < 4
            else "the power law did not converge" if power is None
            else "the power law does not fit better"
        )  # fmt: skip
        reason = f"GLM kept although it lacks fit (p = {p_glm:.2g}): {why}; its dispersion widens the intervals"
    row = goodness[goodness["model"] == model].iloc[0]
    dispersion = max(1.0, float(row["dispersion"])) if np.isfinite(row["dispersion"]) else 1.0
    if model == "glm-logit-log":
        theta, cov = np.asarray(glm.params), np.asarray(glm.cov_params())
    else:
        theta, cov = power
    points = pd.DataFrame({"seed": real["seed"].to_numpy(), "n": n, "correct": y, "n_test": m, "acc": y / m})
    return Curve(
        dataset=dataset, classifier=classifier, model=model, reason=reason,
        params=dict(zip(FAMILIES[model][2], map(float, theta), strict=True)), cov=cov * dispersion,
        dispersion=dispersion, goodness=goodness, points=points,
        increasing=bool(theta[1] > 0) if model == "glm-logit-log" else True,
    )  # fmt: skip


def _refit_curve(curve: Curve, y) -> np.ndarray:
    """The same model refitted to new correct counts (a bootstrap replicate), started at the fitted params."""
    n, m = curve.points["n"].to_numpy(), curve.points["n_test"].to_numpy()
    if curve.model == "glm-logit-log":
        try:
            return np.asarray(_fit_glm(np.log(n), y, m, start=curve.theta).params)
        except (ValueError, np.linalg.LinAlgError):
            return np.full(2, np.nan)
    power = _fit_power_law(n, y, m, start=curve.theta)
    return np.full(3, np.nan) if power is None else power[0]


# --- effective size, beta and k ----------------------------------------------------------------------


def _pooled_logit(y, m):
    """Logit of pooled accuracy and its binomial variance per unit dispersion (0 or n_test correct: +0.5 rule)."""
    edge = (y <= 0) | (y >= m)
    p = np.where(edge, (y + 0.5) / (m + 1.0), y / np.where(m > 0, m, 1.0))
    return special.logit(p), 1.0 / (m * p * (1.0 - p))


def _log_n_eff(curve: Curve, y, m, phi):
    """u = log n_eff at pooled counts (y, m) and its delta-method standard error (dispersion phi on y)."""
    ell, var1 = _pooled_logit(np.asarray(y, float), np.asarray(m, float))
    u = curve.log_n(ell)
    h = 1e-4
    theta = curve.theta
    with np.errstate(invalid="ignore"):  # inf - inf beyond a power law's asymptote: no interval there
        du_dell = (curve.log_n(ell + h) - curve.log_n(ell - h)) / (2 * h)
        grad = []
        for j in range(len(theta)):
            step = np.zeros_like(theta)
            step[j] = 1e-6 * max(1.0, abs(theta[j]))
            grad.append((curve.log_n(ell, theta + step) - curve.log_n(ell, theta - step)) / (2 * step[j]))
        grad = np.array(grad)  # (params, groups)
        var = du_dell**2 * phi * var1 + np.einsum("ig,ij,jg->g", grad, curve.cov, grad)
    return u, np.sqrt(var)


def verdict_of(beta_lo, beta_hi) -> np.ndarray:
    """gain (beta_lo > 0) | hurts (beta_hi < 0) | no measurable gain | not estimable (an end is NaN)."""
    lo, hi = np.asarray(beta_lo, float), np.asarray(beta_hi, float)
    known = ~np.isnan(lo) & ~np.isnan(hi)
    gain, unsure, hurts, none = VERDICTS
    return np.select([known & (lo > 0), known & (hi < 0), known], [gain, hurts, unsure], none).astype(object)


def k_of(beta, beta_lo, beta_hi, verdict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k = 1/beta synthetic images per real image, with its interval; inf unless there is a gain."""
    beta, lo, hi = (np.asarray(v, float) for v in (beta, beta_lo, beta_hi))
    verdict = np.asarray(verdict, dtype=object)
    gain, unsure = verdict == "gain", verdict == "no measurable gain"
    with np.errstate(divide="ignore"):
        k = np.where(gain, 1.0 / beta, np.inf)
        k_lo = np.where(gain | (unsure & (hi > 0)), 1.0 / hi, np.inf)  # 1/inf = 0: no lower bound on k
        k_hi = np.where(gain, 1.0 / lo, np.inf)
    none = verdict == "not estimable"
    return np.where(none, np.nan, k), np.where(none, np.nan, k_lo), np.where(none, np.nan, k_hi)


def _beta_columns(curve: Curve | None, y, m, phi, n_base, n_syn, z) -> dict:
    """n_eff and beta with their delta-method intervals (u +- z se), for rows of pooled counts."""
    size = len(np.atleast_1d(y))
    if curve is None or not curve.increasing:
        nan = np.full(size, np.nan)
        return {"n_eff": nan, "n_eff_lo": nan, "n_eff_hi": nan, "beta": nan, "beta_lo": nan, "beta_hi": nan}
    u, se = _log_n_eff(curve, y, m, phi)
    with np.errstate(over="ignore", invalid="ignore"):
        n_eff, lo, hi = np.exp(u), np.exp(u - z * se), np.exp(u + z * se)
        lo, hi = np.where(np.isfinite(se), lo, np.nan), np.where(np.isfinite(se), hi, np.nan)
    return {"n_eff": n_eff, "n_eff_lo": lo, "n_eff_hi": hi, "beta": (n_eff - n_base) / n_syn,
            "beta_lo": (lo - n_base) / n_syn, "beta_hi": (hi - n_base) / n_syn}  # fmt: skip


def _with_verdict(cols: dict) -> dict:
    cols["verdict"] = verdict_of(cols["beta_lo"], cols["beta_hi"])
    cols["k"], cols["k_lo"], cols["k_hi"] = k_of(cols["beta"], cols["beta_lo"], cols["beta_hi"], cols["verdict"])
    return cols


def _dispersion_within(cells: pd.DataFrame, keys: list[str]) -> tuple[float, int]:
    """Pooled Pearson chi2 of cells about their group's pooled accuracy, and its df (cells - groups)."""
    if cells.empty:
        return 0.0, 0
    g = cells.groupby(keys, dropna=False)
    pbar = _clip(g["correct"].transform("sum") / g["n_test"].transform("sum"))
    chi2 = ((cells["correct"] - cells["n_test"] * pbar) ** 2 / (cells["n_test"] * pbar * (1 - pbar))).sum()
    return float(chi2), len(cells) - g.ngroups


def _phi(chi2: float, df: int) -> float:
    return max(1.0, chi2 / df) if df > 0 else 1.0


# --- joint model -------------------------------------------------------------------------------------


def _no_joint_fit(n_cells: int, reason: str) -> dict:
    return {"beta": np.nan, "beta_lo": np.nan, "beta_hi": np.nan, "a": np.nan, "b": np.nan, "dispersion": np.nan,
            "n_cells": n_cells, "reason": reason}  # fmt: skip


def fit_joint(n_real, n_syn, y, m, level: float) -> dict:
    """Profile likelihood over beta in logit p = a + b log(n_real + beta n_syn), with a likelihood-ratio interval."""
    n_real, n_syn, y, m = (np.asarray(v, float) for v in (n_real, n_syn, y, m))
    syn = n_syn > 0
    out = _no_joint_fit(len(y), "")
    if not syn.any() or len(np.unique(n_real[~syn])) < 2 or len(y) <= 3:
        out["reason"] = "needs done synthetic cells and real cells at >= 2 sizes"
        return out
    # beta = exp(s) - r keeps n_real + beta n_syn > 0 for every cell (the profile explodes at s -> -inf).
    r = float(np.min(n_real[syn] / n_syn[syn]))
    state = {"start": None}

    def deviance(s: float) -> float:
        x = np.log(n_real + (np.exp(s) - r) * n_syn)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # far-off betas are meant to fit badly
                res = _fit_glm(x, y, m, start=state["start"])
        except (ValueError, np.linalg.LinAlgError):
            return np.inf
        if not np.isfinite(res.deviance):
            return np.inf
        state["start"] = res.params
        state["res"] = res
        return float(res.deviance)

    s_min, s_mid, s_max = np.log(r) - 14.0, np.log(r) - 3.0, np.log(r + BETA_MAX)
    grid = np.concatenate([np.linspace(s_min, s_mid, 3, endpoint=False), np.linspace(s_mid, s_max, 16)])
    dev = np.array([deviance(s) for s in grid])
    if not np.isfinite(dev).any():
        out["reason"] = "the GLM failed at every beta"
        return out
    i = int(np.nanargmin(dev))
    lo_s, hi_s = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    state["start"] = None
    best = optimize.minimize_scalar(deviance, bounds=(lo_s, hi_s), method="bounded", options={"xatol": 1e-4})
    s_hat, d_hat = float(best.x), deviance(float(best.x))
    res = state["res"]
    df = len(y) - 3
    phi = max(1.0, float(res.pearson_chi2) / df)
    q = phi * (float(stats.f.ppf(level, 1, df)) if phi > 1.0 else float(stats.chi2.ppf(level, 1)))

    def excess(s: float) -> float:
        return deviance(s) - d_hat - q

    def end(direction: int) -> float:
        # Walk the grid outward from the optimum to the first point outside the set, then solve between.
        inner = s_hat
        for s in grid[grid < s_hat][::-1] if direction < 0 else grid[grid > s_hat]:
            if excess(s) > 0:
                return optimize.root_scalar(excess, bracket=sorted((s, inner)), method="toms748", xtol=1e-4).root
            inner = s
        return -np.inf if direction < 0 else np.inf

    deviance(s_hat)  # leave the fitted (a, b) at the optimum
    if state["res"].params[1] <= 0:  # accuracy does not rise with n: no amount of real data matches a gain
        out["reason"] = "the fitted real learning curve does not rise with n (b <= 0): beta is not identifiable"
        return out
    s_lo, s_hi = end(-1), end(+1)
    deviance(s_hat)
    out.update(beta=np.exp(s_hat) - r, beta_lo=np.exp(s_lo) - r, beta_hi=np.exp(s_hi) - r, dispersion=phi,
               a=float(state["res"].params[0]), b=float(state["res"].params[1]))  # fmt: skip
    if np.isinf(s_hi):
        out["reason"] = f"upper end beyond beta = {BETA_MAX:g}: reported as inf"
        if s_hat >= s_max - 1e-3:  # the likelihood still rises at the edge: no finite estimate
            out["beta"] = np.inf
    if np.isinf(s_lo):
        out["reason"] = f"lower end at the edge beta = {-r:.4g}, where some cell's effective size reaches 0"
    return out


# --- the paper's closed form -------------------------------------------------------------------------


def _closed_form_log(base_over_k, x, ln_c1, lnln_c2):
    """log(n_syn / n_base) = (n_base/K) ln c1 + ln(c2^x - 1), x = n_real+ / n_base, ln c2 = exp(lnln_c2)."""
    with np.errstate(over="ignore"):  # trial c2 far too large: an infinite residual that the fit steps away from
        return base_over_k * ln_c1 + np.log(np.expm1(np.exp(lnln_c2) * x))


def _invert_monotone(log_v, fit, target) -> tuple[float, str]:
    """log n_syn where `fit` (isotonic accuracies over increasing log volumes `log_v`) first reaches `target`."""
    starts = np.r_[0, np.flatnonzero(np.diff(fit) > 0) + 1]  # blocks of equal fitted accuracy
    ends = np.r_[starts[1:] - 1, len(fit) - 1]
    levels = fit[starts]
    if target < levels[0]:
        return np.nan, "below range"
    if target > levels[-1]:
        return np.nan, "above range"
    i = int(np.searchsorted(levels, target, side="left"))
    if i == 0:
        return float(log_v[starts[0]]), "ok"
    # Linear in log n_syn from the end of the block below the target to the start of the block reaching it.
    frac = (target - levels[i - 1]) / (levels[i] - levels[i - 1])
    x0, x1 = log_v[ends[i - 1]], log_v[starts[i]]
    return float(x0 + frac * (x1 - x0)), "ok"


@dataclass(frozen=True, eq=False)
class _PointLayout:
    """Which pooled groups of one arm feed each n_syn*(n_real+) point; built once, reused by every replicate."""

    frame: pd.DataFrame  # one row per point: base_per_class, n_base, extra_per_class, n_real_plus
    target: np.ndarray  # per point: its row in the pooled real-extra table (the accuracy to match)
    base: np.ndarray  # per point: its entry in `volumes`
    volumes: list[tuple[np.ndarray, np.ndarray]]  # per base: pooled synthetic rows by increasing n_syn, log n_syn
    weights: np.ndarray  # test images behind each pooled synthetic accuracy

    @classmethod
    def build(cls, real_extra: pd.DataFrame, synthetic: pd.DataFrame) -> _PointLayout:
        rows, target, base, volumes = [], [], [], []
        for b, syn in synthetic.reset_index(drop=True).groupby("base_per_class", sort=True):
            syn = syn.sort_values("n_syn")
            extra = real_extra.reset_index(drop=True)
            extra = extra[extra["base_per_class"] == b]
            if extra.empty:
                continue
            for i, t in extra.iterrows():
                rows.append((b, t["n_base"], t["extra_per_class"], t["n_extra"]))
                target.append(i)
                base.append(len(volumes))
            volumes.append((syn.index.to_numpy(), np.log(syn["n_syn"].to_numpy(float))))
        frame = pd.DataFrame(rows, columns=["base_per_class", "n_base", "extra_per_class", "n_real_plus"])
        weights = synthetic["n_test"].to_numpy(float)
        return cls(frame, np.array(target, int), np.array(base, int), volumes, weights)

    def points(self, real_p, syn_p) -> tuple[np.ndarray, np.ndarray]:
        """n_syn* and status per point, from pooled real-extra and synthetic accuracies."""
        fits = [isotonic_regression(syn_p[rows], weights=self.weights[rows]).x for rows, _ in self.volumes]
        star, status = np.full(len(self.frame), np.nan), np.empty(len(self.frame), dtype=object)
        for j, (b, t) in enumerate(zip(self.base, self.target, strict=True)):
            log_star, status[j] = _invert_monotone(self.volumes[b][1], fits[b], real_p[t])
            star[j] = np.exp(log_star)
        return star, status

    def table(self, real_p, syn_p) -> pd.DataFrame:
        star, status = self.points(real_p, syn_p)
        return self.frame.assign(target_acc=np.asarray(real_p)[self.target], n_syn_star=star, status=status)


def fit_closed_form(n_base, n_real_plus, n_syn_star, classes: float, start=None):
    """Least squares of log(n_syn*/n_base) on the closed form with K = classes: ((ln c1, ln ln c2), cov), or
    None with fewer than 3 finite points or no convergence."""
    nb, plus, star = (np.asarray(v, float) for v in (n_base, n_real_plus, n_syn_star))
    ok = np.isfinite(star)
    if ok.sum() < 3:
        return None
    nb, plus, z = nb[ok], plus[ok], np.log(star[ok] / nb[ok])
    xdata = np.vstack([nb / classes, plus / nb])

    def model(xd, ln_c1, lnln_c2):
        return _closed_form_log(xd[0], xd[1], ln_c1, lnln_c2)

    if start is None:
        # ln c1 enters linearly: profile it out over a grid of c2 to start near the global optimum.
        lnln = np.log(np.log(np.geomspace(1.01, 1e3, 60)))[:, None]
        shape = np.log(np.expm1(np.exp(lnln) * xdata[1]))
        g = ((z - shape) @ xdata[0]) / (xdata[0] @ xdata[0])
        sse = ((z - shape - g[:, None] * xdata[0]) ** 2).sum(axis=1)
        start = (g[np.argmin(sse)], lnln[np.argmin(sse), 0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, pcov = optimize.curve_fit(model, xdata, z, p0=start, maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    return popt, pcov


def published_c2(dataset: str, arm_kind: str) -> float:
    """The paper's c2 for this dataset and generator kind (SCIENCE.md 1), NaN when it reports none."""
    key = "".join(ch for ch in str(dataset).lower() if ch.isalnum())
    for row in PUBLISHED_C2.itertuples():
        if row.arm_kind == arm_kind and (key == row.key or (row.key in key and not key.startswith("cifar100"))):
            return float(row.c2)
    return np.nan


# --- bootstrap ---------------------------------------------------------------------------------------


def _redraw(rng, p, phi, m, n_boot: int) -> np.ndarray:
    """(n_boot, cells) correct counts: beta-binomial about p with variance phi m p (1 - p) (binomial at phi = 1)."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    rho = np.clip((phi - 1.0) / np.maximum(m - 1.0, 1.0), 0.0, 0.999)  # intra-cell correlation giving phi
    q = np.broadcast_to(p, (n_boot, len(p)))
    over = rho > 0
    if over.any():
        q = q.copy()
        scale = 1.0 / rho[over] - 1.0
        q[:, over] = rng.beta(p[over] * scale, (1 - p[over]) * scale, size=(n_boot, int(over.sum())))
    return rng.binomial(m.astype(np.int64), q).astype(float)


def _percentiles(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanpercentile(draws, tail, axis=0), np.nanpercentile(draws, 100 - tail, axis=0)


# --- analysis ----------------------------------------------------------------------------------------


def _pool(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Pooled correct counts and test images per group, with the group's sizes and number of seeds."""
    g = cells.groupby(keys, dropna=False, sort=True)
    out = g[["correct", "n_test", "n_base", "n_extra", "n_syn"]].agg(
        {"correct": "sum", "n_test": "sum", "n_base": "first", "n_extra": "first", "n_syn": "first"}
    )
    return out.assign(n_seeds=g["seed"].nunique()).reset_index()


@dataclass
class _Group:
    """Working state for one (dataset, classifier): its cells, curve and the pieces analyse assembles."""

    dataset: str
    classifier: str
    cells: pd.DataFrame  # all rows (done and failed)
    level: float
    notes: list[str]
    curve: Curve | None = None
    curve_problem: str = ""

    @cached_property
    def done(self) -> pd.DataFrame:
        return self.cells[self.cells["status"] == "done"]

    @cached_property
    def real(self) -> pd.DataFrame:
        return self.done[self.done["arm_kind"].isin(REAL_KINDS)]

    @cached_property
    def real_measurements(self) -> pd.DataFrame:
        """The real cells with one row per distinct measurement. Subsets are nested, so base b + e extra and
        base b + e alone train on the same images: the runner shares one classifier between them (same
        `cell_key`) and its row appears twice. Fits count it once; otherwise n and the dispersion shrink."""
        return self.real.drop_duplicates(self.measurement_key)

    @property
    def measurement_key(self) -> list[str]:
        has_key = "cell_key" in self.real.columns and self.real["cell_key"].notna().all()
        return ["cell_key"] if has_key else ["seed", "n_real"]

    @cached_property
    def synthetic(self) -> pd.DataFrame:
        return self.done[self.done["arm_kind"].isin(SYNTHETIC_KINDS)]

    @property
    def z(self) -> float:
        return float(stats.norm.ppf(0.5 + self.level / 2))

    @property
    def where(self) -> str:
        return f"{self.dataset}/{self.classifier}"


def _arms(cells: pd.DataFrame) -> pd.DataFrame:
    syn = cells[cells["arm_kind"].isin(SYNTHETIC_KINDS)]
    return syn[CURVE_KEYS + ARM_KEYS].drop_duplicates().sort_values(ARM_KEYS).reset_index(drop=True)


def _arm_phi(g: _Group) -> dict[tuple, tuple[float, int]]:
    """Per arm: its dispersion phi (floored at 1) and the df it was estimated on."""
    phis = {}
    for key, cells in g.synthetic.groupby(ARM_KEYS, sort=True):
        chi2, df = _dispersion_within(cells, GROUP_KEYS)
        phis[key] = (_phi(chi2, df), df)
    return phis


def _arm_dispersion(frame: pd.DataFrame, phis: dict, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its arm's dispersion, and the interval's quantile: Student t on the dispersion's df where it
    was estimated above 1 (an estimated variance widens the interval), else normal."""
    pairs = [phis.get(tuple(r), (1.0, 0)) for r in frame[ARM_KEYS].itertuples(index=False)]
    phi = np.array([p for p, _ in pairs], float).reshape(-1)
    df = np.array([d for _, d in pairs], float).reshape(-1)
    q = np.where(phi > 1.0, stats.t.ppf(0.5 + level / 2, np.maximum(df, 1.0)), stats.norm.ppf(0.5 + level / 2))
    return phi, q


def _equivalence_rows(g: _Group, phis: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per synthetic group (failed-only groups too) and one per done synthetic cell."""
    syn_all = g.cells[g.cells["arm_kind"].isin(SYNTHETIC_KINDS)]
    if syn_all.empty:
        return pd.DataFrame(), pd.DataFrame()
    groups = (
        syn_all.assign(n_seeds=syn_all["status"] == "done", n_failed=syn_all["status"] == "failed")
        .groupby(GROUP_KEYS, dropna=False, sort=True)[["n_seeds", "n_failed"]]
        .sum()
        .reset_index()
    )
    pooled = _pool(g.synthetic, GROUP_KEYS)[GROUP_KEYS + ["correct", "n_test"]]
    eq = groups.merge(pooled, on=GROUP_KEYS, how="left")
    first = syn_all.groupby(GROUP_KEYS, dropna=False, sort=True)[["n_base", "n_syn"]].first().reset_index()
    eq = eq.merge(first, on=GROUP_KEYS, how="left")
    eq["acc"] = eq["correct"] / eq["n_test"]
    real_only = g.real[g.real["arm_kind"] == "real-only"].groupby("base_per_class")[["correct", "n_test"]].sum()
    eq["acc_base"] = eq["base_per_class"].map(real_only["correct"] / real_only["n_test"])
    eq["dispersion"], q = _arm_dispersion(eq, phis, g.level)
    cols = _beta_columns(g.curve, eq["correct"].to_numpy(), eq["n_test"].to_numpy(), eq["dispersion"].to_numpy(),
                         eq["n_base"].to_numpy(float), eq["n_syn"].to_numpy(float), q)  # fmt: skip
    eq = eq.assign(**_with_verdict(cols))
    eq["extrapolated"] = False
    if g.curve is not None:
        lo, hi = g.curve.n_range
        eq["extrapolated"] = (eq["n_eff"] < lo) | (eq["n_eff"] > hi)
    eq["reason"] = _reasons(g, eq)

    cells = g.synthetic.copy()
    cells["dispersion"], q = _arm_dispersion(cells, phis, g.level)
    cols = _beta_columns(g.curve, cells["correct"].to_numpy(), cells["n_test"].to_numpy(),
                         cells["dispersion"].to_numpy(), cells["n_base"].to_numpy(), cells["n_syn"].to_numpy(), q)  # fmt: skip
    per_cell = cells.assign(**_with_verdict(cols))
    keep = ["cell", *GROUP_KEYS, "seed", "n_base", "n_syn", "test_acc", "n_test", "dispersion", "n_eff", "n_eff_lo",
            "n_eff_hi", "beta", "beta_lo", "beta_hi", "k", "k_lo", "k_hi", "verdict"]  # fmt: skip
    return eq, per_cell[keep].reset_index(drop=True)


def _reasons(g: _Group, eq: pd.DataFrame) -> list[str]:
    reasons = []
    for row in eq.itertuples():
        if row.n_seeds == 0:
            reasons.append(f"every seed failed ({row.n_failed})")
        elif g.curve is None:
            reasons.append(f"no real learning curve: {g.curve_problem}")
        elif not g.curve.increasing:
            reasons.append("the real learning curve does not rise with n: effective sizes are undefined")
        elif not np.isfinite(row.n_eff):
            reasons.append("accuracy beyond the real curve's asymptote: n_eff unbounded")
        elif row.extrapolated:
            reasons.append("n_eff outside the real sizes measured: the curve is extrapolated")
        else:
            reasons.append("")
    return reasons


def _arm_mask(cells: pd.DataFrame, arm: pd.Series) -> np.ndarray:
    return (cells["arm_kind"].isin(SYNTHETIC_KINDS) & (cells[ARM_KEYS] == arm[ARM_KEYS]).all(axis=1)).to_numpy()


def _joint_rows(g: _Group, arms: pd.DataFrame, by_base: bool) -> tuple[list[dict], list[dict]]:
    """The joint model per arm, and (with `by_base`) per arm and base size."""
    fits, per_base = [], []
    for _, arm in arms.iterrows():
        mine = g.done[_arm_mask(g.done, arm)]
        subsets = [(None, mine), *(mine.groupby("base_per_class") if by_base else [])]
        for base, subset in subsets:
            cells = pd.concat([g.real_measurements, subset])
            if g.curve is not None and not g.curve.increasing:
                # The same real cells as the per-cell analysis: where real data does not help, beta means nothing.
                res = _no_joint_fit(
                    len(cells), "the real learning curve does not rise with n: beta is not identifiable"
                )
            else:
                res = fit_joint(cells["n_real"], cells["n_syn"], cells["correct"], cells["n_test"], g.level)
            row = {**arm.to_dict(), "n_seeds": subset["seed"].nunique(), **res}
            (fits if base is None else per_base).append(row if base is None else {**row, "base_per_class": base})
    return fits, per_base


@dataclass
class _ClosedForm:
    """One arm's closed-form fit: where its points come from, the fit, and bootstrap replicates."""

    arm: pd.Series  # CURVE_KEYS + ARM_KEYS values
    classes: float
    reason: str = ""  # why there is no fit
    layout: _PointLayout | None = None
    real_idx: np.ndarray | None = None  # per done cell of the group: its pooled real-extra row, or -1
    syn_idx: np.ndarray | None = None  # per done cell: its pooled synthetic row of this arm, or -1
    sizes: tuple[int, int] = (0, 0)  # pooled real-extra rows, pooled synthetic rows
    points: pd.DataFrame | None = None
    theta: np.ndarray | None = None  # (ln c1, ln ln c2)
    cov: np.ndarray | None = None
    reps: np.ndarray | None = None  # (n_boot, 2) bootstrap replicates of theta

    @property
    def key(self) -> tuple:
        return tuple(self.arm[CURVE_KEYS + ARM_KEYS])

    def points_from(self, y, m) -> tuple[np.ndarray, np.ndarray]:
        """n_syn* and status per point from correct counts y (one per done cell of the group)."""
        real_p = _pooled_from(y, m, self.real_idx, self.sizes[0])
        syn_p = _pooled_from(y, m, self.syn_idx, self.sizes[1])
        return self.layout.points(real_p, syn_p)


def _closed_form(g: _Group, arm: pd.Series, classes: float) -> _ClosedForm:
    cf = _ClosedForm(arm, classes)
    extra, mine = (g.done["arm_kind"] == "real-extra").to_numpy(), _arm_mask(g.done, arm)
    if not extra.any():
        cf.reason = "no real-extra cells: the closed form needs real images added to a base"
        return cf
    if not mine.any():
        cf.reason = "no done synthetic cells"
        return cf
    real_extra = _pool(g.done[extra], ["base_per_class", "extra_per_class"])
    synthetic = _pool(g.done[mine], ["base_per_class", "volume_per_class"])
    cf.layout = _PointLayout.build(real_extra, synthetic)
    cf.real_idx = _member_index(g.done, extra, ["base_per_class", "extra_per_class"], real_extra)
    cf.syn_idx = _member_index(g.done, mine, ["base_per_class", "volume_per_class"], synthetic)
    cf.sizes = (len(real_extra), len(synthetic))
    cf.points = cf.layout.table(_p(real_extra), _p(synthetic))
    fitted = fit_closed_form(cf.points["n_base"], cf.points["n_real_plus"], cf.points["n_syn_star"], classes)
    if fitted is None:
        ok = int((cf.points["status"] == "ok").sum())
        cf.reason = (f"{ok} usable n_syn* point(s) of {len(cf.points)}: need >= 3 (the synthetic volumes must "
                     "reach the real-extra accuracies at their base)")  # fmt: skip
    else:
        cf.theta, cf.cov = fitted
    return cf


def _closed_form_columns(g: _Group, cf: _ClosedForm) -> dict:
    """c1, c2 and K with intervals from bootstrap replicates (or Wald), NaN where not fitted or identifiable."""
    ok = cf.points is not None and (cf.points["status"] == "ok")
    out = {**cf.arm.to_dict(), "classes": cf.classes, "K": cf.classes, "K_lo": np.nan, "K_hi": np.nan,
           "c2_published": published_c2(g.dataset, cf.arm["arm_kind"]), "closed_form_reason": cf.reason,
           "closed_form_points": int(ok.sum()) if cf.points is not None else 0, "closed_form_interval": "",
           **dict.fromkeys(("c1", "c1_lo", "c1_hi", "c2", "c2_lo", "c2_hi"), np.nan)}  # fmt: skip
    if cf.theta is None:
        return out
    if cf.reps is not None and np.isfinite(cf.reps).all(axis=1).sum() >= 10:
        lo, hi = _percentiles(cf.reps, g.level)
        out["closed_form_interval"] = "bootstrap"
    else:
        se = np.sqrt(np.diag(cf.cov))
        lo, hi = cf.theta - g.z * se, cf.theta + g.z * se
        out["closed_form_interval"] = "wald"
    out["c2"], out["c2_lo"], out["c2_hi"] = np.exp(np.exp([cf.theta[1], lo[1], hi[1]]))
    if out["c2"] < C2_LINEAR:
        # c2^x - 1 -> x ln c2 as c2 -> 1: a straight line whose slope c1^(n_base/K) ln c2 the data fix, while
        # c1 runs off to make up for ln c2 -> 0.
        out["closed_form_reason"] = ("c2 near its lower limit 1: n_syn* is almost linear in n_real+ (beta gives "
                                     "the rate), and c1 is not identifiable")  # fmt: skip
        return out
    if cf.points.loc[ok, "base_per_class"].nunique() < 2:
        out["closed_form_reason"] = "single base size: c1 (how the synthetic need grows with the base) not identifiable"
    else:
        out["c1"], out["c1_lo"], out["c1_hi"] = np.exp([cf.theta[0], lo[0], hi[0]])
    return out


def _p(pooled: pd.DataFrame) -> np.ndarray:
    return (pooled["correct"] / pooled["n_test"]).to_numpy(float)


def _member_index(done: pd.DataFrame, mask, keys: list[str], pooled: pd.DataFrame) -> np.ndarray:
    """For each done cell, the row of `pooled` it belongs to (-1 outside `mask`)."""
    idx = np.full(len(done), -1)
    if mask.any():
        idx[mask] = pooled.set_index(keys).index.get_indexer(pd.MultiIndex.from_frame(done.loc[mask, keys]))
    return idx


def _pooled_from(y, m, idx, size) -> np.ndarray:
    inside = idx >= 0
    with np.errstate(invalid="ignore"):
        return np.bincount(idx[inside], y[inside], minlength=size) / np.bincount(idx[inside], m[inside], minlength=size)


def _bootstrap(g: _Group, eq: pd.DataFrame, closed_forms: list[_ClosedForm], phis: dict, n_boot: int, rng):
    """Replicates of beta per synthetic group (n_boot, groups) and of each closed form's (ln c1, ln ln c2)
    (stored in `cf.reps`); also returns the curve's replicate params, to count failed refits."""
    done = g.done
    is_real = done["arm_kind"].isin(REAL_KINDS).to_numpy()
    # Each cell is redrawn about its group's pooled accuracy (real groups: base and extra size) with its
    # kind's dispersion: pure error among the real seeds, the arm's dispersion for synthetic cells.
    real_keys = ["base_per_class", "extra_per_class"]
    group_p = np.empty(len(done))
    for mask, keys in ((is_real, real_keys), (~is_real, GROUP_KEYS)):
        if mask.any():
            grp = done[mask].groupby(keys, dropna=False)
            group_p[mask] = (grp["correct"].transform("sum") / grp["n_test"].transform("sum")).to_numpy()
    phi = np.full(len(done), _phi(*_dispersion_within(done[is_real], real_keys)))
    phi[~is_real] = _arm_dispersion(done[~is_real], phis, g.level)[0]
    m = done["n_test"].to_numpy(float)
    draws = _redraw(rng, group_p, phi, m, n_boot)
    # A shared real classifier is one measurement: its rows get one draw, and the curve refits on it once.
    pos = pd.Series(np.arange(len(done)), index=done.index)
    first = g.real.index.to_series().groupby([g.real[k] for k in g.measurement_key]).transform("first")
    draws[:, pos[g.real.index].to_numpy()] = draws[:, pos[first.to_numpy()].to_numpy()]
    curve_rows = pos[g.real_measurements.index].to_numpy()
    theta = np.array([_refit_curve(g.curve, draws[b, curve_rows]) for b in range(n_boot)])  # curve's cell order
    beta = None
    if len(eq) and (~is_real).any():
        syn = done[~is_real]
        codes = eq.set_index(GROUP_KEYS).index.get_indexer(pd.MultiIndex.from_frame(syn[GROUP_KEYS]))
        onehot = np.zeros((len(syn), len(eq)))
        onehot[np.arange(len(syn)), codes] = 1.0
        y, mm = draws[:, ~is_real] @ onehot, m[~is_real] @ onehot
        ell, _ = _pooled_logit(y, np.broadcast_to(mm, y.shape))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            u = g.curve.log_n(ell, theta[:, None, :])
            beta = (np.exp(u) - eq["n_base"].to_numpy(float)) / eq["n_syn"].to_numpy(float)
        beta[:, mm == 0] = np.nan  # groups whose every seed failed

    for cf in closed_forms:
        if cf.theta is None:
            continue
        cf.reps = np.full((n_boot, 2), np.nan)
        for b in range(n_boot):
            star, _ = cf.points_from(draws[b], m)
            fitted = fit_closed_form(cf.layout.frame["n_base"], cf.layout.frame["n_real_plus"], star, cf.classes,
                                     start=cf.theta)  # fmt: skip
            if fitted is not None:
                cf.reps[b] = fitted[0]
    return beta, theta


def _analyse_group(g: _Group, n_boot: int, rng, by_base: bool) -> dict:
    try:
        g.curve = fit_curve(g.real_measurements, g.dataset, g.classifier)
    except EquivalenceError as exc:
        g.curve_problem = str(exc)
        g.notes.append(f"{g.where}: {exc}")
    if g.curve is not None and not g.curve.increasing:
        g.notes.append(f"{g.where}: the real learning curve does not rise with n (b = {g.curve.params['b']:.3g})")
    if g.real[g.real["arm_kind"] == "real-extra"].empty and not g.real.empty:
        g.notes.append(f"{g.where}: no real-extra cells: the closed form is not available")
    if g.done["base_per_class"].nunique() == 1:
        g.notes.append(f"{g.where}: single base size: the closed form's c1 is not identifiable")
    if g.done["seed"].nunique() == 1:
        g.notes.append(f"{g.where}: single seed: seed-to-seed variance is not estimable, intervals cover test noise")
    phis = _arm_phi(g)
    eq, per_cell = _equivalence_rows(g, phis)
    arms = _arms(g.cells)
    fits, per_base = _joint_rows(g, arms, by_base) if g.curve is not None else ([], [])
    classes = float(g.cells["classes"].dropna().iloc[0]) if g.cells["classes"].notna().any() else np.nan
    closed_forms = [_closed_form(g, arm, classes) for _, arm in arms.iterrows()]

    beta_reps = None
    if n_boot > 0 and g.curve is not None and g.curve.increasing:
        beta_reps, theta = _bootstrap(g, eq, closed_forms, phis, n_boot, rng)
        failed = np.isnan(theta).any(axis=1).mean()
        if failed > 0.05:
            g.notes.append(f"{g.where}: {failed:.0%} of bootstrap curve refits failed; intervals use the rest")
        for cf in closed_forms:
            lost = 0.0 if cf.reps is None else np.isnan(cf.reps).any(axis=1).mean()
            if lost > 0.05:
                g.notes.append(f"{g.where}: arm {cf.arm['arm']}: {lost:.0%} of bootstrap closed-form fits had < 3 "
                               "points or failed; its intervals use the rest")  # fmt: skip
    if g.curve is not None and g.curve.model != "glm-logit-log" and fits:
        g.notes.append(f"{g.where}: the joint model assumes the logit-log curve, which lacks fit here: prefer the "
                       "per-group beta (power-law curve)")  # fmt: skip
    if any(cf.theta is not None for cf in closed_forms):
        g.notes.append(f"{g.where}: closed form: K is fixed to the class count ({classes:g}); only ln(c1)/K is "
                       "identifiable, so K has no interval")  # fmt: skip
    if len(eq):
        lo_hi = _percentiles(beta_reps, g.level) if beta_reps is not None else (np.nan, np.nan)
        eq["beta_lo_boot"], eq["beta_hi_boot"] = lo_hi

    fit = _fit_table(g, arms, fits, [_closed_form_columns(g, cf) for cf in closed_forms])
    per_base = pd.DataFrame(per_base)
    if len(per_base):
        per_base = per_base.assign(**_with_verdict({c: per_base[c].to_numpy() for c in ("beta", "beta_lo", "beta_hi")}))
    points = [cf.points.assign(**cf.arm.to_dict()) for cf in closed_forms if cf.points is not None]
    return {"eq": eq, "per_cell": per_cell, "fit": fit, "by_base": per_base,
            "points": pd.concat(points, ignore_index=True) if points else pd.DataFrame(),
            "params": {cf.key: (*cf.theta, cf.classes) for cf in closed_forms if cf.theta is not None}}  # fmt: skip


def _fit_table(g: _Group, arms: pd.DataFrame, fits: list[dict], closed: list[dict]) -> pd.DataFrame:
    if arms.empty:
        return pd.DataFrame()
    joint = pd.DataFrame(fits) if fits else arms.assign(reason=f"no real learning curve: {g.curve_problem}")
    for col in ("beta", "beta_lo", "beta_hi"):
        if col not in joint:
            joint[col] = np.nan
    joint = joint.assign(**_with_verdict({c: joint[c].to_numpy() for c in ("beta", "beta_lo", "beta_hi")}))
    syn_all = g.cells[g.cells["arm_kind"].isin(SYNTHETIC_KINDS)]
    counts = (
        syn_all.assign(n_done=syn_all["status"] == "done", n_failed=syn_all["status"] == "failed")
        .groupby(ARM_KEYS)[["n_done", "n_failed"]]
        .sum()
        .reset_index()
    )
    out = joint.merge(pd.DataFrame(closed), on=CURVE_KEYS + ARM_KEYS, how="left")
    return out.merge(counts, on=ARM_KEYS, how="left")


FIT_COLUMNS = [
    *CURVE_KEYS, *ARM_KEYS, "n_done", "n_failed", "n_seeds", "beta", "beta_lo", "beta_hi", "k", "k_lo", "k_hi",
    "verdict", "a", "b", "dispersion", "reason", "classes", "c1", "c1_lo", "c1_hi", "c2", "c2_lo", "c2_hi", "K",
    "K_lo", "K_hi", "c2_published", "closed_form_points", "closed_form_interval", "closed_form_reason",
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
    "n_seeds", "n_failed", "n_done", "n_cells", "classes", "K", "closed_form_points",
)  # fmt: skip


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
    cells: pd.DataFrame, n_boot: int = 1000, level: float = 0.9, seed: int = 0, by_base: bool = True
) -> Equivalence:
    """Estimate, per synthetic arm, how many synthetic images are worth one real image (module docstring).

    `n_boot` bootstrap replicates (0 skips the bootstrap), `level` of every interval, `seed` of the
    bootstrap; `by_base=False` skips the joint model per base size (`fit_by_base`), the slowest part without
    the bootstrap."""
    if not 0.0 < level < 1.0:
        raise EquivalenceError(f"level must be in (0, 1), got {level!r}")
    if int(n_boot) != n_boot or n_boot < 0:
        raise EquivalenceError(f"n_boot must be a whole number >= 0, got {n_boot!r}")
    table, notes = check_cells(cells)
    failed = table[table["status"] == "failed"]
    if len(failed):
        notes.append(f"{len(failed)} of {len(table)} cells failed: left out of every fit, listed in .failed")
    if len(failed) == len(table):
        notes.append("every cell failed: nothing to estimate")
    rng = np.random.default_rng(seed)
    results, curves = [], {}
    for (dataset, classifier), cells_g in table.groupby(CURVE_KEYS, sort=True):
        g = _Group(dataset, classifier, cells_g, level, notes)
        results.append(_analyse_group(g, int(n_boot), rng, by_base))
        if g.curve is not None:
            curves[(dataset, classifier)] = g.curve
    params = {k: v for r in results for k, v in r["params"].items()}
    closed_points = _frame([r["points"] for r in results], [*CURVE_KEYS, *ARM_KEYS])
    return Equivalence(
        curves=curves,
        per_cell=_frame([r["per_cell"] for r in results], ["cell"]),
        equivalence=_frame([r["eq"] for r in results], EQUIVALENCE_COLUMNS).assign(level=level),
        fit=_frame([r["fit"] for r in results], FIT_COLUMNS).assign(level=level),
        fit_by_base=_frame([r["by_base"] for r in results], [*CURVE_KEYS, *ARM_KEYS, "base_per_class"]),
        closed_form=closed_points,
        closed_form_params=params,
        failed=_frame([failed[FAILED_COLUMNS]], FAILED_COLUMNS),
        notes=notes,
        level=level,
        n_boot=int(n_boot),
    )


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
        cells = pd.read_csv(path)
    except FileNotFoundError:
        print(f"error: {path}: no cells table (run `python -m study.run GRID.yaml` first)", file=sys.stderr)
        return 2
    try:
        eq = analyse(cells, n_boot=args.n_boot, level=args.level, seed=args.seed)
    except EquivalenceError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
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
    if args.write:
        write_tables(eq, args.results_dir)
        print(f"wrote {args.results_dir / 'equivalence.csv'} and {args.results_dir / 'equivalence_fit.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
