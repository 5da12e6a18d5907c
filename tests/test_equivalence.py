"""The equivalence analysis on simulated cells tables whose truth is planted (study.analysis.simulate)."""

from __future__ import annotations

import functools
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from study.analysis.cells import Group, check_cells
from study.analysis.curve import fit_curve
from study.analysis.equivalence import (
    REQUIRED_COLUMNS,
    EquivalenceError,
    analyse,
    k_of,
    logit_log,
    main,
    power_law,
    verdict_of,
    write_tables,
)
from study.analysis.exchange import arm_phis, equivalence_rows
from study.analysis.simulate import PlantedArm, simulate_cells
from study.table import COLUMNS

GAIN, HARM = PlantedArm("gain", beta=0.4), PlantedArm("harm", beta=-0.1, kind="open")


def covered(lo, hi, truth) -> np.ndarray:
    return ((np.asarray(lo) <= truth) & (truth <= np.asarray(hi))).astype(float)


# --- the simulator -----------------------------------------------------------------------------------


def test_simulator_writes_the_table_contract_deterministically():
    cells = simulate_cells([GAIN, HARM], fail_rate=0.2, seed=3)
    assert list(cells.columns) == COLUMNS
    assert set(REQUIRED_COLUMNS) <= set(cells.columns)
    pd.testing.assert_frame_equal(cells, simulate_cells([GAIN, HARM], fail_rate=0.2, seed=3))
    assert not cells["test_acc"].equals(simulate_cells([GAIN, HARM], fail_rate=0.2, seed=4)["test_acc"])
    done = cells[cells["status"] == "done"]
    assert (done["n_base"] == done["base_per_class"] * 10).all()
    assert (done["n_syn"] == done["volume_per_class"] * 10).all()
    assert (done["n_extra"] == done["extra_per_class"] * 10).all()
    assert ((done["test_acc"] * done["n_test"]) % 1 == 0).all()  # whole correct counts
    failed = cells[cells["status"] == "failed"]
    assert len(failed) > 0 and failed["test_acc"].isna().all() and (failed["error"] != "").all()
    assert set(cells["arm_kind"]) == {"real-only", "real-extra", "closed", "open"}
    # 3 seeds x 3 bases x (1 real-only + 2 real-extra + 2 arms x 2 volumes)
    assert len(cells) == 3 * 3 * (1 + 2 + 2 * 2)


def test_simulator_rejects_impossible_truths():
    with pytest.raises(ValueError, match="exactly one of `beta` or `c2`"):
        PlantedArm("x")
    with pytest.raises(ValueError, match="c2 must be > 1"):
        PlantedArm("x", c2=0.5)
    with pytest.raises(ValueError, match="n_eff = .* <= 0"):
        simulate_cells([PlantedArm("x", beta=-0.5)])  # 100 real images lose 400 to 800 synthetic ones
    with pytest.raises(ValueError, match="distinct"):
        simulate_cells([GAIN, GAIN])


# --- statistical checks ------------------------------------------------------------------------------


