"""The joint model per arm, on the real cells and the arm's synthetic cells, with a random effect per generator
(study.analysis.mixed):

    acc = acc_theta(n_real + (beta + u_g) n_syn),     u_g ~ Normal(0, tau^2) per generator g

acc_theta is the real learning curve's family as the real cells chose it (study.analysis.curve), its params fitted
jointly, with a seed effect delta_s shared by every cell of seed s (real-only, real-extra, synthetic: a seed's
real subsets are nested, and its synthetic cells sit on its base subset), so each synthetic cell is compared with
its own seed's real cells:

    logit acc = logit acc_theta(n_real + (beta + u_g) n_syn) + delta_s,     sum_s delta_s = 0 (fixed effects)

(SEED_EFFECT = "logit"; study.analysis.mixed.SEED_EFFECTS). Why: without it one curve pooled over seeds lets the
generator effects u_g absorb the seeds' differences. On BreastMNIST (issue 20: real-only accuracy at base 10/class
0.53 / 0.76 / 0.72 for seeds 0/1/2) seed 0's closed-set generators sat at beta's lower bound and seeds 1/2's were
large, and the arm read beta = 0.30 [0.07, 0.53] (two-stage) against ~0.04 per cell. Which form: a logit shift and
an effective-size factor on the seed's real subset ("size": n = e^{a_s} n_base + beta n_syn, the real cells
e^{a_s} n_real) fit equally well (deviance, -2 phi log-likelihood, of the one-rate fit with generator effects,
logit vs size, same parameter count: BreastMNIST closed 100.1 vs 101.5, open 80.5 vs 81.1; CIFAR-10 16 px closed 366.3 vs 365.1,
open 714.0 vs 714.8; quickstart digits closed 112.4 vs 111.7, open 95.1 vs 95.2; without a seed effect 195.0,
105.9, 365.4, 718.3, 160.8, 112.4), so the simpler and better-behaved one is kept: the logit shift never moves a
cell's effective size, so beta's lower bound (-n_base / n_syn) stays where the likelihood's edge is, whereas a
size factor below 1 leaves a flat region (n_eff clamped) that needed grid starts and still gave a degenerate
per-base profile interval on CIFAR-10 (closed, base 40). With a logit-log curve the two are the same model on the
real cells. The seed effects are fixed (3 seeds are too few to estimate their variance) and sum to zero, so the
curve is the average seed's. They enter only where the real cells alone show that the seeds differ: an F test of
the seed effects on the real cells (study.analysis.mixed.seed_test), p < SEED_TEST_LEVEL = 0.05 (`seed_p`, and
`seed_effect` says which model was fitted). Why not always: a seed's effect is fitted from all of its cells, and
an open-set arm has one generator per seed, so a free seed effect also absorbs that generator's effect; with the
seed effect always on, open-set arms with a generator effect of sd 0.3 covered 83% per arm at nominal 90% (35
simulated studies; 94% without it: reports/coverage.md). BreastMNIST's seeds: p = 0.002; CIFAR-10 16 px: 0.55.
Per arm:
- one rate beta over every base and volume (`fit`), with its profile-likelihood interval;
- one rate per base size from one fit that shares the curve and tau (`fit_by_base`): a base's interval borrows
  the other bases' generators to estimate tau;
- heterogeneity: likelihood-ratio tests of the one rate against one per base and against one per volume
  (`heterogeneity_base_p`, `heterogeneity_volume_p`), in the same model, so generator effects are not mistaken
  for differences between bases. An open-set generator serves every base, so its bases are compared within it.
An upper end beyond beta = 1000 is reported as inf; a lower end where some cell's effective size reaches 0, at
that edge.

Which interval is reported (chosen by measured coverage, reports/coverage.md; `interval_method` names it per row):
the arm's intervals (arm and each base) are two-stage ones (study.analysis.two_stage: one rate per generator,
t(G-1) over generators; the half-width from their spread, centred on the random-effect fit's rate, not on their
mean, which the rate's lower bound skews upward: TwoStage.centred) when
- the arm has fewer than FEW_GENERATORS generators (it is flagged `few_generators`; an open-set arm has one per
  seed): tau rests on too few draws, and on open-set arms with 3 generators the profile interval covered 81-83% per
  arm at nominal 90%; or
- tau is estimated > 0: a likelihood-ratio test of tau = 0 in the one-rate model gives p < GENERATOR_TEST_LEVEL
  = 0.45 (`generator_p`). The statistic 2 (l_hat - l_hat(tau = 0)) is referred to the 50:50 mixture of chi2_0
  and chi2_1, since tau = 0 is on the boundary of its range (Self & Liang 1987), so p = P(chi2_1 > stat) / 2
  (F(1, df_phi) in place of chi2_1 with an estimated dispersion), and p = 0.5 exactly when tau_hat = 0; 0.45
  asks for a statistic above chi2_1's 10% quantile, 0.016, so that a tau the optimiser leaves a hair above 0
  does not count. Why this liberal: on closed-set arms (9 generators) the profile interval undercovers where
  tau is underestimated (82-87% per arm with a shared effect of sd 0.3-0.5 on log beta), and a conventional
  test has little power there (p < 0.05 in 24% of arms at sd 0.3, 50% at sd 0.5, over 40 pilot studies,
  seeds 2000-2039). Without a generator effect tau_hat = 0 in ~3 of 4 arms, so the median interval keeps its
  width; the other arms get the wider two-stage interval.
Otherwise the random-effect profile interval is reported. Measured over 50 simulated studies per scenario
(reports/coverage.md, nominal 90%, per arm / per base): no generator effect 94% / 93% (25% of arms two-stage,
median width ratio to the cells-independent interval 1.01); closed-set arms with a shared effect of sd 0.3: 92% /
93%, sd 0.5: 91% / 91% (the profile interval alone 86% and 87% per arm); open-set arms 94% / 97%; seeds shifted on
the logit (sd 0.5) 91% / 91%; seeds whose subsets are worth exp(N(0, 0.8^2)) images per nominal one 100% / 99%.

Costs ~1-3 s per arm (a fit per model, a profile per rate, one fixed-effect fit for the test of tau = 0); never
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from study.analysis import two_stage
from study.analysis.cells import ARM_KEYS, CURVE_KEYS, Group, arm_mask, generator_of
from study.analysis.mixed import (
    Data,
    Linear,
    Mixed,
    cutoff,
    generator_df,
    lr_test,
    satterthwaite_df,
    seed_test,
    unpooled_dispersion,
)

BETA_MAX = 1000.0  # upper ends beyond this many real images per synthetic image are reported as inf
FEW_GENERATORS = 5  # below this many generators an arm is flagged and its intervals are two-stage ones
GENERATOR_TEST_LEVEL = 0.45  # p of tau = 0 below this (tau_hat > 0) switches the arm to two-stage intervals
INTERVAL_METHOD = "profile likelihood, random effect per generator"
FIXED_METHOD = "profile likelihood, cells independent given the curve"  # random=False: for comparison only
LEVELS = {"base": "base_per_class", "volume": "volume_per_class"}
SEED_EFFECT = "logit"  # the seeds' real subsets: study.analysis.mixed.SEED_EFFECTS; why this one: the docstring
SEED_TEST_LEVEL = 0.05  # the seed effect enters the joint model where the real cells' test of it gives p below this


def no_joint_fit(n_cells: int, reason: str) -> dict:
    return {"beta": np.nan, "beta_lo": np.nan, "beta_hi": np.nan, "dispersion": np.nan, "n_cells": n_cells,
            "reason": reason}  # fmt: skip


def _rate_interval(model: Mixed, j: int, lower: float, x_hat, ll_hat: float, q: float) -> tuple[float, float, str]:
    """The profile interval of the rate at coordinate j (searched on log(beta - lower)), with ends at the search
    edges reported as inf (upper, beyond BETA_MAX) or at the edge value (lower), and the reason."""
    t_hat = float(np.log(max(x_hat[j] - lower, 1e-300)))
    limit = max(np.log(BETA_MAX - lower) - t_hat, 14.0)
    lo, hi = model.profile(j, x_hat, ll_hat, q, t_max=limit)
    reason = ""
    if np.isinf(hi) or hi > BETA_MAX:
        hi, reason = np.inf, f"upper end beyond beta = {BETA_MAX:g}: reported as inf"
    if np.isinf(lo):
        lo, reason = lower, f"lower end at the edge beta = {lower:.4g}, where some cell's effective size reaches 0"
    return float(lo), float(hi), reason


@dataclass(eq=False)
class ArmFit:
    """One arm's joint-model fits: its table rows, and each fitted model with its optimum and log-likelihood
    (keys "one rate", "rate per base", "rate per volume"), for the planner (study.analysis.surface)."""

    row: dict
    per_base: list[dict] = field(default_factory=list)
    models: dict[str, tuple[Mixed, np.ndarray, float]] = field(default_factory=dict)
    # (beta, lo, hi) of the random-effect profile fit, by "arm" and base size, where the two-stage fallback
    # replaced them in the rows (for the coverage study's comparison); empty otherwise
    profile: dict = field(default_factory=dict)


def interval_df(model: Mixed, j: int, x_hat, df_phi: float) -> float:
    """The df of coordinate j's likelihood-ratio cut-off: df_phi without a generator effect (tau = 0 or fixed),
    else Satterthwaite's df for its generator and cell parts (study.analysis.mixed.satterthwaite_df)."""
    if not model.random or x_hat[model.tau_index] < 1e-6:
        return df_phi
    fixed = Mixed(model.curve, model.data, model.gain, phi=model.phi, random=False, seed_effect=model.seed_effect)
    x_fixed = np.array(x_hat, float)
    x_fixed[model.tau_index] = 0.0
    return satterthwaite_df(model.wald_var(j, x_hat), fixed.wald_var(j, x_fixed), generator_df(model.data), df_phi)


