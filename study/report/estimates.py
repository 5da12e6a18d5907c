"""Report sections that read the equivalence analysis (study.analysis.equivalence.Equivalence): headline,
accuracy vs size with the fitted curve, exchange rates, equivalence curves with the closed form and the published
constants beside ours, methods. Each returns markdown paragraphs. Never imports torch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis.joint import INTERVAL_METHOD
from study.analysis.metric import metric_label
from study.analysis.published import SETTINGS, SOURCE
from study.grid import ANALYSIS_METRICS
from study.report import plots
from study.report.markdown import (
    capitalised,
    figure,
    fmt,
    fmt_ci,
    fmt_interval,
    in_arm_order,
    md_table,
    plural,
    with_reason,
)

HETEROGENEITY_P = 0.05  # below this the report leads with the per-base rates


def headline(eq, eq_error: str | None, synthetic: list[str], level: float, metric: str = "test_acc") -> list[str]:
    """beta and k per synthetic arm; for another metric than test accuracy, first the sentence naming it."""
    if metric == "test_acc":
        return _headline(eq, eq_error, synthetic, level)
    measured = (f"Measured on {metric_label(metric)} (`analysis.metric: {metric}`), as a proportion over its "
                f"effective binomial trials (`{ANALYSIS_METRICS[metric].trials}`; study.analysis.metric).")  # fmt: skip
    return [measured, *_headline(eq, eq_error, synthetic, level)]


def _headline(eq, eq_error: str | None, synthetic: list[str], level: float) -> list[str]:
    if not synthetic:
        return ["This grid has real arms only: there is no exchange rate to estimate. The learning curve and "
                "the per-cell table below are the result."]  # fmt: skip
    if eq is None:
        return [f"The equivalence analysis could not run: {eq_error}."]
    fit = eq.fit.set_index("arm") if len(eq.fit) else pd.DataFrame()
    by_base = eq.fit_by_base
    lines = []
    for arm in synthetic:
        if arm not in fit.index:
            lines.append(f"- **{arm}**: no done cells to fit.")
            continue
        r = fit.loc[arm]
        cells = f"{plural(r['n_done'], 'synthetic cell')}, {plural(r['n_seeds'], 'seed')}"
        n = f"joint model on this arm's {cells.replace(', ', ' (', 1)}) and the real cells"
        n += f", {level:.0%} interval by {_method(r)}"
        if _flag(r, "few_generators"):
            n += (f"; only {plural(r['n_generators'], 'independent generator')}: the interval rests on them (an "
                  "open-set arm has one per seed)")  # fmt: skip
        elif _method(r) != INTERVAL_METHOD and pd.notna(r.get("generator_p")):
            n += f", since the generators' rates differ (test of τ = 0: p = {r['generator_p']:.2g})"
        text = _verdict_text(r)
        if r["verdict"] == "not estimable":
            n = cells
        hetero = _heterogeneity_lead(arm, r, by_base, level)
        lines.append(f"- **{arm}**: {hetero}{text}; {n}.")
    return ["\n".join(lines), "β is the signed exchange rate (n_eff − n_base) / n_syn, real images gained per "
            "synthetic image; k = 1/β synthetic images per real image where β's interval excludes zero, and the "
            "bound k ≥ 1/β_hi where it holds zero but its upper end is small. Estimates per base size and per "
            "synthetic volume, the paper's closed form and a planning table follow."]  # fmt: skip


def _method(r) -> str:
    """The row's interval method (older tables without the column: the random-effect profile likelihood)."""
    method = r.get("interval_method", "")
    return str(method) if pd.notna(method) and method else "profile likelihood, random effect per generator"


def _flag(r, col: str) -> bool:
    value = r.get(col, False)
    return bool(value) if pd.notna(value) else False


