"""Sample-set diagnostics against the gain: one point per distinct sample set, rank correlations, and which
diagnostic separates the arms that helped from those that did not. Torch-free; reads the cells table.

    points = sample_set_points(cells, per_cell_beta)        # one row per (sample set, base): diagnostics, beta
    correlations(points, level=0.9)                         # Spearman rho of beta vs each diagnostic, Fisher z
    separations(points, helped={"closed": False, "open": True})   # per arm: the best-separating diagnostic

A sample set is counted once: the cells trained on it (its volumes, and arms that differ only in how it is mixed
into batches) share its diagnostics, so they are pooled into one point whose beta is the mean of their
per-cell betas. Counting every cell would multiply n without adding information and shrink the intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from study.analysis.estimators import spearman

# Diagnostic column -> (short label, what a "worse" value means for a generator), in the report's order.
DIAGNOSTICS = {
    "mem_frac": "near-copy share (pixels)",
    "mem_ratio": "NN distance ratio base/outside (pixels)",
    "mem_frac_feat": "near-copy share (judge features)",
    "mem_ratio_feat": "NN distance ratio base/outside (judge features)",
    "gen_mem_frac": "near-copy share of the generator's training set",
    "gen_mem_ratio": "NN distance ratio own train/val",
    "fd": "FD (judge features)",
    "kd": "KD (judge features)",
    "precision": "precision (k=3)",
    "recall": "recall (k=3)",
    "density": "density (k=5)",
    "coverage": "coverage (k=5)",
    "domain_auc": "domain classifier AUC",
    "cas": "CAS (synthetic-only accuracy)",
    "fid": "FID (Inception-v3)",
}
POINT_KEYS = ["diagnostics_key", "arms", "arm", "base_per_class", "seed"]


def available(cells: pd.DataFrame) -> list[str]:
    """The diagnostic columns the table has with at least one value."""
    return [c for c in DIAGNOSTICS if c in cells and pd.to_numeric(cells[c], errors="coerce").notna().any()]


def sample_set_points(cells: pd.DataFrame, per_cell: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per diagnostics key (a sample set at one base): the arms trained on it (joined by ' = ', grid
    order), the first of them, base, seed, every diagnostic, `beta` (mean per-cell beta of its cells, from
    equivalence.Equivalence.per_cell; NaN without it), `gain` (mean accuracy gain over real-only at the same
    base and seed, when the table has `gain`) and `n_cells`."""
    cols = available(cells)
    if "diagnostics_key" not in cells or not cols:
        return pd.DataFrame(columns=[*POINT_KEYS, *DIAGNOSTICS, "beta", "n_cells"])
    syn = cells[cells["diagnostics_key"].notna() & (cells["status"] == "done")].copy()
    if per_cell is not None and len(per_cell):
        syn = syn.merge(per_cell[["cell", "beta"]], on="cell", how="left")
    else:
        syn["beta"] = np.nan
    order = {a: i for i, a in enumerate(dict.fromkeys(cells["arm"]))}
    rows = []
    for key, g in syn.groupby("diagnostics_key", sort=False):
        arms = sorted(g["arm"].unique(), key=order.get)
        row = {"diagnostics_key": key, "arms": " = ".join(arms), "arm": arms[0],
               "base_per_class": int(g["base_per_class"].iloc[0]), "seed": int(g["seed"].iloc[0]),
               "beta": float(g["beta"].mean()), "n_cells": len(g)}  # fmt: skip
        if "gain" in g:
            row["gain"] = float(g["gain"].mean())
        row |= {c: pd.to_numeric(g[c], errors="coerce").iloc[0] for c in cols}
        rows.append(row)
    return pd.DataFrame(rows)


def spearman_interval(x, y, level: float) -> tuple[float, float, float, int]:
    """study.analysis.estimators.spearman on the finite pairs, with n; NaN where it is undefined."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    found = spearman(x[keep], y[keep], level)
    return (*(found or (np.nan, np.nan, np.nan)), int(keep.sum()))


def correlations(points: pd.DataFrame, level: float, target: str = "beta") -> pd.DataFrame:
    """Spearman rho of `target` against each diagnostic, over the sample-set points (one per set)."""
    rows = []
    for col in [c for c in DIAGNOSTICS if c in points]:
        rho, lo, hi, n = spearman_interval(points[col], points[target], level)
        rows.append({"diagnostic": col, "n": n, "rho": rho, "rho_lo": lo, "rho_hi": hi})
    return pd.DataFrame(rows, columns=["diagnostic", "n", "rho", "rho_lo", "rho_hi"])


def _members(points: pd.DataFrame, arm: str) -> pd.Series:
    return points["arms"].str.split(" = ").map(lambda arms: arm in arms)


def separations(points: pd.DataFrame, helped: dict[str, bool]) -> pd.DataFrame:
    """For each arm: the diagnostic whose sample-set values best separate it from the arms of the other outcome
    (helped = its beta's interval lies above 0). Separation is the rank AUC P(X_arm > X_other) + P(=)/2 of the
    Mann-Whitney statistic (0.5: no separation, 0 or 1: none of the values overlap); sets shared with an arm
    of the other outcome cannot separate and are left out of the other side. `other` is NaN-free only where the
    arm has a contrast."""
    rows = []
    for arm, ok in helped.items():
        mine = points[_members(points, arm)]
        rivals = [a for a, o in helped.items() if o != ok]
        other = points[points["arms"].str.split(" = ").map(set(rivals).intersection).astype(bool)]
        other = other[~other["diagnostics_key"].isin(mine["diagnostics_key"])]
        row = {"arm": arm, "helped": ok, "rivals": rivals, "n_sets": len(mine), "n_other": len(other),
               "shared": bool(rivals) and other.empty and len(mine) > 0, "diagnostic": None}  # fmt: skip
        best = 0.0
        for col in [c for c in DIAGNOSTICS if c in points]:
            x, y = mine[col].dropna().to_numpy(float), other[col].dropna().to_numpy(float)
            if len(x) == 0 or len(y) == 0:
                continue
            auc = float(stats.mannwhitneyu(x, y).statistic / (len(x) * len(y)))
            if abs(auc - 0.5) > best:
                best = abs(auc - 0.5)
                row |= {"diagnostic": col, "auc": auc, "mean": float(x.mean()), "other_mean": float(y.mean())}
        rows.append(row)
    return pd.DataFrame(rows)


def most_memorised(points: pd.DataFrame) -> str | None:
    """The arms label whose sample sets have the highest mean near-copy share (pixels), else the lowest mean
    distance ratio; None without memorisation values."""
    for col, largest in (("mem_frac", True), ("mem_ratio", False)):
        if col in points and points[col].notna().any():
            means = points.groupby("arms", sort=False)[col].mean().dropna()
            return str(means.idxmax() if largest else means.idxmin())
    return None
