"""The real learning curve acc(n) of one (dataset, classifier): the curve families, their fits and goodness of fit.

    curve = fit_curve(real_cells, "digits", "study_cnn", floor=0.1)   # real cells: n_real, correct, n_test, seed
    curve.acc([100, 400])        # fitted accuracy at n real training images
    curve.n(0.9)                 # the inverse: real images needed for 90% accuracy

Families (`FAMILIES`, one entry per curve model: its accuracy, its inverse on the logit scale, its parameter names
and the map to unconstrained parameters the likelihood fits use; a new model is one more entry):
    glm-logit-log       logit p = a + b log n                              (statsmodels binomial GLM, logit link)
    bounded-logit-log   p = f + (c - f) expit(a + b log n)                 (binomial ML; f = the chance floor 1/K,
                                                                            c the fitted ceiling, f < c <= 1)
    power-law           1 - p = e_inf + A n^-alpha                         (binomial ML)
Every family is fitted by binomial maximum likelihood on the real cells, and the one with the lowest AIC is used
(Akaike 1974; with overdispersion, QAIC = -2 log L / phi + 2 k with phi = max(1, D_sat / df_sat), the seed scatter
at equal n, which no curve shape affects: Burnham & Anderson 2002, 6.5). The three-parameter families need >= 4
distinct sizes. Goodness: deviance and Pearson chi2 on their df, dispersion phi = max(1, chi2/df), and a lack-of-fit
F test against one mean per distinct n (the scatter of seeds at one n is the pure error):
    F = [(D - D_sat) / (df - df_sat)] / [D_sat / df_sat].
Costs tens of milliseconds; never imports torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, special, stats
from statsmodels.tools.numdiff import approx_hess3

from study.analysis.cells import EquivalenceError

EPS = 1e-9


# --- curve families ----------------------------------------------------------------------------------
# Each family maps n to accuracy, and logit-accuracy back to log n. Every function takes the chance floor f
# (1 / classes; only the bounded family uses it) and broadcasts over its parameters, so one call serves every
# bootstrap replicate.


def logit_log(n, a: float, b: float, floor: float = 0.0):
    """acc(n) = expit(a + b log n): the GLM's real learning curve."""
    return special.expit(a + b * np.log(n))


def bounded_logit_log(n, a: float, b: float, ceiling: float, floor: float = 0.0):
    """acc(n) = f + (c - f) expit(a + b log n): from the chance floor f towards a fitted ceiling c."""
    return floor + (ceiling - floor) * special.expit(a + b * np.log(n))


def power_law(n, e_inf: float, amp: float, alpha: float, floor: float = 0.0):
    """acc(n) = 1 - e_inf - amp n^-alpha: error falls as a power of n towards the floor e_inf."""
    return 1.0 - e_inf - amp * np.power(n, -alpha)


def _log_n_logit_log(ell, a, b, floor=0.0):
    return (ell - a) / b


def _log_n_bounded(ell, a, b, ceiling, floor=0.0):
    q = (special.expit(ell) - floor) / (ceiling - floor)  # where on the way from floor to ceiling
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = (q > 0) & (q < 1)
        out = (special.logit(np.where(inside, q, 0.5)) - a) / b
        return np.where(inside, out, np.where(q >= 1, np.inf, -np.inf))


def _log_n_power_law(ell, e_inf, amp, alpha, floor=0.0):
    gap = 1.0 - e_inf - special.expit(ell)  # how far below the asymptote; <= 0 is beyond the curve's reach
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, -np.log(np.where(gap > 0, gap, 1.0) / amp) / alpha, np.inf)


def _identity(theta, floor=0.0):
    return np.asarray(theta, float)


def _bounded_free(theta, floor=0.0):
    theta = np.array(theta, float)
    theta[..., 2] = special.logit(np.clip((theta[..., 2] - floor) / (1.0 - floor), EPS, 1 - EPS))
    return theta


def _bounded_natural(x, floor=0.0):
    x = np.array(x, float)
    x[..., 2] = floor + (1.0 - floor) * special.expit(x[..., 2])
    return x


def _power_free(theta, floor=0.0):
    theta = np.asarray(theta, float)
    return np.stack([special.logit(np.clip(theta[..., 0], EPS, 1 - EPS)), np.log(theta[..., 1]),
                     np.log(theta[..., 2])], axis=-1)  # fmt: skip


def _power_natural(x, floor=0.0):
    x = np.asarray(x, float)
    return np.stack([special.expit(x[..., 0]), np.exp(x[..., 1]), np.exp(x[..., 2])], axis=-1)


@dataclass(frozen=True)
class Family:
    acc: Callable  # acc(n, *params, floor=f)
    log_n: Callable  # log n at logit-accuracy ell: log_n(ell, *params, floor=f), broadcasting over params
    params: tuple[str, ...]
    free: Callable  # natural params (..., k) -> unconstrained ones, for likelihood fits
    natural: Callable  # the inverse map
    min_sizes: int  # distinct real sizes needed to fit it

    def at(self, n, x, floor: float):
        """Accuracy at n for unconstrained params x (k,)."""
        theta = self.natural(x, floor)
        return self.acc(n, *theta, floor=floor)


