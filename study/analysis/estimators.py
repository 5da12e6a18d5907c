"""Summaries with intervals for the report and the benchmarks: means over seeds, test-set proportions and their
differences, paired gains, rank correlations. Every function returns numbers; formatting is the report's.

    t_interval([0.81, 0.84, 0.80], 0.9)           # mean over seeds with the Student t interval
    wilson_interval(431, 540, 0.9)                # a test-set accuracy (one seed): Wilson score interval
    newcombe_difference(431, 540, 402, 540, 0.9)  # accuracy a - accuracy b: Newcombe's hybrid score interval
    spearman(diagnostic, gain, 0.9)               # Spearman's rho with a Fisher-z interval
    head_to_head(done, arms, 0.9)                 # two ways of sampling the same generators, cell by cell

Methods: Wilson (1927) score interval (statsmodels `proportion_confint`); Newcombe (1998) method 10, the
difference of two independent proportions from their Wilson intervals (statsmodels
`confint_proportions_2indep(method="newcomb")`: sound at 0 and 1, unlike the Wald difference); Spearman's rho
(scipy) with the Fisher z interval tanh(atanh(rho) +- z 1.03 / sqrt(n - 3)) (Fieller, Hartley & Pearson 1957).
Costs milliseconds; never imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

# The range each metric lives in: t intervals are clipped to it.
RANGES = {"test_acc": (0, 1), "test_bacc": (0, 1), "test_auc": (0, 1), "test_nll": (0, np.inf), "test_ece": (0, 1)}
CELL_KEYS = ["arm", "arm_kind", "base_per_class", "extra_per_class", "volume_per_class"]  # a cell, seeds aside


def t_interval(values, level: float) -> tuple[float, float, float]:
    """Mean and the Student t interval of the mean (finite values only); no interval from one value."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    if np.all(values == values[0]):  # no spread: scipy's interval of a zero scale is (nan, nan)
        return mean, mean, mean
    lo, hi = stats.t.interval(level, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(lo), float(hi)


def wilson_interval(successes: int, n: int, level: float) -> tuple[float, float]:
    """Wilson score interval of the proportion successes / n."""
    lo, hi = proportion_confint(int(successes), int(n), alpha=1 - level, method="wilson")
    return float(lo), float(hi)


def newcombe_difference(y1: int, n1: int, y2: int, n2: int, level: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval of y1/n1 - y2/n2 (independent proportions)."""
    lo, hi = confint_proportions_2indep(int(y1), int(n1), int(y2), int(n2), method="newcomb", alpha=1 - level)
    return float(lo), float(hi)


def spearman(x, y, level: float) -> tuple[float, float, float] | None:
    """Spearman's rho of x and y with its Fisher-z interval; None with fewer than 4 points or no spread."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 4 or len(np.unique(x)) < 2 or len(np.unique(y)) < 2:
        return None
    rho = float(stats.spearmanr(x, y).statistic)
    half = stats.norm.ppf(0.5 + level / 2) * 1.03 / np.sqrt(len(x) - 3)
    lo, hi = np.tanh(np.arctanh(np.clip(rho, -0.999, 0.999)) + np.array([-half, half]))
    return rho, float(lo), float(hi)


# --- tables ------------------------------------------------------------------------------------------


def summarise(done: pd.DataFrame, level: float) -> pd.DataFrame:
    """Per cell (arm, base, extra, volume) over seeds: n, seeds, and mean/lo/hi of every metric (t intervals
    clipped to the metric's range). With one seed the accuracy interval is the Wilson interval of the test set
    alone (flagged `binomial`). `mean`, `lo`, `hi` repeat the accuracy's."""
    rows = []
    for key, g in done.groupby(CELL_KEYS, sort=True):
        row = dict(zip(CELL_KEYS, key, strict=True)) | {"n": len(g), "seeds": ",".join(map(str, sorted(g["seed"])))}
        for metric, bounds in RANGES.items():
            if metric in g:
                mean, lo, hi = t_interval(g[metric], level)
                row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = mean, *np.clip([lo, hi], *bounds)
        row["binomial"] = len(g) == 1 and pd.notna(g["n_test"].iloc[0])
        if row["binomial"]:
            n_test = int(g["n_test"].iloc[0])
            row["test_acc_lo"], row["test_acc_hi"] = wilson_interval(round(row["test_acc"] * n_test), n_test, level)
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out["mean"], out["lo"], out["hi"] = out["test_acc"], out["test_acc_lo"], out["test_acc_hi"]
    return out


def paired_gains(done: pd.DataFrame, level: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy gain of every real-extra and synthetic cell over real-only at the same base and seed.

    Returns (per-seed gains, summary per arm/base/added amount: n, mean, lo, hi, binomial). Over seeds: the t
    interval of the paired gains. With one seed: Newcombe's interval of the two test-set proportions (flagged
    `binomial`; conservative, since the two classifiers share the test set)."""
    real = done[done["arm"] == "real-only"].set_index(["base_per_class", "seed"])["test_acc"]
    other = done[done["arm"] != "real-only"].copy()
    other["added_per_class"] = np.where(other["arm"] == "real-extra", other["extra_per_class"],
                                        other["volume_per_class"])  # fmt: skip
    idx = pd.MultiIndex.from_frame(other[["base_per_class", "seed"]])
    other["real_acc"] = real.reindex(idx).to_numpy()
    other = other[other["real_acc"].notna()]
    other["gain"] = other["test_acc"] - other["real_acc"]
    rows = []
    for (arm, kind, base, added), g in other.groupby(["arm", "arm_kind", "base_per_class", "added_per_class"]):
        mean, lo, hi = t_interval(g["gain"], level)
        binomial = len(g) == 1 and pd.notna(g["n_test"].iloc[0])
        if binomial:
            n = int(g["n_test"].iloc[0])
            correct = (round(g["test_acc"].iloc[0] * n), round(g["real_acc"].iloc[0] * n))
            lo, hi = newcombe_difference(correct[0], n, correct[1], n, level)
        rows.append({"arm": arm, "arm_kind": kind, "base_per_class": base, "added_per_class": added, "n": len(g),
                     "mean": mean, "lo": lo, "hi": hi, "binomial": binomial})  # fmt: skip
    cols = ["arm", "arm_kind", "base_per_class", "added_per_class", "n", "mean", "lo", "hi", "binomial"]
    return other, pd.DataFrame(rows, columns=cols)


def head_to_head(done: pd.DataFrame, arms: list[str], level: float) -> pd.DataFrame:
    """Synthetic arms that sample the same trained generators (same `generator_key`: e.g. plain, AugGen and ScoreMix
    sampling of one closed-set generator), compared cell by cell: the metric of arm a minus that of arm b (a after
    b in `arms`) at the same generator, seed, base and volume. The unit is the generator: each one's mean
    difference over its matched cells, then the t interval over generators, so sampling noise, the generator's
    own quality and the test set are paired out and only what differs between two ways of sampling it is left.
    A seed's closed-set generators train on nested subsets of the same images, and their differences are taken as
    independent: the pairing removes what the shared images do to both arms alike, though not how they might
    favour one way of sampling over the other (an approximation; per-seed units would have 2 df with 3 seeds).
    Rows per pair of arms ("all" bases) and per pair and base: a, b, base_per_class, n_generators, n_cells, mean,
    lo, hi. Empty without generator keys or without two arms that share a generator."""
    cols = ["a", "b", "base_per_class", "n_generators", "n_cells", "mean", "lo", "hi"]
    syn = done[done["arm_kind"].isin(["closed", "open"])]
    if "generator_key" not in syn or syn["generator_key"].isna().all():
        return pd.DataFrame(columns=cols)
    match = ["generator_key", "seed", "base_per_class", "volume_per_class"]
    by_arm = {a: g.groupby(match)["test_acc"].mean() for a, g in syn[syn["generator_key"].notna()].groupby("arm")}
    order = [a for a in arms if a in by_arm]
    rows = []
    for i, b in enumerate(order):
        for a in order[i + 1 :]:
            diff = (by_arm[a] - by_arm[b]).dropna()  # index alignment pairs the matched cells
            if diff.empty:
                continue
            diff = diff.reset_index(name="d")
            for base, part in [("all", diff), *diff.groupby("base_per_class")]:
                per_gen = part.groupby("generator_key")["d"].mean()
                mean, lo, hi = t_interval(per_gen, level)
                rows.append({"a": a, "b": b, "base_per_class": base, "n_generators": len(per_gen),
                             "n_cells": len(part), "mean": mean, "lo": lo, "hi": hi})  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def gain_diagnostics(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One point per (arm, sample set): its cond_acc and the mean gain of the arm's cells trained on it (per-seed
    gains of `paired_gains`: its volumes, and for an open-set arm every base it serves). `samples_key` names the set
    (older tables without it: one set per arm, base and seed); `base_per_class` is the smallest base it serves."""
    cols = ["arm", "samples_key", "base_per_class", "seed", "diagnostic", "gain", "n_cells"]
    if "cond_acc" not in per_seed:
        return pd.DataFrame(columns=cols)
    pts = per_seed[per_seed["arm_kind"].isin(["closed", "open"]) & per_seed["cond_acc"].notna()].copy()
    if "samples_key" not in pts or pts["samples_key"].isna().any():
        pts["samples_key"] = (
            pts["arm"].astype(str) + "/b" + pts["base_per_class"].astype(str) + "/s" + pts["seed"].astype(str)
        )
    out = pts.groupby(["arm", "samples_key"], dropna=False).agg(
        base_per_class=("base_per_class", "min"), seed=("seed", "first"), diagnostic=("cond_acc", "first"),
        gain=("gain", "mean"), n_cells=("gain", "size")).reset_index()  # fmt: skip
    return out[cols]


def spearman_by_arm(points: pd.DataFrame, level: float) -> pd.DataFrame:
    """Spearman's rho of diagnostic and gain per arm and, with several arms, over all of them with one point per
    distinct sample set (arms that share a set, e.g. two mixing policies of one generator, average their gains on
    it): arm, n, rho, lo, hi (NaN with too few distinct points)."""
    groups = list(points.groupby("arm", sort=False))
    if points["arm"].nunique() > 1:
        key = "samples_key" if "samples_key" in points else None
        pooled = points if key is None else points.groupby(key, as_index=False).agg(
            diagnostic=("diagnostic", "first"), gain=("gain", "mean"))  # fmt: skip
        groups.append(("all arms", pooled))
    rows = []
    for arm, g in groups:
        rho = spearman(g["diagnostic"], g["gain"], level) or (np.nan, np.nan, np.nan)
        rows.append({"arm": arm, "n": len(g), "rho": rho[0], "lo": rho[1], "hi": rho[2]})
    return pd.DataFrame(rows, columns=["arm", "n", "rho", "lo", "hi"])


def sample_set_means(done: pd.DataFrame, columns: list[str], level: float) -> pd.DataFrame:
    """Per synthetic arm: strategy, labels, the number of its sample sets, and the mean with t interval over
    them of each column in `columns` (`<col>`, `<col>_lo`, `<col>_hi`); one row per sample set, since a set's
    volumes share its diagnostics."""
    sets = done[done["samples_key"].notna()].drop_duplicates(["arm", "samples_key"])
    rows = []
    for arm, g in sets.groupby("arm", sort=False):
        row = {"arm": arm, "strategy": g["strategy"].iloc[0], "labels": g.get("labels", pd.Series(["—"])).iloc[0],
               "n_sets": len(g)}  # fmt: skip
        for col in columns:
            row[col], row[f"{col}_lo"], row[f"{col}_hi"] = t_interval(g[col], level)
        rows.append(row)
    return pd.DataFrame(rows)
