"""Effective real size and exchange rate per synthetic group (arm, base, volume; seeds pooled) and per cell.

    p_g = sum y / sum n_test,   n_eff = acc^-1(p_g),   beta = (n_eff - n_base) / n_syn,   k = 1 / beta,
with a delta-method interval on u = log n_eff:
    Var u = (du/dl)^2 phi_arm / (sum n_test p_g (1 - p_g)) + grad_theta(u)' Sigma_theta grad_theta(u)
(l = logit p_g; phi_arm the arm's pooled Pearson dispersion of cells about their group means, floored at 1;
Sigma_theta the curve's quasi-binomial covariance); u +- z se maps monotonically to n_eff and beta, with z the
Student t quantile on phi_arm's df where phi_arm > 1, normal otherwise. Verdicts and k from beta's interval
(`verdict_of`, `k_of`). Costs milliseconds; never imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

from study.analysis.cells import ARM_KEYS, GROUP_KEYS, SYNTHETIC_KINDS, Group, pool, status_counts
from study.analysis.curve import Curve, clip

VERDICTS = ("gain", "no measurable gain", "hurts", "not estimable")  # the values of every `verdict` column
BETA_COLUMNS = ("beta", "beta_lo", "beta_hi")


def pooled_logit(y, m):
    """Logit of pooled accuracy and its binomial variance per unit dispersion (0 or n_test correct: +0.5 rule)."""
    edge = (y <= 0) | (y >= m)
    p = np.where(edge, (y + 0.5) / (m + 1.0), y / np.where(m > 0, m, 1.0))
    return special.logit(p), 1.0 / (m * p * (1.0 - p))


def _log_n_eff(curve: Curve, y, m, phi):
    """u = log n_eff at pooled counts (y, m) and its delta-method standard error (dispersion phi on y)."""
    ell, var1 = pooled_logit(np.asarray(y, float), np.asarray(m, float))
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


def with_verdict(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (with beta, beta_lo, beta_hi) plus verdict, k, k_lo and k_hi."""
    cols = {c: frame[c].to_numpy() for c in BETA_COLUMNS}
    verdict = verdict_of(cols["beta_lo"], cols["beta_hi"])
    k, k_lo, k_hi = k_of(cols["beta"], cols["beta_lo"], cols["beta_hi"], verdict)
    return frame.assign(verdict=verdict, k=k, k_lo=k_lo, k_hi=k_hi)


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


# --- dispersion --------------------------------------------------------------------------------------


def dispersion_within(cells: pd.DataFrame, keys: list[str]) -> tuple[float, int]:
    """Pooled Pearson chi2 of cells about their group's pooled accuracy, and its df (cells - groups)."""
    if cells.empty:
        return 0.0, 0
    g = cells.groupby(keys, dropna=False)
    pbar = clip(g["correct"].transform("sum") / g["n_test"].transform("sum"))
    chi2 = ((cells["correct"] - cells["n_test"] * pbar) ** 2 / (cells["n_test"] * pbar * (1 - pbar))).sum()
    return float(chi2), len(cells) - g.ngroups


def phi_of(chi2: float, df: int) -> float:
    return max(1.0, chi2 / df) if df > 0 else 1.0


def arm_phis(g: Group) -> dict[tuple, tuple[float, int]]:
    """Per arm: its dispersion phi (floored at 1) and the df it was estimated on."""
    phis = {}
    for key, cells in g.synthetic.groupby(ARM_KEYS, sort=True):
        chi2, df = dispersion_within(cells, GROUP_KEYS)
        phis[key] = (phi_of(chi2, df), df)
    return phis


def arm_dispersion(frame: pd.DataFrame, phis: dict, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its arm's dispersion, and the interval's quantile: Student t on the dispersion's df where it
    was estimated above 1 (an estimated variance widens the interval), else normal."""
    pairs = [phis.get(tuple(r), (1.0, 0)) for r in frame[ARM_KEYS].itertuples(index=False)]
    phi = np.array([p for p, _ in pairs], float).reshape(-1)
    df = np.array([d for _, d in pairs], float).reshape(-1)
    q = np.where(phi > 1.0, stats.t.ppf(0.5 + level / 2, np.maximum(df, 1.0)), stats.norm.ppf(0.5 + level / 2))
    return phi, q


# --- tables ------------------------------------------------------------------------------------------


def equivalence_rows(g: Group, phis: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per synthetic group (failed-only groups too) and one per done synthetic cell."""
    syn_all = g.cells[g.cells["arm_kind"].isin(SYNTHETIC_KINDS)]
    if syn_all.empty:
        return pd.DataFrame(), pd.DataFrame()
    groups = status_counts(g.cells, GROUP_KEYS, done="n_seeds")
    pooled = pool(g.synthetic, GROUP_KEYS)[GROUP_KEYS + ["correct", "n_test"]]
    eq = groups.merge(pooled, on=GROUP_KEYS, how="left")
    first = syn_all.groupby(GROUP_KEYS, dropna=False, sort=True)[["n_base", "n_syn"]].first().reset_index()
    eq = eq.merge(first, on=GROUP_KEYS, how="left")
    eq["acc"] = eq["correct"] / eq["n_test"]
    real_only = g.real[g.real["arm_kind"] == "real-only"].groupby("base_per_class")[["correct", "n_test"]].sum()
    eq["acc_base"] = eq["base_per_class"].map(real_only["correct"] / real_only["n_test"])
    eq = with_verdict(_with_beta(g, eq, phis))
    eq["extrapolated"] = False
    if g.curve is not None:
        lo, hi = g.curve.n_range
        eq["extrapolated"] = (eq["n_eff"] < lo) | (eq["n_eff"] > hi)
    eq["reason"] = _reasons(g, eq)

    per_cell = with_verdict(_with_beta(g, g.synthetic.copy(), phis))
    keep = ["cell", *GROUP_KEYS, "seed", "n_base", "n_syn", "test_acc", "n_test", "dispersion", "n_eff", "n_eff_lo",
            "n_eff_hi", "beta", "beta_lo", "beta_hi", "k", "k_lo", "k_hi", "verdict"]  # fmt: skip
    return eq, per_cell[keep].reset_index(drop=True)


def _with_beta(g: Group, frame: pd.DataFrame, phis: dict) -> pd.DataFrame:
    """Rows of counts (correct, n_test, n_base, n_syn) plus their arm's dispersion, n_eff and beta."""
    frame["dispersion"], q = arm_dispersion(frame, phis, g.level)
    cols = _beta_columns(g.curve, frame["correct"].to_numpy(), frame["n_test"].to_numpy(),
                         frame["dispersion"].to_numpy(), frame["n_base"].to_numpy(float),
                         frame["n_syn"].to_numpy(float), q)  # fmt: skip
    return frame.assign(**cols)


def _reasons(g: Group, eq: pd.DataFrame) -> list[str]:
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