FAMILIES: dict[str, Family] = {
    "glm-logit-log": Family(logit_log, _log_n_logit_log, ("a", "b"), _identity, _identity, 2),
    "bounded-logit-log": Family(bounded_logit_log, _log_n_bounded, ("a", "b", "ceiling"), _bounded_free,
                                _bounded_natural, 4),
    "power-law": Family(power_law, _log_n_power_law, ("e_inf", "amp", "alpha"), _power_free, _power_natural, 4),
}  # fmt: skip


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
    floor: float = 0.0  # chance accuracy 1/K (the bounded family's floor)

    @property
    def family(self) -> Family:
        return FAMILIES[self.model]

    @property
    def theta(self) -> np.ndarray:
        return np.array(list(self.params.values()))

    @property
    def free(self) -> np.ndarray:
        """The params on the unconstrained scale the likelihood fits use."""
        return self.family.free(self.theta, self.floor)

    @property
    def n_range(self) -> tuple[float, float]:
        return float(self.points["n"].min()), float(self.points["n"].max())

    def acc(self, n, theta=None):
        """Fitted accuracy at n real training images (`theta`: other natural params of the same family)."""
        theta = self.theta if theta is None else np.asarray(theta, float)
        return self.family.acc(np.asarray(n, float), *(theta[..., j] for j in range(theta.shape[-1])),
                               floor=self.floor)  # fmt: skip

    def n(self, acc):
        """The inverse: real training images needed for accuracy `acc` (inf beyond the curve's asymptote)."""
        return np.exp(self.log_n(special.logit(np.asarray(acc, float))))

    def log_n(self, ell, theta=None):
        """log n at logit-accuracy `ell`; `theta` (rows of parameters) broadcasts against `ell`."""
        theta = self.theta if theta is None else theta
        return self.family.log_n(ell, *(theta[..., j] for j in range(theta.shape[-1])), floor=self.floor)


# --- binomial goodness of fit ------------------------------------------------------------------------


def clip(p):
    return np.clip(p, 1e-12, 1.0 - 1e-12)


def binomial_loglik(y, m, p):
    """Sum of y log p + (m - y) log(1 - p): the binomial log-likelihood without its constant, over cells."""
    p = clip(p)
    return np.sum(y * np.log(p) + (m - y) * np.log1p(-p), axis=-1)


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


def _pure_error(n, y, m) -> tuple[float, int]:
    """Deviance and df of one pooled mean per distinct n: the seed-to-seed scatter, free of any curve shape."""
    _, idx = np.unique(n, return_inverse=True)
    mu = np.bincount(idx, y) / np.bincount(idx, m)
    return _deviance(y, m, mu[idx]), len(n) - idx.max() - 1


def _goodness(model: str, y, m, mu, k: int, d_sat: float, df_sat: int, phi_sel: float) -> dict:
    dev, df = _deviance(y, m, mu), len(y) - k
    chi2 = _pearson(y, m, mu)
    loglik = _loglike(y, m, mu)
    row = {"model": model, "params": k, "cells": len(y), "deviance": dev, "df": df, "pearson_chi2": chi2,
           "dispersion": chi2 / df if df > 0 else np.nan, "aic": -2.0 * loglik + 2 * k,
           "qaic": -2.0 * loglik / phi_sel + 2 * k,
           "lof_F": np.nan, "lof_df1": df - df_sat, "lof_df2": df_sat, "lof_p": np.nan}  # fmt: skip
    if df_sat > 0 and df - df_sat > 0 and d_sat > 0:
        row["lof_F"] = ((dev - d_sat) / (df - df_sat)) / (d_sat / df_sat)
        row["lof_p"] = float(stats.f.sf(row["lof_F"], df - df_sat, df_sat))
    return row


# --- the fits ----------------------------------------------------------------------------------------


def fit_ml(family: Family, n, y, m, floor: float, starts) -> tuple[np.ndarray, np.ndarray] | None:
    """Binomial maximum likelihood of a family from the best of `starts` (natural params): (theta, unscaled
    covariance of theta from the observed information), or None where no start converges."""

    def nll(x):
        return -float(binomial_loglik(y, m, family.at(n, x, floor)))

    best = None
    for start in starts:
        x0 = family.free(np.asarray(start, float), floor)
        if not np.all(np.isfinite(x0)):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = optimize.minimize(nll, x0, method="BFGS", options={"gtol": 1e-6, "maxiter": 500})
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        return None
    theta = family.natural(best.x, floor)
    return theta, _natural_cov(family, best.x, nll, floor)


def _natural_cov(family: Family, x, nll, floor: float) -> np.ndarray:
    """Covariance of the natural params: the inverse observed information on the free scale, through the
    Jacobian of the map (a ceiling on its bound has a nearly singular information: pseudo-inverse)."""
    hess = approx_hess3(x, nll)
    cov_free = np.linalg.pinv(hess) if np.all(np.isfinite(hess)) else np.full(hess.shape, np.nan)
    h = 1e-6
    jac = np.column_stack([(family.natural(x + h * e, floor) - family.natural(x - h * e, floor)) / (2 * h)
                           for e in np.eye(len(x))])  # fmt: skip
    return jac @ cov_free @ jac.T