def _verdict_text(r) -> str:
    beta = fmt_ci(r["beta"], r["beta_lo"], r["beta_hi"], sig=True)
    if r["verdict"] == "gain":
        return (f"**k = {fmt_ci(r['k'], r['k_lo'], r['k_hi'], sig=True)} synthetic images per real image** "
                f"(β = {beta} real images per synthetic image)")  # fmt: skip
    if r["verdict"] == "no measurable gain" and np.isfinite(r["k_lo"]) and r["k_lo"] > 0:
        return (f"**no measurable gain**: β = {beta} real images per synthetic image, so **k ≥ {fmt(r['k_lo'], 3, sig=True)}** "
                "synthetic images per real image (1/β_hi: a real image is worth at least that many)")  # fmt: skip
    if r["verdict"] in ("hurts", "no measurable gain"):
        return f"**{r['verdict']}**: β = {beta} real images per synthetic image, so k is not defined"
    return f"**not estimable**: {r['reason'] or 'see Methods'}"


def rejects_one_beta(p) -> bool:
    """The per-base likelihood-ratio test's p rejects one rate for every base: lead with the per-base rates."""
    return bool(pd.notna(p) and p < HETEROGENEITY_P)


def per_base_betas(by_base: pd.DataFrame, arm: str) -> str:
    """One arm's β per base size: '0.19 [0.11, 0.27] at 10/class, ...'."""
    rows = in_arm_order(by_base[by_base["arm"] == arm], [arm], "base_per_class")
    return ", ".join(f"{fmt_ci(b.beta, b.beta_lo, b.beta_hi, sig=True)} at {int(b.base_per_class)}/class"
                     for b in rows.itertuples())  # fmt: skip


def _heterogeneity_lead(arm: str, r, by_base: pd.DataFrame, level: float) -> str:
    """When one rate does not describe every base (the likelihood-ratio test rejects), the per-base rates first."""
    p = r.get("heterogeneity_base_p", np.nan)
    if not rejects_one_beta(p) or by_base.empty:
        return ""
    return (f"β differs between base sizes (likelihood-ratio test p = {fmt(p, 2, sig=True)}, generator effects "
            f"allowed for), so per base first: β = {per_base_betas(by_base, arm)}. Over all bases, ")  # fmt: skip


def single_curve(eq):
    """The one real learning curve of the analysis, or None (no analysis, no curve, or several datasets)."""
    if eq is None:
        return None
    with contextlib.suppress(ValueError):  # several (dataset, classifier) curves in one table: no single curve
        return eq.curve
    return None


def accuracy_section(
    done, summary, palette, eq, n_classes, out: Path, level: float, label: str = "test accuracy"
) -> list[str]:
    """`label` names the analysed metric (test accuracy, or the grid's analysis.metric)."""
    curve = single_curve(eq)
    curve = None if curve is None else curve.acc
    fig = plots.accuracy_vs_size(done, summary, palette, n_classes, curve=curve, level=level, label=label)
    synthetic = done["arm_kind"].isin(["closed", "open"]).any()
    caption = (f"{capitalised(label)} vs training images per class. Black and grey: real data only (real-only at "
               "each base; real-extra = a base plus extra real images)"
               + ("; coloured: a base plus synthetic images, one line per base (light = small base) leaving the real "
                  "curve at its base" if synthetic else "")
               + f". Small points are seeds, large points means with {level:.0%} t intervals over seeds"
               + ("; dashed: the fitted real learning curve." if curve else "."))  # fmt: skip
    return [figure(fig, out, "accuracy", caption)]