def fit_arm(
    g: Group,
    real: pd.DataFrame,
    syn: pd.DataFrame,
    by_base: bool = True,
    *,
    random: bool = True,
    tests: bool = True,
    seed_effect: str = "auto",
) -> ArmFit:
    """The joint model of one arm's done synthetic cells `syn` with the real cells `real`: the arm's row and (with
    `by_base`) one row per base size. `random=False` fixes tau at 0 (cells independent given the curve: the model
    before generator effects, kept for comparison); `tests=False` skips the heterogeneity fits (and, without
    `by_base`, the per-base one). `seed_effect`: "auto" (the seeds' test on the real cells decides, `seed_choice`)
    or one of study.analysis.mixed.SEED_EFFECTS."""
    n_cells = len(real) + len(syn)
    curve = g.curve
    reason = ("the real learning curve does not rise with n: beta is not identifiable"
              if curve is None or not curve.increasing else
              "needs done synthetic cells and real cells at >= 2 sizes"
              if syn.empty or len(np.unique(real["n_real"])) < 2 else "")  # fmt: skip
    if reason:
        bases = sorted(syn["base_per_class"].unique()) if by_base else []
        per_base = [{"base_per_class": b, "n_seeds": syn.loc[syn["base_per_class"] == b, "seed"].nunique(),
                     **no_joint_fit(n_cells, reason)} for b in bases]  # fmt: skip
        return ArmFit(no_joint_fit(n_cells, reason), per_base)
    gens = generator_of(syn).to_numpy()
    data = {name: Data.build(real, syn, gens, syn[col]) for name, col in LEVELS.items()}
    data["one"] = Data.build(real, syn, gens, np.zeros(len(syn), int))
    seed_effect, seed_p = seed_choice(curve, data["one"], seed_effect)
    phi, df_phi = unpooled_dispersion(curve, data["base"], seed_effect)
    k = len(curve.theta)

    one = Mixed(curve, data["one"], Linear(1), phi=phi, random=random, seed_effect=seed_effect)
    x_one, ll_one = one.fit()
    one.information(x_one)
    lower = Linear(1).lower(data["one"])[0]
    df = interval_df(one, k, x_one, df_phi)
    lo, hi, reason = _rate_interval(one, k, lower, x_one, ll_one, cutoff(g.level, df))
    n_gen = len(data["one"].generators)
    p_tau = _generator_test(one, x_one, ll_one, df_phi) if random and n_gen >= 2 else np.nan
    row = {"beta": float(x_one[k]), "beta_lo": lo, "beta_hi": hi, "interval_df": df, "dispersion": phi,
           "dispersion_df": df_phi,
           "n_cells": data["one"].n_cells, "reason": reason, "curve_model": curve.model, "n_generators": n_gen,
           "generator_sd": float(x_one[one.tau_index]),
           "seed_effect": seed_effect, "seed_p": seed_p, "seed_sd": _seed_sd(one, x_one), "generator_p": p_tau, "few_generators": n_gen < FEW_GENERATORS,
           "interval_method": INTERVAL_METHOD if random else FIXED_METHOD,
           **dict(zip(curve.family.params, map(float, curve.family.natural(x_one[:k], curve.floor)), strict=True))}  # fmt: skip

    fits = {}
    for name in LEVELS if tests else ("base",) if by_base else ():
        d = data[name]
        if len(d.levels) < 2:
            row |= {
                f"heterogeneity_{name}_chi2": np.nan,
                f"heterogeneity_{name}_df": 0,
                f"heterogeneity_{name}_p": np.nan,
            }
            continue
        model = Mixed(curve, d, Linear(len(d.levels)), phi=phi, random=random, seed_effect=seed_effect)
        start = np.concatenate([x_one[:k], np.full(len(d.levels), x_one[k]), x_one[k + 1 :]])
        x, ll = model.fit(start)
        if ll < ll_one:  # the richer model nests the one-rate fit (at `start`): never worse than it
            x, ll = start, ll_one
        fits[name] = (model, x, ll)
        stat, p = lr_test(ll_one, ll, len(d.levels) - 1, df_phi)
        row |= {f"heterogeneity_{name}_chi2": stat, f"heterogeneity_{name}_df": len(d.levels) - 1,
                f"heterogeneity_{name}_p": p}  # fmt: skip

    per_base = _per_base_rows(syn, gens, data["base"], fits.get("base"), row, k, g.level, df_phi) if by_base else []
    models = {"one rate": (one, x_one, ll_one)} | {f"rate per {name}": fit for name, fit in fits.items()}
    profile = _two_stage_fallback(curve, real, syn, gens, row, per_base, g.level, phi, seed_effect) if random else {}
    return ArmFit(row, per_base, models, profile)


