"""The real learning curve acc(n) of one (dataset, classifier): the curve families, their fits and goodness of fit.

    curve = fit_curve(real_cells, "digits", "study_cnn")   # real cells: n_real, correct, n_test, seed
    curve.acc([100, 400])        # fitted accuracy at n real training images
    curve.n(0.9)                 # the inverse: real images needed for 90% accuracy

Families (`FAMILIES`, one entry per curve model: its accuracy, its inverse on the logit scale and its parameter
names; a new model is one more entry and its fit in `fit_curve`):
    glm-logit-log   logit p = a + b log n                  (statsmodels binomial GLM, logit link)
    power-law       1 - p = e_inf + A n^-alpha             (scipy curve_fit, weights 1/Var p, bounded params)
Goodness: deviance and Pearson chi2 on their df, dispersion phi = max(1, chi2/df), and a lack-of-fit F test
against one mean per distinct n (the scatter of seeds at one n is the pure error):
    F = [(D - D_sat) / (df - df_sat)] / [D_sat / df_sat].
The power law (with >= 4 distinct sizes) replaces the GLM when the GLM's lack of fit is significant
(p < 0.05) and the power law's is smaller. Costs milliseconds; never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, special, stats

from study.analysis.cells import EquivalenceError

LACK_OF_FIT_P = 0.05


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


@dataclass(frozen=True)
class Family:
    acc: Callable  # acc(n, *params)
    log_n: Callable  # log n at logit-accuracy ell: log_n(ell, *params), broadcasting over params
    params: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "glm-logit-log": Family(logit_log, _log_n_logit_log, ("a", "b")),
    "power-law": Family(power_law, _log_n_power_law, ("e_inf", "amp", "alpha")),
}


@dataclass(frozen=True, eq=False)
class Curve:
    """The real learning curve of one (dataset, classifier): which model, why, how well it fits."""

    dataset: str
    classifier: str
    model: str  # a key of FAMILIES
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
        return FAMILIES[self.model].acc(np.asarray(n, float), *self.theta)

    def n(self, acc):
        """The inverse: real training images needed for accuracy `acc` (inf beyond the curve's asymptote)."""
        return np.exp(self.log_n(special.logit(np.asarray(acc, float))))

    def log_n(self, ell, theta=None):
        """log n at logit-accuracy `ell`; `theta` (rows of parameters) broadcasts against `ell`."""
        theta = self.theta if theta is None else theta
        return FAMILIES[self.model].log_n(ell, *(theta[..., j] for j in range(theta.shape[-1])))


# --- binomial goodness of fit ------------------------------------------------------------------------


def clip(p):
    return np.clip(p, 1e-12, 1.0 - 1e-12)


def _deviance(y, m, mu) -> float:
    return float(sm.families.Binomial().deviance(y / m, clip(mu), var_weights=m))


def _loglike(y, m, mu) -> float:
    return float(sm.families.Binomial().loglike(y / m, clip(mu), var_weights=m))


def _pearson(y, m, mu) -> float:
    mu = clip(mu)
    return float(np.sum((y - m * mu) ** 2 / (m * mu * (1.0 - mu))))


def fit_glm(x, y, m, start=None):
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


# --- the fit -----------------------------------------------------------------------------------------


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
    glm = fit_glm(np.log(n), y, m)
    rows = [_goodness("glm-logit-log", y, m, glm.mu, 2, d_sat, df_sat)]
    power = _fit_power_law(n, y, m) if len(sizes) >= 4 else None
    if power is not None:
        rows.append(_goodness("power-law", y, m, power_law(n, *power[0]), 3, d_sat, df_sat))
    goodness = pd.DataFrame(rows)
    model, reason = _choose(rows, power is not None, len(sizes))
    row = goodness[goodness["model"] == model].iloc[0]
    dispersion = max(1.0, float(row["dispersion"])) if np.isfinite(row["dispersion"]) else 1.0
    if model == "glm-logit-log":
        theta, cov = np.asarray(glm.params), np.asarray(glm.cov_params())
    else:
        theta, cov = power
    points = pd.DataFrame({"seed": real["seed"].to_numpy(), "n": n, "correct": y, "n_test": m, "acc": y / m})
    return Curve(
        dataset=dataset, classifier=classifier, model=model, reason=reason,
        params=dict(zip(FAMILIES[model].params, map(float, theta), strict=True)), cov=cov * dispersion,
        dispersion=dispersion, goodness=goodness, points=points,
        increasing=bool(theta[1] > 0) if model == "glm-logit-log" else True,
    )  # fmt: skip


def _choose(rows: list[dict], power_fitted: bool, n_sizes: int) -> tuple[str, str]:
    """The model to use, and why: the GLM unless it lacks fit and the power law fits better."""
    p_glm = rows[0]["lof_p"]
    p_pow = rows[1]["lof_p"] if power_fitted else np.nan
    if np.isnan(p_glm):
        return "glm-logit-log", "GLM: lack of fit not testable (no size with several seeds, or 2 sizes)"
    if p_glm >= LACK_OF_FIT_P:
        return "glm-logit-log", f"GLM: no significant lack of fit (F = {rows[0]['lof_F']:.2f}, p = {p_glm:.2g})"
    if power_fitted and p_pow > p_glm:
        return "power-law", (
            f"power law: the GLM lacks fit (p = {p_glm:.2g}) and the power law fits better (p = {p_pow:.2g})"
        )
    why = (
        "the power law needs >= 4 sizes" if n_sizes < 4
        else "the power law did not converge" if not power_fitted
        else "the power law does not fit better"
    )  # fmt: skip
    return (
        "glm-logit-log",
        f"GLM kept although it lacks fit (p = {p_glm:.2g}): {why}; its dispersion widens the intervals",
    )


def refit_curve(curve: Curve, y) -> np.ndarray:
    """The same model refitted to new correct counts (a bootstrap replicate), started at the fitted params."""
    n, m = curve.points["n"].to_numpy(), curve.points["n_test"].to_numpy()
    if curve.model == "glm-logit-log":
        try:
            return np.asarray(fit_glm(np.log(n), y, m, start=curve.theta).params)
        except (ValueError, np.linalg.LinAlgError):
            return np.full(2, np.nan)
    power = _fit_power_law(n, y, m, start=curve.theta)
    return np.full(3, np.nan) if power is None else power[0]
