"""The planner (study.advise, study.analysis.surface, study.analysis.power): planted answers recovered from simulated
studies, extrapolation flagged, the command line's JSON, seeds needed, and the cost estimate against a measured
tiny grid."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from study.advise.cli import main as advise
from study.analysis.curve import logit_log
from study.analysis.equivalence import analyse
from study.analysis.power import seeds_needed
from study.analysis.simulate import PlantedArm, simulate_cells

BETA = PlantedArm("closed", beta=0.3)
PAPER = PlantedArm("paper", c1=1.01, c2=2.5, kind="open")


@pytest.fixture(scope="module")
def planted():
    """One simulated study with a constant-rate arm (beta 0.3) and a closed-form arm (c1 1.01, c2 2.5, K 10)."""
    cells = simulate_cells([BETA, PAPER], bases=(10, 20, 40), extras=(10, 30), volumes=(10, 40, 160), n_test=4000,
                           curve=functools.partial(logit_log, a=-3.0, b=0.8), seed=8)  # fmt: skip
    return cells, analyse(cells, n_boot=0)


def test_planner_recovers_the_planted_answers(planted):
    _, eq = planted
    s = eq.surface("closed")
    a = s.match_real(base=20, extra=30)  # 30 more real images per class at beta 0.3: 100 synthetic per class
    assert a.lo <= 100 <= a.hi and a.value == pytest.approx(100, rel=0.25) and not a.extrapolated
    assert a.unit == "synthetic images per class" and a.model in ("one rate", "rate per base", "closed form")
    paper = eq.surface("paper")
    truth = 20 * 1.01**20 * (2.5 ** (10 / 20) - 1)  # n_syn / K = b c1^b (c2^(extra / b) - 1)
    b = paper.match_real(base=20, extra=10)
    assert b.lo <= truth <= b.hi and b.value == pytest.approx(truth, rel=0.3)
    # The expected accuracy at a volume: acc(n_base + 0.3 n_syn) on the planted curve.
    v = s.at_volume(base=20, volume=40)
    expected = logit_log(10 * (20 + 0.3 * 40), a=-3.0, b=0.8)
    assert v.lo <= expected <= v.hi and v.n_eff_lo <= 32 <= v.n_eff_hi and v.unit == "accuracy"
    # A target accuracy the base alone reaches needs no synthetic images.
    zero = s.target_acc(base=20, acc=0.5)
    assert zero.value == 0 and "base alone" in zero.note


def test_extrapolation_is_flagged_and_widens(planted):
    _, eq = planted
    s = eq.surface("closed")
    inside, outside = s.match_real(base=20, extra=10), s.match_real(base=80, extra=20)
    assert not inside.extrapolated and outside.extrapolated and "outside the measured bases" in outside.note
    far = s.match_real(base=20, extra=200)  # needs ~660 per class: beyond the tested 160
    assert far.extrapolated and "not reachable within the measured volumes" in far.note
    # Outside, the interval is the envelope of every surface's: at least as wide as the chosen one's alone.
    alone = s._interval({s.chosen: (s.candidates[s.chosen].volume_for(80, np.full(4000, 20.0)), 0)}, 0, [])
    assert outside.hi - outside.lo >= alone[1] - alone[0]
    high = s.at_volume(base=40, volume=1000)
    assert high.extrapolated and "volume 1e+03 outside" in high.note


def test_command_line_answers_in_json_and_names_bad_input(planted, tmp_path, capsys):
    cells, _ = planted
    cells.to_csv(tmp_path / "cells.csv", index=False)
    assert advise([str(tmp_path), "--base", "20", "--match-real", "30", "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["arm"] for a in answers] == ["closed", "paper"]
    assert {"arm", "query", "value", "lo", "hi", "extrapolated"} <= set(answers[0])
    assert answers[0]["query"] == "match-real 30 at base 20" and answers[0]["lo"] <= 100 <= answers[0]["hi"]
    assert advise([str(tmp_path), "--base", "20", "--volume", "40", "--arm", "closed"]) == 0
    text = capsys.readouterr().out
    assert "closed:" in text and "accuracy" in text and "paper:" not in text.split("volume 40")[-1]
    assert advise([str(tmp_path)]) == 0  # no query: verdicts, the planning table and seeds needed
    text = capsys.readouterr().out
    assert "planning" in text and "seeds needed" in text
    with pytest.raises(SystemExit):
        advise([str(tmp_path), "--match-real", "30"])  # no --base
    assert "need --base" in capsys.readouterr().err
    assert advise([str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    assert advise([str(tmp_path), "--base", "20", "--arm", "nope"]) == 2
    assert "no such fitted arm" in capsys.readouterr().err


@pytest.fixture(scope="module")
def open_arm():
    """An open-set arm (one generator per seed, 3 seeds) at planted beta 0.3 with a generator effect (sd 0.3 on log
    beta): its beta interval is a two-stage one, so the planner widens."""
    cells = simulate_cells([PlantedArm("open", beta=0.3, kind="open")], bases=(10, 20, 40), extras=(10, 30),
                           volumes=(10, 40, 160), n_test=4000, generator_sd=0.3,
                           curve=functools.partial(logit_log, a=-3.0, b=0.8), seed=0)  # fmt: skip
    return cells, analyse(cells, n_boot=0)


def test_reach_compares_each_side_from_the_random_effect_estimate():
    """beta 0.3 [0.25, 0.36] (random effect) against [0.2, 0.38] (two-stage): 0.1 / 0.05 = 2 below, 0.08 / 0.06
    above; a two-stage interval inside the other widens nothing; a non-finite end cannot widen."""
    from study.analysis.surface import reach

    assert reach((0.3, 0.25, 0.36), 0.2, 0.38) == pytest.approx((2.0, 0.08 / 0.06))
    assert reach((0.3, 0.25, 0.36), 0.28, 0.33) == (1.0, 1.0)
    assert reach((0.3, 0.25, np.inf), 0.2, 0.5) == (2.0, 1.0)
    assert np.isnan(reach((0.3, 0.25, 0.36), np.nan, np.nan)).all()


def test_widened_draws_reach_r_times_as_far_on_each_side(open_arm):
    """Each draw's rate plus generator effect lies r_below (r_above) times as far from the estimate where it was
    below (above); a rate per base takes its bases' ratios, interpolated in log b."""
    from study.analysis.surface import Widening

    s = open_arm[1].surface("open")
    c = s.candidates["one rate"]
    k, hat = c.model.k, c.x[c.model.k]
    wide = c.widened(20, 40, 2.0, 3.0)
    dev, dev_wide = c.draws[:, k] + c.u - hat, wide.draws[:, k] + wide.u - hat
    np.testing.assert_allclose(dev_wide, np.where(dev < 0, 2.0, 3.0) * dev, atol=1e-12)
    np.testing.assert_array_equal(wide.draws[:, :k], c.draws[:, :k])  # the real curve's draws are untouched
    per_base = s.candidates["rate per base"]
    w = Widening((1.5, 1.5), {10.0: (1.0, 2.0), 20.0: (2.0, 4.0), 40.0: (3.0, 1.0)})
    assert w.ratios(c, 20) == (1.5, 1.5) and w.ratios(per_base, 20) == (2.0, 4.0)
    assert w.ratios(per_base, np.sqrt(800)) == pytest.approx((2.5, 2.5)) and w.ratios(per_base, 80) == (3.0, 1.0)


