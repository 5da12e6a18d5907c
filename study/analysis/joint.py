"""The joint model per arm, on the real cells and the arm's synthetic cells (and per base size):

    logit p = a + b log(n_real + beta n_syn)

beta by profile likelihood: a statsmodels binomial GLM in (a, b) at each beta (any beta > -min n_real/n_syn, so
negative values are allowed), maximised by a grid and Brent's method; the interval is the likelihood-ratio set
{beta : [D(beta) - D(beta_hat)] / phi <= q} with q = chi2_1(level), or F(1, N-3)(level) when the dispersion
phi = Pearson chi2 / (N - 3) at the optimum exceeds 1. An upper end beyond beta = 1000 is reported as inf.

    fit_joint(n_real, n_syn, correct, n_test, level=0.9)   # -> dict: beta, beta_lo, beta_hi, a, b, dispersion

Costs ~50 GLM fits of a few dozen rows per call (~0.1 s); never imports torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from study.analysis.cells import Group, arm_mask
from study.analysis.curve import fit_glm

BETA_MAX = 1000.0  # upper ends beyond this many real images per synthetic image are reported as inf


def no_joint_fit(n_cells: int, reason: str) -> dict:
    return {"beta": np.nan, "beta_lo": np.nan, "beta_hi": np.nan, "a": np.nan, "b": np.nan, "dispersion": np.nan,
            "n_cells": n_cells, "reason": reason}  # fmt: skip


@dataclass(frozen=True)
class _Profile:
    """The joint model's data on the scale s = log(beta + r), where r = min n_real/n_syn over synthetic cells keeps
    n_real + beta n_syn > 0 for every cell (the profile explodes at s -> -inf)."""

    n_real: np.ndarray
    n_syn: np.ndarray
    y: np.ndarray
    m: np.ndarray
    r: float

    def fit(self, s: float, start=None):
        """The GLM in (a, b) at beta = exp(s) - r, or None where it fails."""
        x = np.log(self.n_real + (np.exp(s) - self.r) * self.n_syn)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # far-off betas are meant to fit badly
                res = fit_glm(x, self.y, self.m, start=start)
        except (ValueError, np.linalg.LinAlgError):
            return None
        return res if np.isfinite(res.deviance) else None

    def deviance(self, s: float, start=None) -> float:
        res = self.fit(s, start)
        return np.inf if res is None else float(res.deviance)

    def beta(self, s):
        return np.exp(s) - self.r


def fit_joint(n_real, n_syn, y, m, level: float) -> dict:
    """Profile likelihood over beta in logit p = a + b log(n_real + beta n_syn), with a likelihood-ratio interval.

    The grid's deviances are fitted from statsmodels' default start; the refinement (Brent's method and the
    interval's ends) starts every fit from the best grid point's (a, b), so each deviance is a pure function of
    beta; (a, b) and the dispersion are those of the fit at the optimum."""
    n_real, n_syn, y, m = (np.asarray(v, float) for v in (n_real, n_syn, y, m))
    syn = n_syn > 0
    if not syn.any() or len(np.unique(n_real[~syn])) < 2 or len(y) <= 3:
        return no_joint_fit(len(y), "needs done synthetic cells and real cells at >= 2 sizes")
    profile = _Profile(n_real, n_syn, y, m, float(np.min(n_real[syn] / n_syn[syn])))
    s_min, s_mid, s_max = np.log(profile.r) - 14.0, np.log(profile.r) - 3.0, np.log(profile.r + BETA_MAX)
    grid = np.concatenate([np.linspace(s_min, s_mid, 3, endpoint=False), np.linspace(s_mid, s_max, 16)])
    fits = [profile.fit(s) for s in grid]
    dev = np.array([np.inf if f is None else float(f.deviance) for f in fits])
    if not np.isfinite(dev).any():
        return no_joint_fit(len(y), "the GLM failed at every beta")
    i = int(np.nanargmin(dev))
    start = fits[i].params

    def deviance(s: float) -> float:
        return profile.deviance(s, start)

    lo_s, hi_s = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    s_hat = float(optimize.minimize_scalar(deviance, bounds=(lo_s, hi_s), method="bounded",
                                           options={"xatol": 1e-4}).x)  # fmt: skip
    best = profile.fit(s_hat, start)
    if best is None:
        return no_joint_fit(len(y), "the GLM failed at the profile's optimum")
    if best.params[1] <= 0:  # accuracy does not rise with n: no amount of real data matches a gain
        return no_joint_fit(
            len(y), "the fitted real learning curve does not rise with n (b <= 0): beta is not identifiable"
        )
    df = len(y) - 3
    phi = max(1.0, float(best.pearson_chi2) / df)
    q = phi * (float(stats.f.ppf(level, 1, df)) if phi > 1.0 else float(stats.chi2.ppf(level, 1)))
    d_hat = float(best.deviance)

    def excess(s: float) -> float:  # > 0 outside the likelihood-ratio set
        return deviance(s) - d_hat - q

    s_lo, s_hi = _set_end(excess, grid, s_hat, -1), _set_end(excess, grid, s_hat, +1)
    out = {"beta": profile.beta(s_hat), "beta_lo": profile.beta(s_lo), "beta_hi": profile.beta(s_hi),
           "a": float(best.params[0]), "b": float(best.params[1]), "dispersion": phi, "n_cells": len(y),
           "reason": ""}  # fmt: skip
    if np.isinf(s_hi):
        out["reason"] = f"upper end beyond beta = {BETA_MAX:g}: reported as inf"
        if s_hat >= s_max - 1e-3:  # the likelihood still rises at the edge: no finite estimate
            out["beta"] = np.inf
    if np.isinf(s_lo):
        out["reason"] = f"lower end at the edge beta = {-profile.r:.4g}, where some cell's effective size reaches 0"
    return out


def _set_end(excess, grid: np.ndarray, s_hat: float, direction: int) -> float:
    """One end of the set {s : excess(s) <= 0} around s_hat: walk the grid outward to the first point outside it,
    then solve between; +-inf when the grid ends inside the set."""
    inner = s_hat
    for s in grid[grid < s_hat][::-1] if direction < 0 else grid[grid > s_hat]:
        if excess(s) > 0:
            return optimize.root_scalar(excess, bracket=sorted((s, inner)), method="toms748", xtol=1e-4).root
        inner = s
    return -np.inf if direction < 0 else np.inf


def joint_rows(g: Group, arms: pd.DataFrame, by_base: bool) -> tuple[list[dict], list[dict]]:
    """The joint model per arm, and (with `by_base`) per arm and base size."""
    fits, per_base = [], []
    for _, arm in arms.iterrows():
        mine = g.done[arm_mask(g.done, arm)]
        subsets = [(None, mine), *(mine.groupby("base_per_class") if by_base else [])]
        for base, subset in subsets:
            cells = pd.concat([g.real_measurements, subset])
            if g.curve is not None and not g.curve.increasing:
                # The same real cells as the per-cell analysis: where real data does not help, beta means nothing.
                res = no_joint_fit(len(cells), "the real learning curve does not rise with n: beta is not identifiable")
            else:
                res = fit_joint(cells["n_real"], cells["n_syn"], cells["correct"], cells["n_test"], g.level)
            row = {**arm.to_dict(), "n_seeds": subset["seed"].nunique(), **res}
            (fits if base is None else per_base).append(row if base is None else {**row, "base_per_class": base})
    return fits, per_base
