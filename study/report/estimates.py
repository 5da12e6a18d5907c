"""Report sections that read the equivalence analysis (study.analysis.equivalence.Equivalence): headline,
accuracy vs size with the fitted curve, exchange rates, equivalence curves with the closed form and the published
constants beside ours, methods. Each returns markdown paragraphs. Never imports torch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis.published import SETTINGS, SOURCE
from study.report import plots
from study.report.markdown import figure, fmt, fmt_ci, fmt_interval, in_arm_order, md_table, plural, with_reason


def headline(eq, eq_error: str | None, synthetic: list[str], level: float) -> list[str]:
    if not synthetic:
        return ["This grid has real arms only: there is no exchange rate to estimate. The learning curve and "
                "the per-cell table below are the result."]  # fmt: skip
    if eq is None:
        return [f"The equivalence analysis could not run: {eq_error}."]
    fit = eq.fit.set_index("arm") if len(eq.fit) else pd.DataFrame()
    lines = []
    for arm in synthetic:
        if arm not in fit.index:
            lines.append(f"- **{arm}**: no done cells to fit.")
            continue
        r = fit.loc[arm]
        beta = fmt_ci(r["beta"], r["beta_lo"], r["beta_hi"], sig=True)
        cells = f"{plural(r['n_done'], 'synthetic cell')}, {plural(r['n_seeds'], 'seed')}"
        n = f"joint model on this arm's {cells.replace(', ', ' (', 1)}) and the real cells"
        n += f", {level:.0%} likelihood-ratio interval"
        if r["verdict"] == "gain":
            text = (f"**k = {fmt_ci(r['k'], r['k_lo'], r['k_hi'], sig=True)} synthetic images per real image** "
                    f"(β = {beta} real images per synthetic image)")  # fmt: skip
        elif r["verdict"] in ("hurts", "no measurable gain"):
            text = f"**{r['verdict']}**: β = {beta} real images per synthetic image, so k is not defined"
        else:
            text, n = f"**not estimable**: {r['reason'] or 'see Methods'}", cells
        lines.append(f"- **{arm}**: {text}; {n}.")
    return ["\n".join(lines), "β is the signed exchange rate (n_eff − n_base) / n_syn, real images gained per "
            "synthetic image; k = 1/β is reported only where β's interval excludes zero. Estimates per base size "
            "and per synthetic volume, and the paper's closed form, follow."]  # fmt: skip


def single_curve(eq):
    """The one real learning curve of the analysis, or None (no analysis, no curve, or several datasets)."""
    if eq is None:
        return None
    with contextlib.suppress(ValueError):  # several (dataset, classifier) curves in one table: no single curve
        return eq.curve
    return None


def accuracy_section(done, summary, palette, eq, n_classes, out: Path, level: float) -> list[str]:
    curve = single_curve(eq)
    curve = None if curve is None else curve.acc
    fig = plots.accuracy_vs_size(done, summary, palette, n_classes, curve=curve, level=level)
    synthetic = done["arm_kind"].isin(["closed", "open"]).any()
    caption = ("Test accuracy vs training images per class. Black and grey: real data only (real-only at each base; "
               "real-extra = a base plus extra real images)"
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
        lines += ["Per arm and base size (the joint model fitted on the real cells and this arm's cells at that base):",
                  md_table(_by_base_table(by_base, list(palette)))]  # fmt: skip
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
                     "β": fmt_ci(r.beta, r.beta_lo, r.beta_hi, sig=True),
                     "k": fmt_ci(r.k, r.k_lo, r.k_hi, sig=True) if r.verdict == "gain" else "—",
                     "verdict": with_reason(r.verdict, r.reason)})  # fmt: skip
    return pd.DataFrame(rows)


def _per_volume_table(e: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    rows = []
    for r in in_arm_order(e, arms, "base_per_class", "volume_per_class").itertuples():
        rows.append({"arm": r.arm, "base/class": int(r.base_per_class), "synthetic/class": int(r.volume_per_class),
                     "n seeds": r.n_seeds, "n_eff (images)": fmt_ci(r.n_eff, r.n_eff_lo, r.n_eff_hi, sig=True),
                     "β": fmt_ci(r.beta, r.beta_lo, r.beta_hi, sig=True),
                     "β bootstrap": fmt_interval(r.beta_lo_boot, r.beta_hi_boot),
                     "k": fmt_ci(r.k, r.k_lo, r.k_hi, sig=True) if r.verdict == "gain" else "—",
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
                       "accuracies in log n_syn; lines: the fitted closed form "
                       "n_syn/n_base = c1^(n_base/K)·(c2^(n_real+/n_base) − 1); dotted: one synthetic image per real "
                       "image.")  # fmt: skip
            lines.append(figure(fig, out, "curves", caption))
        missed = pts[pts["status"] != "ok"]
        if len(missed):
            counts = ", ".join(f"{n} {s}" for s, n in missed["status"].value_counts().items())
            lines.append(f"{len(missed)} of {len(pts)} (arm, base, real added) targets lie outside the accuracies the "
                         f"tested synthetic volumes reached ({counts}); they are not drawn and not fitted.")  # fmt: skip
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
    return ["Fitted closed-form constants per arm (n points: the n_syn* points fitted; K is fixed to the number of "
            "classes because only ln(c1)/K is identifiable):", md_table(pd.DataFrame(rows)), source]  # fmt: skip


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
            f"dispersion, {bootstrap}. Per arm and per base: the joint model logit p = a + b·log(n_real + β·n_syn), "
            "β by profile likelihood with a likelihood-ratio interval. Failed cells are left out of every fit."
        )
    curve = single_curve(eq)
    if curve is not None:
        lines.append(f"- Real learning curve ({curve.dataset}, {curve.classifier}): `{curve.model}`, {curve.reason}; "
                     f"dispersion φ = {curve.dispersion:.2f}, {len(curve.points)} real cells.")  # fmt: skip
    if eq is not None:
        lines += [f"- {note}" for note in eq.notes]
    out = ["\n".join(lines)]
    if curve is not None and len(curve.goodness):
        out += ["Goodness of fit of the real learning curve (lof: lack-of-fit F test against one mean per size; the "
                "power law is fitted beside the GLM with 4 or more sizes):", md_table(curve.goodness)]  # fmt: skip
    return out