def _group_rows(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-(arm, base, volume) and per-cell exchange rates alone (no joint model: it has its own tests)."""
    table, _ = check_cells(cells)
    g = Group("simulated", "simulated", table, 0.9)
    g = replace(g, curve=fit_curve(g.real_measurements, floor=g.chance))
    return equivalence_rows(g, arm_phis(g))


@pytest.mark.slow
def test_intervals_cover_the_planted_beta_at_close_to_the_nominal_rate():
    """Over 40 simulated studies (3 seeds, seed-to-seed noise on top of the binomial test noise), the 90%
    intervals for beta per group (delta method) and per cell cover the planted beta 80-97% of the time. (The
    joint model's per-arm intervals: tests/test_intervals.py and python -m study.analysis.coverage.)"""
    truth = {"gain": 0.4, "harm": -0.1}
    group_cover, cell_cover = [], []
    for sim in range(40):
        e, c = _group_rows(simulate_cells([GAIN, HARM], cell_sd=0.1, seed=1000 + sim))
        group_cover.append(covered(e["beta_lo"], e["beta_hi"], e["arm"].map(truth)))
        cell_cover.append(covered(c["beta_lo"], c["beta_hi"], c["arm"].map(truth)))
    for name, cover in (("group", group_cover), ("cell", cell_cover)):
        rate = np.concatenate(cover).mean()
        assert 0.80 <= rate <= 0.97, f"{name} intervals cover {rate:.1%} of the time, nominal 90%"


@pytest.mark.slow
def test_joint_model_estimates_are_centred_on_the_planted_beta():
    """The median of 10 joint-model estimates lies within 3 Monte-Carlo standard errors of the planted beta (the
    SE of a median: 1.25 sd / sqrt(n))."""
    betas = pd.DataFrame([analyse(simulate_cells([GAIN, HARM], cell_sd=0.1, seed=1000 + sim), n_boot=0,
                                  by_base=False).fit.set_index("arm")["beta"] for sim in range(10)])  # fmt: skip
    for arm, truth in (("gain", 0.4), ("harm", -0.1)):
        se = 1.25 * betas[arm].std() / np.sqrt(len(betas))
        assert abs(betas[arm].median() - truth) < 3 * se, (arm, betas[arm].tolist())


def test_delta_method_agrees_with_the_bootstrap():
    cells = simulate_cells([GAIN, HARM], cell_sd=0.1, seed=5)
    e = analyse(cells, n_boot=400, by_base=False, seed=1).equivalence
    width = e["beta_hi"] - e["beta_lo"]
    assert ((e["beta_lo"] - e["beta_lo_boot"]).abs() < 0.15 * width).all()
    assert ((e["beta_hi"] - e["beta_hi_boot"]).abs() < 0.15 * width).all()
    assert ((e["beta_hi_boot"] - e["beta_lo_boot"]) / width).between(0.8, 1.2).all()


def test_harm_no_gain_and_better_than_real_are_reported_as_such():
    arms = [PlantedArm("harm", beta=-0.1), PlantedArm("zero", beta=0.0), PlantedArm("better", beta=2.0)]
    eq = analyse(simulate_cells(arms, seed=7), n_boot=0)
    fit = eq.fit.set_index("arm")
    assert fit.loc["harm", "verdict"] == "hurts" and fit.loc["harm", "beta_hi"] < 0
    assert (
        fit.loc["zero", "verdict"] == "no measurable gain"
        and fit.loc["zero", "beta_lo"] < 0 < fit.loc["zero", "beta_hi"]
    )
    assert fit.loc["better", "verdict"] == "gain" and fit.loc["better", "beta_lo"] > 1
    # k only where beta's interval is above zero: inf otherwise; a gain better than real data gives k < 1.
    assert np.isinf(fit.loc["harm", ["k", "k_lo", "k_hi"]].astype(float)).all()
    assert np.isinf(fit.loc["zero", "k"]) and np.isinf(fit.loc["zero", "k_hi"]) and fit.loc["zero", "k_lo"] > 0
    assert fit.loc["better", "k_lo"] < fit.loc["better", "k"] < fit.loc["better", "k_hi"] < 1
    assert fit.loc["better", "k"] == pytest.approx(1 / fit.loc["better", "beta"])
    # Every (arm, base, volume) keeps its row; most carry their arm's verdict.
    e = eq.equivalence
    assert len(e) == 3 * 3 * 2
    expected = e["arm"].map({"harm": "hurts", "zero": "no measurable gain", "better": "gain"})
    assert (e["verdict"] == expected).groupby(e["arm"]).mean().min() >= 2 / 3
    assert (e.loc[e["verdict"] != "gain", "k"] == np.inf).all()
    by_base = eq.fit_by_base.set_index(["arm", "base_per_class"])
    assert len(by_base) == 9 and (by_base.loc["harm", "verdict"] != "gain").all()


def test_verdict_and_k_rules():
    verdict = verdict_of([0.1, -0.5, -0.2, np.nan], [0.4, -0.1, 0.3, 0.2])
    assert list(verdict) == ["gain", "hurts", "no measurable gain", "not estimable"]
    k, k_lo, k_hi = k_of([0.2, -0.3, 0.05, np.nan], [0.1, -0.5, -0.2, np.nan], [0.4, -0.1, 0.3, 0.2], verdict)
    np.testing.assert_allclose(k, [5, np.inf, np.inf, np.nan])
    np.testing.assert_allclose(k_lo, [2.5, np.inf, 1 / 0.3, np.nan])
    np.testing.assert_allclose(k_hi, [10, np.inf, np.inf, np.nan])


def test_closed_form_recovers_planted_c2():
    """The paper's form planted with c1 = 1.01, c2 = 2.5, K = 10 classes; the curve is kept mid-range so that
    accuracies still move with added data. Fitted by binomial likelihood on every cell, profile intervals."""
    curve = functools.partial(logit_log, a=-3.0, b=0.6)
    arm = PlantedArm("paper", c1=1.01, c2=2.5)
    c2, c2_cover, c1_cover = [], [], []
    for sim in range(3):
        cells = simulate_cells([arm], bases=(20, 40, 80), extras=(10, 20, 40), volumes=(4, 16, 64, 256),
                               n_test=10000, curve=curve, seed=sim)  # fmt: skip
        eq = analyse(cells, n_boot=0, by_base=False, seed=sim)
        f = eq.fit.iloc[0]
        assert f["closed_form_interval"].startswith("profile likelihood") and f["K"] == 10
        assert f["closed_form_points"] > 0 and np.isnan(f["K_lo"]) and np.isnan(f["c2_published"])
        c2.append(f["c2"])
        c2_cover.append(f["c2_lo"] <= 2.5 <= f["c2_hi"])
        c1_cover.append(f["c1_lo"] <= 1.01 <= f["c1_hi"])
    assert np.median(c2) == pytest.approx(2.5, rel=0.08)
    assert sum(c2_cover) >= 2 and sum(c1_cover) >= 2
    # The fitted curve passes through the interpolated points of the figure (up to their noise).
    points = eq.closed_form[eq.closed_form["status"] == "ok"]
    fitted = [
        eq.closed_form_curve("paper", b, x)
        for b, x in zip(points["base_per_class"], points["n_real_plus"], strict=True)
    ]
    assert np.median(np.abs(np.log(np.array(fitted, float) / points["n_syn_star"].astype(float)))) < 0.25


def test_a_saturating_curve_is_chosen_by_aic_over_the_logit_log():
    curve = functools.partial(power_law, e_inf=0.1, amp=2.0, alpha=0.5)  # saturates at 90%: logit-log cannot
    cells = simulate_cells([GAIN], bases=(10, 20, 40, 80), extras=(20, 80, 320), volumes=(20, 80), n_test=5000,
                           curve=curve, seed=2)  # fmt: skip
    eq = analyse(cells, n_boot=0, by_base=False)
    assert eq.curve.model in ("power-law", "bounded-logit-log") and "lowest AIC" in eq.curve.reason
    good = eq.curve.goodness.set_index("model")
    assert good.loc["glm-logit-log", "lof_p"] < 0.05 < good.loc[eq.curve.model, "lof_p"]
    assert good.loc["glm-logit-log", "delta_qaic"] > 10 and good.loc[eq.curve.model, "delta_qaic"] == 0
    assert eq.curve.acc(1e6) == pytest.approx(0.9, abs=0.02)  # the ceiling
    e = eq.equivalence
    assert covered(e["beta_lo"], e["beta_hi"], 0.4).mean() >= 0.75
    f = eq.fit.iloc[0]
    assert f["curve_model"] == eq.curve.model and f["beta_lo"] <= 0.4 <= f["beta_hi"]


def test_curve_inverts_and_glm_is_kept_when_it_fits():
    eq = analyse(simulate_cells([GAIN], seed=1), n_boot=0, by_base=False)
    curve = eq.curve
    assert curve.model == "glm-logit-log" and "lowest" in curve.reason
    assert curve.params["b"] == pytest.approx(0.7, abs=0.1) and curve.increasing
    n = np.array([50.0, 300.0, 2000.0])
    np.testing.assert_allclose(curve.n(curve.acc(n)), n, rtol=1e-9)
    assert curve.n_range == (100.0, 700.0)
    assert {"deviance", "df", "pearson_chi2", "dispersion", "lof_F", "lof_p", "aic", "qaic"} <= set(curve.goodness)
    assert set(curve.goodness["model"]) == {"glm-logit-log", "bounded-logit-log", "power-law"}
    for model in ("bounded-logit-log", "power-law"):  # every family inverts
        from study.analysis.curve import FAMILIES

        theta = {"bounded-logit-log": [-3.0, 0.8, 0.95], "power-law": [0.05, 3.0, 0.6]}[model]
        acc = FAMILIES[model].acc(n, *theta, floor=0.1)
        back = np.exp(FAMILIES[model].log_n(np.log(acc / (1 - acc)), *theta, floor=0.1))
        np.testing.assert_allclose(back, n, rtol=1e-7)


# --- reduced analyses and bad tables -----------------------------------------------------------------


def test_single_base_size_reports_c2_but_not_c1():
    arms = [PlantedArm("paper", c2=2.5)]
    cells = simulate_cells(arms, bases=(20,), extras=(10, 20, 40), volumes=(5, 10, 20, 40, 80, 160), seed=0)
    eq = analyse(cells, n_boot=50, by_base=False)
    fit = eq.fit.set_index("arm")
    assert np.isnan(fit.loc["paper", "c1"]) and "single base size" in fit.loc["paper", "closed_form_reason"]
    assert fit.loc["paper", "c2_lo"] < 2.5 < fit.loc["paper", "c2_hi"]
    assert any("single base size" in note for note in eq.notes)
    assert (fit["verdict"] == "gain").all()  # beta itself is still estimated from one base


def test_linear_exchange_puts_c2_at_its_limit_and_says_so():
    # A constant exchange rate makes n_syn* linear in n_real+: c2 -> 1 while c1 runs off. Near noise-free,
    # with volumes tight around extra / beta so that interpolation does not bend the line.
    volumes = (24, 25, 26, 49, 50, 51, 99, 100, 101)
    cells = simulate_cells([GAIN], bases=(20,), extras=(10, 20, 40), volumes=volumes, n_test=10**7)
    f = analyse(cells, n_boot=0, by_base=False).fit.iloc[0]
    assert (
        1 < f["c2"] < 1.02 and f["c2_lo"] <= 1.01 and np.isnan(f["c1"]) and "lower limit 1" in f["closed_form_reason"]
    )
    assert f["beta"] == pytest.approx(0.4, rel=0.01)


def test_no_real_extra_cells_fit_the_closed_form_on_the_curve_without_points():
    eq = analyse(simulate_cells([GAIN], extras=(), seed=0), n_boot=0, by_base=False)
    f = eq.fit.iloc[0]
    assert f["closed_form_points"] == 0 and eq.closed_form.empty
    assert any("no real-extra cells" in note for note in eq.notes)
    assert eq.curve.n_range == (100.0, 400.0)  # the curve rests on the real-only cells of three bases
    assert (eq.equivalence["verdict"] == "gain").mean() > 0.5 and f["verdict"] == "gain"


def test_one_real_size_gives_no_curve_and_says_why():
    eq = analyse(simulate_cells([GAIN], bases=(20,), extras=(), seed=0), n_boot=10)
    assert eq.curve is None
    assert (eq.equivalence["verdict"] == "not estimable").all()
    assert eq.equivalence["reason"].str.contains("one training size only").all()
    assert any("one training size only" in note for note in eq.notes)


def test_all_cells_failed_is_a_reduced_analysis_listing_them():
    cells = simulate_cells([GAIN], fail_rate=1.0)
    eq = analyse(cells)
    assert len(eq.failed) == len(cells) and eq.curve is None
    assert "every cell failed: nothing to estimate" in eq.notes
    assert (eq.equivalence["verdict"] == "not estimable").all() and (eq.equivalence["n_seeds"] == 0).all()
    assert (eq.equivalence["reason"] == "every seed failed (3)").all()


def test_failed_cells_are_counted_and_excluded_never_dropped():
    cells = simulate_cells([GAIN], fail_rate=0.2, seed=0)
    failed = cells["status"] == "failed"
    eq = analyse(cells, n_boot=20, by_base=False)
    assert len(eq.failed) == failed.sum() > 0
    assert set(eq.failed["cell"]) == set(cells.loc[failed, "cell"])
    assert any(f"{failed.sum()} of {len(cells)} cells failed" in note for note in eq.notes)
    e = eq.equivalence
    synthetic = cells["arm_kind"] == "closed"
    assert len(e) == 3 * 2 and e["n_failed"].sum() == (failed & synthetic).sum()
    assert (e["n_seeds"] + e["n_failed"] == 3).all()
    assert eq.fit.iloc[0]["n_failed"] == (failed & synthetic).sum()
    assert len(eq.per_cell) == (~failed & synthetic).sum()


def test_missing_columns_are_named():
    cells = simulate_cells([GAIN]).drop(columns=["n_test", "arm_kind"])
    with pytest.raises(EquivalenceError, match=r"missing column\(s\) \['arm_kind', 'n_test'\]"):
        analyse(cells)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("status", "running", r"'status' has \['running'\].*expected one of \['done', 'failed'\]"),
        ("arm_kind", "synthetic", r"'arm_kind' has \['synthetic'\]"),
        ("test_acc", 1.5, r"'test_acc' must be an accuracy in \[0, 1\].*real-only-base10-s0"),
        ("n_test", 0, r"'n_test' must be a positive whole number"),
        ("n_base", 101, r"'n_base' must be a whole multiple of base_per_class"),
        ("cell", "same", r"cell names repeat"),
    ],
)
def test_bad_values_are_named(column, value, message):
    cells = simulate_cells([GAIN])
    cells[column] = cells[column].astype(object)
    cells.loc[[0, 1] if column == "cell" else 0, column] = value
    with pytest.raises(EquivalenceError, match=message):
        analyse(cells)