def seed_choice(curve, d: Data, seed_effect: str = "auto") -> tuple[str, float]:
    """The seed effect a fit uses and the p of the real cells' test of it (study.analysis.mixed.seed_test): with
    "auto", SEED_EFFECT where p < SEED_TEST_LEVEL, else "none"; an explicit choice is kept (p still reported)."""
    _, p = seed_test(curve, d, SEED_EFFECT if seed_effect in ("auto", "none") else seed_effect)
    if seed_effect != "auto":
        return seed_effect, p
    return (SEED_EFFECT if np.isfinite(p) and p < SEED_TEST_LEVEL else "none"), p


def _generator_test(one: Mixed, x_one, ll_one: float, df_phi: float) -> float:
    """p-value of tau = 0 in the one-rate random-effect model `one` (fitted at x_one): the likelihood ratio against
    the fixed-effect fit, on the 50:50 mixture of chi2_0 and chi2_1 (F(1, df_phi) with an estimated phi), since
    tau = 0 is on the boundary of its range (Self & Liang 1987, JASA 82: 605-610). tau_hat = 0 gives p = 0.5."""
    fixed = Mixed(one.curve, one.data, one.gain, phi=one.phi, random=False, seed_effect=one.seed_effect)
    start = np.array(x_one, float)
    start[one.tau_index] = 0.0
    _, ll_fixed = fixed.fit(start)
    return lr_test(max(ll_fixed, fixed.loglik(start)), ll_one, 1, df_phi)[1] / 2


