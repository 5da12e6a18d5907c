"""Estimators of study.analysis.estimators against published worked examples and closed forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study.analysis.estimators import (
    gain_diagnostics,
    head_to_head,
    newcombe_difference,
    paired_gains,
    spearman,
    spearman_by_arm,
    summarise,
    t_interval,
    wilson_interval,
)


def test_t_interval_of_the_mean():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0, np.nan], 0.9)  # NaN (a failed seed) is left out
    half = stats.t.ppf(0.95, 2) * 1.0 / np.sqrt(3)  # sd 1, n 3
    assert mean == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert t_interval([0.5, 0.5], 0.9) == (0.5, 0.5, 0.5)  # no spread: a point
    assert np.isnan(t_interval([0.7], 0.9)[1]) and np.isnan(t_interval([], 0.9)[0])


def test_wilson_and_newcombe_reproduce_newcombe_1998():
    # Newcombe (1998), Stat Med 17:857 and 17:873: 81/263 -> 0.2553 to 0.3662 (score interval); 56/70 - 48/80
    # -> 0.0524 to 0.3339 (method 10, the hybrid score interval).
    assert wilson_interval(81, 263, 0.95) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert newcombe_difference(56, 70, 48, 80, 0.95) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def test_one_seed_gain_uses_newcombe_not_wald():
    """At the edge the Wald difference of two proportions collapses: two perfect scores give the point [0, 0]
    and 100% vs 98% a symmetric interval that ignores the perfect score's uncertainty. Newcombe's does neither.
    The report and the generator bench use this one method."""
    rows = [{"arm": arm, "arm_kind": kind, "seed": 0, "base_per_class": 5, "extra_per_class": 0,
             "volume_per_class": vol, "test_acc": acc, "n_test": 100}
            for arm, kind, vol, acc in (("real-only", "real-only", 0, 0.98), ("closed", "closed", 10, 1.0),
                                        ("real-extra", "real-extra", 0, 0.98))]  # fmt: skip
    rows[2]["extra_per_class"] = 5
    _, gains = paired_gains(pd.DataFrame(rows), level=0.9)
    g = gains.set_index("arm").loc["closed"]
    assert g["binomial"] and g["mean"] == pytest.approx(0.02)
    assert (g["lo"], g["hi"]) == pytest.approx(newcombe_difference(100, 100, 98, 100, 0.9))
    assert g["hi"] - 0.02 > 0.02 - g["lo"]  # asymmetric: more room above than below
    lo, hi = newcombe_difference(100, 100, 100, 100, 0.9)
    assert lo < -0.02 and hi > 0.02  # Wald: sqrt(0 + 0) = 0, a zero-width interval
    assert gains.set_index("arm").loc["real-extra", "mean"] == 0.0


def _sampled_cells(rng, generators: dict[str, tuple[int, int]], shift: dict[str, float]) -> pd.DataFrame:
    """Cells of arms that sample the same closed-set generators (key -> (seed, base)): a generator's own quality
    (large, shared by its arms) plus the arm's planted shift plus cell noise, at volumes 1..8 x base."""
    rows = []
    for key, (seed, base) in generators.items():
        quality = rng.normal(0.6, 0.05)
        for vol in (1, 2, 4, 8):
            for arm, delta in shift.items():
                rows.append({"arm": arm, "arm_kind": "closed", "generator_key": key, "seed": seed,
                             "base_per_class": base, "extra_per_class": 0, "volume_per_class": vol * base,
                             "test_acc": quality + delta + rng.normal(0, 0.005), "n_test": 1000})  # fmt: skip
    return pd.DataFrame(rows)