def test_bad_arguments_and_inconsistent_sizes_are_named():
    cells = simulate_cells([GAIN])
    with pytest.raises(EquivalenceError, match="level must be in"):
        analyse(cells, level=90)
    with pytest.raises(EquivalenceError, match="n_boot must be"):
        analyse(cells, n_boot=-1)
    syn = cells.index[cells["arm_kind"] == "closed"][0]
    cells.loc[syn, "n_syn"] = 7
    with pytest.raises(EquivalenceError, match=r"'n_syn' must be volume_per_class x classes .*gain-base10-vol20-s0"):
        analyse(cells)
    with pytest.raises(EquivalenceError, match="no rows"):
        analyse(cells.iloc[:0])


def test_mix_is_part_of_what_an_arm_is():
    uniform = simulate_cells([PlantedArm("closed", beta=0.4)], seed=0)
    mixed = simulate_cells([PlantedArm("closed", beta=0.1, mix="fraction=0.3")], seed=1)
    mixed = mixed[mixed["arm"] == "closed"].assign(cell=lambda d: d["cell"] + "-fraction=0.3")
    eq = analyse(pd.concat([uniform, mixed], ignore_index=True), n_boot=0, by_base=False)
    assert sorted(eq.fit["mix"]) == ["fraction=0.3", "uniform"]
    assert len(eq.equivalence) == 2 * 3 * 2
    with pytest.raises(ValueError, match="matches 2 rows"):
        eq.closed_form_curve("closed", 20, 100)
    assert np.isfinite(eq.closed_form_curve("closed", 20, [100.0], mix="uniform")).all()