def _seed_sd(model: Mixed, x) -> float:
    """The sd over seeds of the fitted seed effects (logit or log-size units; NaN without them)."""
    if not model.n_seed_params:
        return np.nan
    return float(np.std(model.seed_shifts(x)[:-1], ddof=1))


def uses_two_stage(row: dict) -> bool:
    """Whether the arm's rate and intervals are two-stage ones: fewer than FEW_GENERATORS generators, or the test
    of tau = 0 rejects at GENERATOR_TEST_LEVEL (the module docstring has the rule and its measured coverage)."""
    if row["n_generators"] < 2:
        return False
    p = row.get("generator_p", np.nan)
    return bool(row["n_generators"] < FEW_GENERATORS or (np.isfinite(p) and p < GENERATOR_TEST_LEVEL))


def _two_stage_fallback(
    curve, real, syn, gens, row: dict, per_base: list[dict], level: float, phi: float, seed_effect: str = "none"
) -> dict:
    """Where `uses_two_stage`, replace the arm's (and each base's) interval by the two-stage one over its generators
    (at a base: the generators with cells at that base) about the same rate (TwoStage.centred), in place; returns
    the replaced random-effect (beta, lo, hi) by "arm" and base size (empty when nothing is replaced)."""
    if not uses_two_stage(row):
        return {}
    profile = {}
    subsets = [("arm", row, np.ones(len(syn), bool))]
    subsets += [(r["base_per_class"], r, (syn["base_per_class"] == r["base_per_class"]).to_numpy()) for r in per_base]
    for key, r, mask in subsets:
        d = Data.build(real, syn[mask], gens[mask], np.zeros(int(mask.sum()), int))
        if len(d.generators) < 2:
            continue
        est = two_stage.two_stage(curve, d, level, phi, seed_effect)
        profile[key] = (r["beta"], r["beta_lo"], r["beta_hi"])
        lo, hi = est.centred(r["beta"], Linear(1).lower(d)[0])
        reason = "" if np.isfinite(lo) and np.isfinite(hi) else "the two-stage interval is not finite"
        r |= {"beta_lo": lo, "beta_hi": hi, "interval_df": est.n_generators - 1, "reason": reason,
              "interval_method": two_stage.METHOD}  # fmt: skip
    return profile