def rate_section(eq, eq_error, palette, kinds, out: Path, level: float) -> list[str]:
    if eq is None or eq.equivalence.empty:
        return [f"Not available: {eq_error or 'no synthetic cells are done'}."]
    lines = []
    by_base = eq.fit_by_base
    if len(by_base) and by_base["beta"].notna().any():
        fig = plots.exchange_rate(by_base, eq.equivalence, palette, kinds, joint=eq.fit, level=level)
        caption = ("Left: β, real images gained per synthetic image, per base size (joint model fitted at that "
                   f"base, {level:.0%} likelihood-ratio intervals) and over all bases (right-most point); small faint "
                   "points are the single volumes. 0 = no gain, 1 = a synthetic image is worth a real one. Right: "
                   "k = 1/β synthetic images per real image, drawn only where β's interval excludes zero.")  # fmt: skip
        lines.append(figure(fig, out, "rate", caption))
        lines += ["Per arm and base size (one joint fit per arm with a rate per base, sharing the curve and the "
                  "generator spread τ):", md_table(_by_base_table(by_base, list(palette)))]  # fmt: skip
    if len(eq.fit) and "heterogeneity_base_p" in eq.fit:
        lines += ["Does one rate describe the arm? Likelihood-ratio tests of one β against one per base size and one "
                  "per synthetic volume, in the model with generator effects (p < 0.05: it does not, and the "
                  "per-base or per-volume rates are the description to use):",
                  md_table(_heterogeneity_table(eq.fit, list(palette)))]  # fmt: skip
    elif len(by_base):
        reasons = "; ".join(sorted(set(by_base["reason"].fillna("")) - {""})) or "see the table below"
        lines.append(f"β is not estimable at any base size ({reasons}), so there is no exchange-rate figure.")
    lines += ["Per synthetic cell, seeds pooled (n_eff: the real training-set size with the same accuracy on the "
              f"fitted real curve; β with its delta-method {level:.0%} interval and, beside it, the bootstrap "
              "percentile interval):", md_table(_per_volume_table(eq.equivalence, list(palette)))]  # fmt: skip
    return lines