# --- files and command line --------------------------------------------------------------------------


def test_tables_written_atomically_and_read_back(tmp_path):
    eq = analyse(simulate_cells([GAIN, HARM], seed=0), n_boot=50, by_base=False)
    write_tables(eq, tmp_path)
    back = pd.read_csv(tmp_path / "equivalence.csv")
    assert len(back) == len(eq.equivalence)
    assert {"arm", "base_per_class", "volume_per_class", "n_eff", "beta", "beta_lo", "beta_hi", "k", "k_lo",
            "k_hi", "verdict"} <= set(back.columns)  # fmt: skip
    assert np.isinf(back.loc[back["verdict"] != "gain", "k"]).all()  # inf survives the round trip
    fit = pd.read_csv(tmp_path / "equivalence_fit.csv")
    assert {"beta", "beta_lo", "beta_hi", "k", "k_lo", "k_hi", "c1", "c1_lo", "c1_hi", "c2", "c2_lo", "c2_hi", "K",
            "K_lo", "K_hi", "closed_form_reason"} <= set(fit.columns)  # fmt: skip
    assert not list(tmp_path.glob(".*tmp"))


def test_command_line_prints_tables_and_exits_2_on_bad_input(tmp_path, capsys):
    simulate_cells([GAIN, HARM], fail_rate=0.1, seed=0).to_csv(tmp_path / "cells.csv", index=False)
    assert main([str(tmp_path), "--n-boot", "20", "--write"]) == 0
    out = capsys.readouterr().out
    assert "Real learning curve simulated/simulated: " in out and "Failed cells" in out
    assert "hurts" in out and (tmp_path / "equivalence_fit.csv").exists()
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no cells table" in capsys.readouterr().err
    pd.read_csv(tmp_path / "cells.csv").drop(columns="status").to_csv(tmp_path / "cells.csv", index=False)
    assert main([str(tmp_path)]) == 2
    assert "missing columns ['status']" in capsys.readouterr().err  # study.table.read_cells names them