def _per_base_rows(syn, gens, d: Data, fitted, arm_row: dict, k: int, level: float, df_phi: float) -> list[dict]:
    """One row per base size: its rate from the per-base fit (with a single base size, the arm's own)."""
    rows = []
    lowers = Linear(len(d.levels)).lower(d)
    if fitted is not None:
        fitted[0].information(fitted[1])
    for j, base in enumerate(d.levels):
        if fitted is not None:
            model, x, ll = fitted
            df = interval_df(model, k + j, x, df_phi)
            lo, hi, reason = _rate_interval(model, k + j, lowers[j], x, ll, cutoff(level, df))
            beta, tau = float(x[k + j]), float(x[model.tau_index])
        else:
            beta, lo, hi, reason, tau, df = (arm_row[c] for c in ("beta", "beta_lo", "beta_hi", "reason",
                                                                  "generator_sd", "interval_df"))  # fmt: skip
        mine = (syn["base_per_class"] == base).to_numpy()
        rows.append({"base_per_class": base, "beta": beta, "beta_lo": lo, "beta_hi": hi, "interval_df": df,
                     "interval_method": arm_row["interval_method"], "reason": reason,
                     "n_seeds": syn.loc[mine, "seed"].nunique(), "n_generators": len(set(gens[mine])),
                     "generator_sd": tau})  # fmt: skip
    return rows


def joint_rows(g: Group, arms: pd.DataFrame, by_base: bool) -> tuple[list[dict], list[dict], dict[tuple, ArmFit]]:
    """The joint model per arm, and (with `by_base`) per arm and base size with the heterogeneity tests; also each
    arm's fits by its key (CURVE_KEYS + ARM_KEYS values)."""
    fits, per_base, models = [], [], {}
    for _, arm in arms.iterrows():
        mine = g.done[arm_mask(g.done, arm)]
        fitted = fit_arm(g, g.real_measurements, mine, by_base, tests=by_base)
        base = {**arm.to_dict(), "n_seeds": mine["seed"].nunique()}
        fits.append({**base, **fitted.row})
        per_base += [{**base, **r, "dispersion": fitted.row.get("dispersion", np.nan)} for r in fitted.per_base]
        models[tuple(arm[CURVE_KEYS + ARM_KEYS])] = fitted
    return fits, per_base, models