def _by_base_table(by_base: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    rows = []
    for r in in_arm_order(by_base, arms, "base_per_class").itertuples():
        rows.append({"arm": r.arm, "base/class": int(r.base_per_class), "n seeds": r.n_seeds,
                     "generators": getattr(r, "n_generators", "—"),
                     "β": fmt_ci(r.beta, r.beta_lo, r.beta_hi, sig=True), "k": k_text(r),
                     "verdict": with_reason(r.verdict, r.reason)})  # fmt: skip
    return pd.DataFrame(rows)


def k_text(r) -> str:
    """k with its interval where β > 0 is measured, the bound k ≥ 1/β_hi where it is not, else —."""
    if r.verdict == "gain":
        return fmt_ci(r.k, r.k_lo, r.k_hi, sig=True)
    if r.verdict == "no measurable gain" and np.isfinite(r.k_lo) and r.k_lo > 0:
        return f"≥ {fmt(r.k_lo, 3, sig=True)}"
    return "—"


def _lr_test_text(r, name: str) -> str:
    p, df = getattr(r, f"heterogeneity_{name}_p", np.nan), getattr(r, f"heterogeneity_{name}_df", 0)
    if not pd.notna(p):
        return "—"
    chi2 = fmt(getattr(r, f"heterogeneity_{name}_chi2"), 3, sig=True)
    return f"p = {fmt(p, 2, sig=True)} (χ² {chi2}, {int(df)} df)"


def _heterogeneity_table(fit: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    rows = []
    for r in in_arm_order(fit, arms).itertuples():
        rows.append({"arm": r.arm, "generators": getattr(r, "n_generators", "—"), "β interval": _method(r._asdict()),
                     "τ (generator sd of β)": fmt(getattr(r, "generator_sd", np.nan), 2, sig=True),
                     "per base": _lr_test_text(r, "base"), "per volume": _lr_test_text(r, "volume"),
                     "curve": getattr(r, "curve_model", "—")})  # fmt: skip
    return pd.DataFrame(rows)


def _per_volume_table(e: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    rows = []
    for r in in_arm_order(e, arms, "base_per_class", "volume_per_class").itertuples():
        rows.append({"arm": r.arm, "base/class": int(r.base_per_class), "synthetic/class": int(r.volume_per_class),
                     "n seeds": r.n_seeds, "n_eff (images)": fmt_ci(r.n_eff, r.n_eff_lo, r.n_eff_hi, sig=True),
                     "β": fmt_ci(r.beta, r.beta_lo, r.beta_hi, sig=True),
                     "β bootstrap": fmt_interval(r.beta_lo_boot, r.beta_hi_boot), "k": k_text(r),
                     "verdict": with_reason(r.verdict, r.reason)})  # fmt: skip
    return pd.DataFrame(rows)


def closed_form_section(eq, eq_error, palette, kinds, n_classes: int, out: Path) -> list[str]:
    if eq is None or eq.fit.empty:
        return [f"Not available: {eq_error or 'no synthetic cells are done'}."]
    lines = []
    pts = eq.closed_form
    if len(pts):
        pts = pts.assign(real_plus_per_class=pts["n_real_plus"] / n_classes,
                         syn_per_class=pts["n_syn_star"] / n_classes)  # fmt: skip
        reached = pts[pts["status"] == "ok"]
        if len(reached):
            fig = plots.equivalence_curves(reached, palette, curve=_closed_form_curve(eq, n_classes))
            caption = ("Synthetic images per class needed to match the accuracy of adding real images per class, per "
                       "base size (shade: light = small base). Points: monotone interpolation of the seed-pooled "
                       "accuracies in log n_syn (for the eye; the fit does not use them); lines: the closed form "
                       "n_syn/n_base = c1^(n_base/K)·(c2^(n_real+/n_base) − 1) fitted by binomial likelihood on every "
                       "cell; dotted: one synthetic image per real image.")  # fmt: skip
            lines.append(figure(fig, out, "curves", caption))
        missed = pts[pts["status"] != "ok"]
        if len(missed):
            counts = ", ".join(f"{n} {s}" for s, n in missed["status"].value_counts().items())
            lines.append(f"{len(missed)} of {len(pts)} (arm, base, real added) targets lie outside the accuracies the "
                         f"tested synthetic volumes reached ({counts}); they are not drawn (the fit uses every cell, "
                         "not these points).")  # fmt: skip
    else:
        lines.append("No closed-form points: the closed form needs real-extra cells and synthetic cells at the same "
                     "base.")  # fmt: skip
    return [*lines, *constants_table(eq, kinds)]


def _closed_form_curve(eq, n_classes: int):
    def curve(arm: str, base: int, x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(eq.closed_form_curve(arm, base, x * n_classes), dtype=float) / n_classes
        except ValueError:  # the arm is not in the fit table (no fit): draw points only
            return np.full_like(x, np.nan, dtype=float)

    return curve


def _published_c2(r) -> str:
    """The published c2 of the analysis' fit row, with its generator."""
    if not r.published:
        return "—"
    return f"{r.c2_published:g} ({r.published_generator})" if r.published_generator else "— (no such generator)"


def constants_table(eq, kinds) -> list[str]:
    """Our closed-form constants per arm beside the published ones the analysis matched (eq.fit's c2_published)."""
    match = next(iter(eq.published.values()), None)
    published_header = "published c2" + (f" ({match.dataset})" if match else "")
    rows = []
    for r in in_arm_order(eq.fit, list(kinds)).itertuples():
        note = r.closed_form_reason if isinstance(r.closed_form_reason, str) else ""
        rows.append({"arm": r.arm, "kind": r.arm_kind, "n points": r.closed_form_points,
                     "c1": fmt_ci(r.c1, r.c1_lo, r.c1_hi, sig=True), "c2": fmt_ci(r.c2, r.c2_lo, r.c2_hi, sig=True),
                     "K": f"{fmt(r.K, 3, sig=True)} (fixed)" if np.isfinite(r.K) else "—",
                     "interval": r.closed_form_interval or "—", published_header: _published_c2(r),
                     "note": note})  # fmt: skip
    names = ", ".join(list(SETTINGS.values())[:-1]) + f" and {list(SETTINGS.values())[-1]}"
    source = (f"Published c2: {SOURCE}; this study was matched to {match.dataset} by {match.by}." if match else
              f"No published constants for this dataset (the source paper covers {names}; a grid on one of them "
              "stored as an npz file or an image folder names it with `analysis: {published: cifar10}`).")  # fmt: skip
    return ["Fitted closed-form constants per arm (binomial likelihood on the real cells and the arm's cells with the "
            "curve and a generator effect on the gain, profile-likelihood intervals; n points: the figure's "
            "interpolated points; K is fixed to the number of classes because only ln(c1)/K is identifiable):",
            md_table(pd.DataFrame(rows)), source]  # fmt: skip


def methods(eq, level: float, n_boot: int, synthetic: bool = True) -> list[str]:
    lines = [
        f"- Intervals are {level:.0%} throughout. Per-cell means: t intervals over seeds, clipped to the metric's "
        "range. Gains over real-only: paired by seed (same base subset), t intervals over seeds.",
        "- A real-extra cell with base b and e extra images trains the same classifier as the real-only cell with "
        "base b + e (nested subsets), so their rows repeat the same numbers.",
    ]  # fmt: skip
    if synthetic:
        bootstrap = (f"and bootstrap percentile intervals ({n_boot} replicates) beside them" if n_boot
                     else "no bootstrap (`--n-boot 0`)")  # fmt: skip
        lines.append(
            "- Exchange rates: `study.equivalence` (its module docstring has the formulas). Per synthetic cell: seeds "
            "pooled, n_eff from the inverted real learning curve, delta-method intervals with a quasi-binomial "
            f"dispersion, {bootstrap}. Per arm and per base: the joint model acc = f(n_real + (β + u_g)·n_syn) on "
            "the real cells and the arm's cells, with f the real curve's family and u_g a random effect per "
            "generator (cells of one generator and its sample set share its quality: one generator per seed and "
            "base for a closed-set arm, one per seed shared by every base for an open-set arm), integrated out by "
            "adaptive Gauss-Hermite quadrature; β by profile likelihood, its cut-off F(1, ν) with Satterthwaite's ν "
            "for a variance from few generators. The interval method (`interval_method`, named per row) is chosen "
            "by a rule: the two-stage interval (one β per generator; the fitted β ± t(G−1) × se, the se from the "
            "rates' spread and the shared curve's covariance; per base: over the generators at that base) for an "
            "arm with fewer than 5 generators (an open-set arm on 3 seeds; flagged) or whose generator sd τ is "
            "estimated > 0 (a likelihood-ratio test of τ = 0 on the 50:50 χ²₀:χ²₁ mixture gives p < 0.45, i.e. a "
            "statistic above 0.016), else the random-effect profile interval. Where the real cells show that the "
            "seeds' real subsets differ (an F test on the real cells, p < 0.05: `seed_p`), every cell of a seed "
            "also carries that seed's logit shift, so each synthetic cell is compared with its own seed's real "
            "cells (`seed_effect`). Chosen by measured coverage in simulated studies (`python -m "
            "study.analysis.coverage`, reports/coverage.md; 50 studies per scenario of 3 seeds, 3 bases, 4 "
            "volumes; nominal 90%): without a generator effect 94% per arm (93% per base), 25% of arms "
            "two-stage, the median width that of the interval treating cells as independent; with one of sd 0.3 "
            "and 0.5 on log β, closed-set arms (9 generators) 92% and 91% per arm, 91-93% per base (the profile "
            "interval alone: 86-87%; cells independent: 62-74%); open-set arms 94-97%; seeds that differ 91-100%. "
            "Failed cells are left out of every fit."
        )
        lines.append("- Heterogeneity: likelihood-ratio tests of one β against one per base size and one per volume "
                     "in the same model; where the per-base test rejects, the headline leads with the per-base β.")  # fmt: skip
    curve = single_curve(eq)
    if curve is not None:
        lines.append(f"- Real learning curve ({curve.dataset}, {curve.classifier}): `{curve.model}`, {curve.reason}; "
                     f"dispersion φ = {curve.dispersion:.2f}, {len(curve.points)} real cells.")  # fmt: skip
    if eq is not None:
        lines += [f"- {note}" for note in eq.notes]
    out = ["\n".join(lines)]
    if curve is not None and len(curve.goodness):
        out += ["Goodness of fit of the real learning curve, every family fitted by binomial likelihood (the one with "
                "the lowest QAIC is used; lof: lack-of-fit F test against one mean per size; the three-parameter "
                "families need 4 or more sizes):", md_table(curve.goodness)]  # fmt: skip
    return out