def test_never_imports_torch():
    code = "import sys, study.equivalence, study.analysis.simulate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_flat_real_curve_makes_beta_not_estimable_not_huge():
    # PneumoniaMNIST-like: test accuracy does not rise with the real training-set size (here it sinks a little),
    # and synthetic images change nothing. The profile likelihood would run beta to its upper edge.
    cells = simulate_cells([GAIN], seed=3)
    n_real = cells["n_base"] + cells["n_extra"]
    cells["test_acc"] = np.round((0.9 - 0.01 * np.log(n_real)) * cells["n_test"]) / cells["n_test"]
    eq = analyse(cells, n_boot=0)
    for table in (eq.fit, eq.fit_by_base):
        assert (table["verdict"] == "not estimable").all(), table[["arm", "beta", "verdict"]]
        assert not np.isfinite(table["beta"]).any()
        assert table["reason"].str.contains("does not rise").all()


# --- published constants -----------------------------------------------------------------------------


def test_published_constants_are_matched_by_one_rule():
    from typing import get_args

    from study.analysis.published import SETTINGS, match_published
    from study.grid import PublishedSetting

    assert set(SETTINGS) == set(get_args(PublishedSetting))  # the grid schema accepts exactly the table's settings
    by_dataset, by_grid = match_published("cifar10"), match_published("npz", "cifar10")
    assert by_dataset.c2("closed") == by_grid.c2("closed") == 2.53 and by_grid.generator("open") == "Stable Diffusion"
    assert "dataset column" in by_dataset.by and "analysis.published" in by_grid.by
    assert match_published("bloodmnist").c2("closed") == 3.88 and np.isnan(match_published("bloodmnist").c2("open"))
    for unmatched in ("cifar100", "npz", "imagefolder", "cifar10_subset", "simulated"):
        assert match_published(unmatched) is None, unmatched  # names are not guessed at
    with pytest.raises(ValueError, match="not one of"):
        match_published("npz", "cifar-10")


def test_analyse_sets_the_published_c2_beside_the_fitted_one():
    cells = simulate_cells([PlantedArm("closed", c2=2.5), PlantedArm("open", c2=3.0, kind="open")], bases=(20,),
                           extras=(10, 20, 40), volumes=(5, 10, 20, 40, 80, 160), dataset="imagefolder")  # fmt: skip
    fit = analyse(cells, n_boot=0, by_base=False, published="imagenet100").fit.set_index("arm")
    assert fit.loc["closed", "c2_published"] == 37.84 and fit.loc["open", "c2_published"] == 1.68
    assert (fit["published"] == "ImageNet-100").all() and fit.loc["closed", "published_generator"] == "DiT-XL/2"
    plain = analyse(cells, n_boot=0, by_base=False).fit
    assert plain["c2_published"].isna().all() and (plain["published"] == "").all()
    two = pd.concat([cells, cells.assign(dataset="other", cell=cells["cell"] + "-other")], ignore_index=True)
    with pytest.raises(EquivalenceError, match="several datasets"):
        analyse(two, n_boot=0, by_base=False, published="cifar10")