def test_head_to_head_pairs_out_the_generator_and_recovers_the_shift():
    """Two ways of sampling the same generators: their difference is found with the generators' large spread
    (sd 0.05) paired out, one value per generator, and the t interval over generators covers the planted 0.02.
    Arms without a shared generator (open) are not compared; a cell without its partner is left out."""
    rng = np.random.default_rng(0)
    gens = {f"g-s{s}-b{b}": (s, b) for s in range(3) for b in (5, 10, 20)}
    done = _sampled_cells(rng, gens, {"conditional": 0.0, "scoremix-far": 0.02})
    open_set = done[done["arm"] == "conditional"].assign(arm="open", arm_kind="open", generator_key="pool")
    done = pd.concat([done, open_set], ignore_index=True)
    done = done.drop(index=done.index[done["arm"] == "scoremix-far"][-1])  # one scoremix cell failed: not in `done`
    pairs = head_to_head(done, ["real-only", "conditional", "scoremix-far", "open"], 0.9)
    assert set(zip(pairs["a"], pairs["b"], strict=True)) == {("scoremix-far", "conditional")}
    every = pairs.set_index("base_per_class").loc["all"]
    assert every["n_generators"] == 9 and every["n_cells"] == 35
    assert every["lo"] < 0.02 < every["hi"] and every["hi"] - every["lo"] < 0.02  # sd 0.05 would give ~0.06
    per_base = pairs[pairs["base_per_class"] != "all"]
    assert list(per_base["n_generators"]) == [3, 3, 3] and list(per_base["base_per_class"]) == [5, 10, 20]
    assert head_to_head(done.drop(columns="generator_key"), ["conditional", "scoremix-far"], 0.9).empty


def test_summary_of_one_seed_is_the_wilson_interval():
    done = pd.DataFrame([{"arm": "real-only", "arm_kind": "real-only", "seed": 0, "base_per_class": 5,
                          "extra_per_class": 0, "volume_per_class": 0, "test_acc": 0.8, "n_test": 500}])  # fmt: skip
    row = summarise(done, level=0.9).iloc[0]
    assert row["binomial"] and (row["lo"], row["hi"]) == pytest.approx(wilson_interval(400, 500, 0.9))


def test_spearman_with_its_fisher_z_interval():
    x = np.arange(10.0)
    rho, lo, hi = spearman(x, x**3, 0.9)  # monotone: rho = 1
    half = stats.norm.ppf(0.95) * 1.03 / np.sqrt(7)
    assert rho == pytest.approx(1.0) and lo == pytest.approx(np.tanh(np.arctanh(0.999) - half)) and hi <= 1.0
    assert spearman(x[:3], x[:3], 0.9) is None and spearman(x, np.ones(10), 0.9) is None
    points = pd.DataFrame({"arm": ["a"] * 10 + ["b"] * 3, "diagnostic": np.r_[x, 0, 1, 2], "gain": np.r_[-x, 0, 1, 2]})
    table = spearman_by_arm(points, 0.9).set_index("arm")
    assert (
        table.loc["a", "rho"] == pytest.approx(-1.0)
        and np.isnan(table.loc["b", "rho"])
        and table.loc["all arms", "n"] == 13
    )


def test_diagnostic_correlations_count_each_sample_set_once():
    """Two arms sharing their sample sets (two mixing policies of one generator) and an open-set arm whose one set
    per seed serves three bases: 3 + 3 distinct sets, not 2 x 3 + 3 x 3 = 15 points."""
    rows = []
    for seed in range(3):
        for arm, kind in (("closed", "closed"), ("closed-30", "closed")):
            rows.append({"arm": arm, "arm_kind": kind, "seed": seed, "base_per_class": 10, "cond_acc": 0.9 + seed / 100,
                         "gain": 0.01 * seed, "samples_key": f"c{seed}"})  # fmt: skip
        for base in (5, 10, 20):
            rows.append({"arm": "open", "arm_kind": "open", "seed": seed, "base_per_class": base,
                         "cond_acc": 0.95 + seed / 100, "gain": 0.02 * seed + 0.001 * base, "samples_key": f"o{seed}"})  # fmt: skip
    points = gain_diagnostics(pd.DataFrame(rows))
    assert len(points) == 9 and points.groupby("arm").size().to_dict() == {"closed": 3, "closed-30": 3, "open": 3}
    assert points.set_index(["arm", "samples_key"]).loc[("open", "o1"), "n_cells"] == 3
    table = spearman_by_arm(points, 0.9).set_index("arm")
    assert table.loc["all arms", "n"] == 6  # c0-c2 once each, o0-o2


def test_the_generator_bench_uses_these_intervals():
    bench = pytest.importorskip("study.bench.generator")
    assert bench.wilson_interval is wilson_interval and bench.newcombe_difference is newcombe_difference
