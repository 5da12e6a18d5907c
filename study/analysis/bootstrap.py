"""Parametric bootstrap of one (dataset, classifier) group: each done cell is redrawn as a new seed and a new test
sample would give it, a beta-binomial count about its group's pooled accuracy with its kind's dispersion phi
(plain binomial when phi = 1); then the curve and every n_eff and beta per (arm, base, volume) are refitted, and
percentile intervals taken.

Cost: one curve refit per replicate (~1 s for 1000 replicates of the logit-log GLM, ~5 s for a three-parameter
curve, on one CPU core). Never imports torch.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from study.analysis.cells import GROUP_KEYS, REAL_KINDS, Group
from study.analysis.curve import refit_curve
from study.analysis.exchange import arm_dispersion, dispersion_within, phi_of, pooled_logit


def redraw(rng, p, phi, m, n_boot: int) -> np.ndarray:
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


def percentiles(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanpercentile(draws, tail, axis=0), np.nanpercentile(draws, 100 - tail, axis=0)


def _draws(g: Group, phis: dict, n_boot: int, rng) -> np.ndarray:
    """(n_boot, done cells) redrawn correct counts; a shared real classifier's rows get one draw between them."""
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
    phi = np.full(len(done), phi_of(*dispersion_within(done[is_real], real_keys)))
    phi[~is_real] = arm_dispersion(done[~is_real], phis, g.level)[0]
    draws = redraw(rng, group_p, phi, done["n_test"].to_numpy(float), n_boot)
    pos = pd.Series(np.arange(len(done)), index=done.index)
    first = g.real.index.to_series().groupby([g.real[k] for k in g.measurement_key]).transform("first")
    draws[:, pos[g.real.index].to_numpy()] = draws[:, pos[first.to_numpy()].to_numpy()]
    return draws


def bootstrap(g: Group, eq: pd.DataFrame, phis: dict, n_boot: int, rng):
    """Replicates of beta per synthetic group (n_boot, groups; None without synthetic groups); also returns the
    curve's replicate params, to count failed refits."""
    done = g.done
    is_real = done["arm_kind"].isin(REAL_KINDS).to_numpy()
    draws = _draws(g, phis, n_boot, rng)
    m = done["n_test"].to_numpy(float)
    pos = pd.Series(np.arange(len(done)), index=done.index)
    curve_rows = pos[g.real_measurements.index].to_numpy()  # the curve refits each shared measurement once
    theta = np.array([refit_curve(g.curve, draws[b, curve_rows]) for b in range(n_boot)])  # curve's cell order
    beta = None
    if len(eq) and (~is_real).any():
        syn = done[~is_real]
        codes = eq.set_index(GROUP_KEYS).index.get_indexer(pd.MultiIndex.from_frame(syn[GROUP_KEYS]))
        onehot = np.zeros((len(syn), len(eq)))
        onehot[np.arange(len(syn)), codes] = 1.0
        y, mm = draws[:, ~is_real] @ onehot, m[~is_real] @ onehot
        ell, _ = pooled_logit(y, np.broadcast_to(mm, y.shape))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            u = g.curve.log_n(ell, theta[:, None, :])
            beta = (np.exp(u) - eq["n_base"].to_numpy(float)) / eq["n_syn"].to_numpy(float)
        beta[:, mm == 0] = np.nan  # groups whose every seed failed

    return beta, theta