def _starts(model: str, n, y, m, floor: float, glm) -> list:
    acc = y / m
    if model == "bounded-logit-log":
        top = float(acc.max())
        starts = []
        for ceiling in (top + 0.5 * (1 - top), 1 - 1e-4):
            q = np.clip((acc - floor) / (ceiling - floor), 1e-3, 1 - 1e-3)
            try:
                ab = fit_glm(np.log(n), q * m, m).params
            except (ValueError, np.linalg.LinAlgError):
                ab = glm.params
            starts.append([ab[0], ab[1], ceiling])
        return starts
    err = 1.0 - acc
    e0 = 0.5 * max(err.min(), 1e-6)
    slope, icpt = np.polyfit(np.log(n), np.log(np.maximum(err - e0, 1e-9)), 1)
    return [
        [e0, float(np.exp(icpt)), float(np.clip(-slope, 0.05, 5.0))],
        [1e-3, float(err.max() * n.min() ** 0.5), 0.5],
    ]


def fit_curve(real: pd.DataFrame, dataset: str = "", classifier: str = "", floor: float = 0.0) -> Curve:
    """Fit the real learning curve to done real cells (columns n_real, correct, n_test, seed); `floor` is chance
    accuracy (1 / classes)."""
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
    phi_sel = max(1.0, d_sat / df_sat) if df_sat > 0 else 1.0
    glm = fit_glm(np.log(n), y, m)
    fits = {"glm-logit-log": (np.asarray(glm.params), np.asarray(glm.cov_params()))}
    for model in ("bounded-logit-log", "power-law"):
        if len(sizes) >= FAMILIES[model].min_sizes:
            fitted = fit_ml(FAMILIES[model], n, y, m, floor, _starts(model, n, y, m, floor, glm))
            if fitted is not None and np.all(np.isfinite(fitted[1])):
                fits[model] = fitted
    rows = [_goodness(model, y, m, FAMILIES[model].acc(n, *theta, floor=floor), len(theta), d_sat, df_sat, phi_sel)
            for model, (theta, _) in fits.items()]  # fmt: skip
    goodness = pd.DataFrame(rows)
    goodness["delta_qaic"] = goodness["qaic"] - goodness["qaic"].min()
    model, reason = _choose(goodness, phi_sel, len(sizes))
    row = goodness[goodness["model"] == model].iloc[0]
    dispersion = max(1.0, float(row["dispersion"])) if np.isfinite(row["dispersion"]) else 1.0
    theta, cov = fits[model]
    points = pd.DataFrame({"seed": real["seed"].to_numpy(), "n": n, "correct": y, "n_test": m, "acc": y / m})
    return Curve(
        dataset=dataset, classifier=classifier, model=model, reason=reason,
        params=dict(zip(FAMILIES[model].params, map(float, theta), strict=True)), cov=cov * dispersion,
        dispersion=dispersion, goodness=goodness, points=points, increasing=_rises(model, theta, floor), floor=floor,
    )  # fmt: skip


def _rises(model: str, theta, floor: float) -> bool:
    if model == "power-law":
        return bool(theta[1] > 0 and theta[2] > 0)
    return bool(theta[1] > 0) and (model == "glm-logit-log" or theta[2] > floor)


def _choose(goodness: pd.DataFrame, phi_sel: float, n_sizes: int) -> tuple[str, str]:
    """The model with the lowest (Q)AIC, and why."""
    ranked = goodness.sort_values("qaic", kind="stable")
    best = ranked.iloc[0]
    criterion = "AIC" if phi_sel == 1.0 else f"QAIC (phi = {phi_sel:.2f}, the seed scatter at equal n)"
    if len(ranked) == 1:
        why = "needs >= 4 real sizes" if n_sizes < 4 else "did not converge"
        return best["model"], f"the only model fitted (the three-parameter families {why})"
    second = ranked.iloc[1]
    return best["model"], (f"lowest {criterion} of {len(ranked)} models ({second['model']} "
                           f"+{second['qaic'] - best['qaic']:.1f})")  # fmt: skip


def refit_curve(curve: Curve, y) -> np.ndarray:
    """The same model refitted to new correct counts (a bootstrap replicate), started at the fitted params."""
    n, m = curve.points["n"].to_numpy(), curve.points["n_test"].to_numpy()
    if curve.model == "glm-logit-log":
        try:
            return np.asarray(fit_glm(np.log(n), y, m, start=curve.theta).params)
        except (ValueError, np.linalg.LinAlgError):
            return np.full(2, np.nan)
    family = curve.family

    def nll(x):
        return -float(binomial_loglik(y, m, family.at(n, x, curve.floor)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = optimize.minimize(nll, curve.free, method="BFGS", options={"gtol": 1e-5, "maxiter": 200})
    return family.natural(res.x, curve.floor) if np.isfinite(res.fun) else np.full(len(curve.theta), np.nan)