def test_planner_widens_to_the_two_stage_interval_and_covers_the_planted_answer(open_arm, planted, tmp_path, capsys):
    """On the open arm (3 generators, two-stage beta interval) the answers widen: never narrower than the
    random-effect interval, wider where the two-stage interval reaches farther, and still covering the planted
    answer (30 more real images per class at beta 0.3: 100 synthetic per class). On an arm whose beta interval is
    the random-effect one nothing changes. Extrapolation is still flagged."""
    from study.analysis import two_stage
    from study.analysis.joint import INTERVAL_METHOD
    from study.analysis.surface import METHOD, WIDENED, Widening

    cells, eq = open_arm
    assert eq.fit.iloc[0]["interval_method"] == two_stage.METHOD
    s = eq.surface("open")
    plain = replace(s, widening=None)
    assert s.widening is not None and max(s.widening.arm) > 1
    for base in (10, 20, 40):
        a, p = s.match_real(base, 30), plain.match_real(base, 30)
        assert a.lo <= 100 <= a.hi and a.value == p.value and a.lo <= p.lo and a.hi >= p.hi
        assert a.interval_method == WIDENED and "widened to the arm's two-stage beta interval" in a.note
        assert p.interval_method == METHOD and p.note == ""
    a, p = s.match_real(20, 30), plain.match_real(20, 30)
    assert a.hi - a.lo > p.hi - p.lo
    v, pv = s.at_volume(20, 40), plain.at_volume(20, 40)
    assert v.n_eff_lo <= 32 <= v.n_eff_hi and v.hi - v.lo > pv.hi - pv.lo and v.value == pv.value
    # A two-stage interval reaching below beta = 0 makes the upper end "never", which no scaling of volumes can.
    far = replace(s, widening=Widening((50.0, 1.0), {b: (50.0, 1.0) for b in s.bases})).match_real(20, 30)
    assert far.hi == np.inf and far.value == a.value
    # Extrapolation: still flagged, and the widened envelope holds the unwidened one.
    out, out_plain = s.match_real(80, 30), plain.match_real(80, 30)
    assert out.extrapolated and "outside the measured bases" in out.note and out.lo <= out_plain.lo
    assert out.hi >= out_plain.hi and "widened" in out.note
    high = s.at_volume(40, 1000)
    assert high.extrapolated and "volume 1e+03 outside" in high.note
    # An arm whose beta interval is the random-effect one: no widening, no note.
    closed_cells, closed_eq = planted
    closed = closed_eq.surface("closed")
    assert closed_eq.fit.set_index("arm").loc["closed", "interval_method"] == INTERVAL_METHOD
    assert closed.widening is None
    assert all(a.interval_method == METHOD and a.note == "" for a in (closed.match_real(20, 10),
                                                                       closed.at_volume(20, 40)))  # fmt: skip
    # The command line: interval_method in the JSON, the ratios on the arm's line.
    cells.to_csv(tmp_path / "cells.csv", index=False)
    assert advise([str(tmp_path), "--base", "20", "--match-real", "30", "--json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert answer["interval_method"] == WIDENED and answer["lo"] <= 100 <= answer["hi"]
    assert advise([str(tmp_path), "--base", "20", "--match-real", "30"]) == 0
    assert "planner intervals widened to beta's two-stage interval (x" in capsys.readouterr().out


def test_seeds_needed_scale_the_pilot_standard_error():
    """A pilot with 3 seeds and beta 0.1 [0.0, 0.2] (normal quantiles): se = 0.2 / (2 z_0.95) = 0.0608; the
    interval excludes 0 with 80% power when 0.1 / (se sqrt(3 / S)) >= z_0.95 + z_0.8, i.e. S >= 6.9: 7 seeds;
    a half-width of 0.05 needs z se sqrt(3 / S) <= 0.05: S >= 12."""
    row = {"arm": "a", "beta": 0.1, "beta_lo": 0.0, "beta_hi": 0.2, "n_seeds": 3, "interval_df": np.inf}
    plan = seeds_needed(row, half_width=0.05)
    assert plan.se_pilot == pytest.approx(0.2 / (2 * 1.6449), rel=1e-3)
    assert plan.exclude_zero == 7 and plan.half_width == 12
    assert seeds_needed(row, beta=0.02).exclude_zero > 100  # a smaller assumed effect needs far more seeds
    assert seeds_needed(row, beta=0.0).exclude_zero is None


def test_seeds_needed_match_a_bigger_simulated_study():
    """The half-width predicted for 12 seeds from a 3-seed pilot is within 40% of the one a 12-seed study shows."""
    arm = PlantedArm("closed", beta=0.3)
    pilot = analyse(simulate_cells([arm], cell_sd=0.1, seed=11), n_boot=0, by_base=False).fit.iloc[0]
    plan = seeds_needed(pilot)
    predicted = plan.se_pilot * np.sqrt(3 / 12) * 1.6449
    big = analyse(simulate_cells([arm], cell_sd=0.1, seeds=range(12), seed=12), n_boot=0, by_base=False).fit.iloc[0]
    assert (big["beta_hi"] - big["beta_lo"]) / 2 == pytest.approx(predicted, rel=0.4)


TIME_GRID = """
name: timed
dataset: {name: digits}
real: {base: [5, 10], extra: [5]}
synthetic: {volume: [5, 20]}
generators:
  closed:
    model: {preset: tiny}
    train: {steps: 150, batch_size: 64, warmup: 10}
    sample: {sampler: dpmpp, steps: 4, guidance: 2.0}
classifier: {arch: study_cnn, width: 8, steps: 60, batch_size: 64}
seeds: [0]
device: cpu
"""


@pytest.mark.slow
def test_time_estimate_is_within_1_5x_of_the_measured_grid(tmp_path, monkeypatch):
    """Calibrate on shrunken copies of a tiny grid, then run the grid itself in this process at one torch thread:
    the estimated CPU seconds are within a factor 1.5 of the CPU seconds it took (CPU time, so a loaded machine
    does not move the comparison)."""
    import study.runner.execute as execute
    from study.advise.calibrate import calibrate
    from study.advise.cost import estimate
    from study.grid import expand, load_grid
    from study.runner.cli import main as run
    from study.runner.plan import make_plan

    path = tmp_path / "grid.yaml"
    path.write_text(TIME_GRID)
    grid = load_grid(path)
    rates = calibrate(grid, log=lambda text: None)
    plan = make_plan(grid, expand(grid))
    predicted = estimate(plan, rates, list(plan.nodes.values()), jobs=1, cores=1).cpu_seconds
    monkeypatch.setattr(execute, "cpu_count", lambda: 1)  # one torch thread, as calibrated
    start = time.process_time()
    assert run([str(path), "--results", str(tmp_path / "results"), "--quiet"]) == 0
    measured = time.process_time() - start
    assert 1 / 1.5 <= predicted / measured <= 1.5, (predicted, measured, rates.by_key)


def test_cost_estimate_from_bench_figures_for_the_quickstart(tmp_path):
    """On the quickstart grid, reports/bench.json's throughput figures give a torch-free estimate; the generator,
    sampling and classifier rates all match its workloads."""
    from study.advise.cli import BENCH
    from study.advise.cost import CostError, bench_rates, estimate
    from study.grid import expand, load_grid
    from study.runner.plan import make_plan

    grid = load_grid(Path(__file__).resolve().parent.parent / "grids" / "quickstart.yaml")
    rates = bench_rates(grid, json.loads(BENCH.read_text()), n_classes=10, pool=0)
    plan = make_plan(grid, expand(grid))
    est = estimate(plan, rates, list(plan.nodes.values()), jobs=2, cores=2, strict=False)
    assert set(est.artifacts_by_stage) == {"reference", "generator", "samples", "classifier"}
    # The bench has no figure for the sample-set diagnostics: left out, and said so.
    assert (
        est.unmeasured == {"diagnostics": 45} and "not included, no measured rate: diagnostics 45 x" in est.describe()
    )
    with pytest.raises(CostError, match="no measured rate for the diagnostics workload"):
        estimate(plan, rates, list(plan.nodes.values()))
    # 12 generators x 200 steps x 128 images at the bench's EDM tiny throughput (its recipe is the quickstart's)
    bench = json.loads(BENCH.read_text())["generator"]["quality"]["digits"]["edm-tiny-b128"]
    assert est.cpu_by_stage["generator"] == pytest.approx(12 * 200 * 128 / bench["train_images_per_cpu_s"], rel=1e-6)
    assert 100 < est.wall_seconds < 2000 and "bench.json" in est.describe()
