"""The report's "Why did synthetic data help or not?" section: the sample-set diagnostics (study.sampling.diagnostics,
read from cells.csv) per arm and base, beta against each of them (one point per distinct sample set, Spearman with
a Fisher-z interval), one sentence per arm (per arm and base where its β differs between bases) naming the diagnostic that separates it from the arms of the other
outcome, and the nearest-base-image panels of the most-memorised arm for the samples figure. Never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from study.analysis import diagnostics as dx
from study.analysis.estimators import t_interval
from study.report import plots
from study.report.estimates import rejects_one_beta
from study.report.markdown import figure, fmt_ci, md_table
from study.store import NEAREST, Store

# The table's two halves: memorisation / redundancy, then fidelity, domain gap and CAS.
MEMORISATION = ["mem_frac", "mem_ratio", "mem_frac_feat", "mem_ratio_feat", "gen_mem_frac", "gen_mem_ratio"]
FIDELITY = ["fd", "kd", "precision", "recall", "density", "coverage", "domain_auc", "cas", "fid"]
SHORT = {"mem_frac": "near-copy", "mem_ratio": "dist. ratio", "mem_frac_feat": "near-copy (feat.)",
         "mem_ratio_feat": "dist. ratio (feat.)", "gen_mem_frac": "near-copy (own train)",
         "gen_mem_ratio": "ratio own train/val", "fd": "FD", "kd": "KD", "precision": "precision", "recall": "recall",
         "density": "density", "coverage": "coverage", "domain_auc": "domain AUC", "cas": "CAS", "fid": "FID"}  # fmt: skip


def section(done: pd.DataFrame, per_cell: pd.DataFrame | None, fit: pd.DataFrame | None, palette, out: Path,
            level: float, fit_by_base: pd.DataFrame | None = None) -> list[str]:  # fmt: skip
    """The section's markdown (figure 7 written to `out`); `fit_by_base` (the joint model per arm and base) splits
    the "why" sentences of an arm by base where its rate differs between bases."""
    points = dx.sample_set_points(done, per_cell)
    if points.empty:
        return ["Not available: no done synthetic cell carries sample-set diagnostics (older tables, or the "
                "diagnostics stage failed: see `diagnostics_error` in cells.csv)."]  # fmt: skip
    lines = [_definitions(done)]
    lines += ["Per arm and base size: mean over the sample sets (one per seed) with "
              f"{level:.0%} t intervals; real-only acc. is the accuracy of the real-only cell with as many real "
              "images as CAS had synthetic ones.", md_table(_table(points, done, MEMORISATION, level)),
              md_table(_table(points, done, FIDELITY, level, real_acc=True))]  # fmt: skip
    corr = dx.correlations(points, level)
    if points["beta"].notna().any():
        caption = ("β per sample set (the mean of the per-cell β of the cells trained on it: its volumes and the arms "
                   "that share it) against each diagnostic; colour = arm, marker = base size; ρ: Spearman over sample "
                   f"sets with its {level:.0%} Fisher-z interval.")  # fmt: skip
        lines.append(figure(beta_figure(points, corr, palette), out, "why", caption))
        table = corr.assign(diagnostic=corr["diagnostic"].map(dx.DIAGNOSTICS),
                            **{"Spearman ρ (β)": [fmt_ci(r, lo, hi, 2) for r, lo, hi in
                                                  zip(corr["rho"], corr["rho_lo"], corr["rho_hi"], strict=True)]})  # fmt: skip
        lines += [f"Rank correlation of β with each diagnostic over {len(points)} sample sets:",
                  md_table(table[["diagnostic", "n", "Spearman ρ (β)"]])]  # fmt: skip
    if fit is not None and len(fit):
        lines.append(sentences(points, fit, fit_by_base))
    missing = done["diagnostics_error"].astype("string").fillna("") if "diagnostics_error" in done else pd.Series([])
    if (missing != "").any():
        lines.append(f"{int((missing != '').sum())} synthetic cells have no diagnostics (the stage failed): "
                     f"`{missing[missing != ''].iloc[0][:300]}`.")  # fmt: skip
    return lines


def _definitions(done: pd.DataFrame) -> str:
    return (
        "Each sample set is compared, at each base size it serves, with the base images of each class (what the "
        "classifier already has; for a closed-set arm, the generator's training set) and with as many training "
        "images of the class from outside the base (never test or val). **near-copy**: share of samples whose "
        "nearest base image is 3× closer than the second nearest (d1/d2 < 1/3, Gu et al. 2025). **dist. ratio**: "
        "median distance to the nearest base image over the median distance to the nearest outside image, against "
        "equal-size sets (≈ 1 for new images of the data distribution, far below 1 for copies of the base). Both "
        "in pixels and in the judge's penultimate features (the judge: the classifier trained on the whole "
        "training pool, one per seed; it also gives conditional accuracy). FD, KD (KID's unbiased estimator), "
        "precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) compare the set "
        "with a class-balanced sample of the pool in the judge's features. **domain AUC**: cross-validated AUC of "
        "a small CNN telling the samples from real images of the same classes (0.5 = indistinguishable). "
        "**CAS**: test accuracy of the grid's classifier trained on the first base-size synthetic images per "
        "class alone (Ravuri & Vinyals 2019)."
    )


def _table(points, done, cols, level, real_acc: bool = False) -> pd.DataFrame:
    cols = [c for c in cols if c in points and points[c].notna().any()]
    real = done[done["arm"] == "real-only"].groupby("base_per_class")["test_acc"].mean() if real_acc else None
    rows = []
    for (arms, base), g in points.groupby(["arms", "base_per_class"], sort=False):
        row = {"arm": arms, "base/class": base, "n sets": len(g)}
        for c in cols:
            digits = 2 if c in ("fd", "fid") else 3
            row[SHORT[c]] = fmt_ci(*t_interval(g[c], level), digits)
        if real is not None and "cas" in cols:
            row["real-only acc."] = fmt_ci(real.get(base, np.nan), None, None)
        row["β (mean per set)"] = fmt_ci(*t_interval(g["beta"], level), 3)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["base/class"], kind="stable").sort_values("arm", kind="stable",
                                                                                   key=_arm_rank(points))  # fmt: skip


def _arm_rank(points):
    order = {a: i for i, a in enumerate(dict.fromkeys(points["arms"]))}
    return lambda col: col.map(order)


def beta_figure(points: pd.DataFrame, corr: pd.DataFrame, palette) -> Figure:
    """β per sample set against each diagnostic (one panel each), Spearman ρ in the panel title."""
    cols = [c for c in corr["diagnostic"] if points[c].notna().any()]
    rho = corr.set_index("diagnostic")
    bases = sorted(points["base_per_class"].unique())
    markers = dict(zip(bases, "os^Dvp*hX", strict=False))
    ncols = 4
    with plots.style():
        fig = Figure(figsize=(plots.PAGE_WIDTH, 1.75 * -(-len(cols) // ncols) + 0.6), layout="constrained")
        axes = fig.subplots(-(-len(cols) // ncols), ncols, sharey=True, squeeze=False).ravel()
        for ax in axes[len(cols) :]:
            ax.set_visible(False)
        for ax, col in zip(axes, cols, strict=False):
            for (arm, base), g in points.groupby(["arm", "base_per_class"], sort=False):
                ax.plot(g[col], g["beta"], ls="", marker=markers.get(base, "o"), ms=3.5, alpha=0.85,
                        color=palette.get(arm, "#555555"), mec="white", mew=0.3)  # fmt: skip
            ax.axhline(0, color="#555555", lw=0.7)
            r = rho.loc[col]
            text = "ρ —" if not np.isfinite(r["rho"]) else f"ρ {r['rho']:.2f} [{r['rho_lo']:.2f}, {r['rho_hi']:.2f}]"
            ax.set_title(f"{SHORT[col]}\n{text}", fontsize=7.5, fontweight="normal")
            ax.tick_params(labelsize=6.5)
        for ax in axes[::ncols]:
            ax.set_ylabel("β per sample set")
        labels = list(dict.fromkeys(zip(points["arm"], points["arms"], strict=True)))
        handles = [Line2D([], [], color=palette.get(a, "#555555"), marker="o", ls="", ms=4, label=lab)
                   for a, lab in labels]  # fmt: skip
        handles += [Line2D([], [], color="#555555", marker=markers.get(b, "o"), ls="", ms=4, label=f"base {b:g}/class")
                    for b in bases]  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
        fig.suptitle("β (real images gained per synthetic image) vs the sample-set diagnostics", fontsize=9)
    return fig


def sentences(points: pd.DataFrame, fit: pd.DataFrame, fit_by_base: pd.DataFrame | None = None) -> str:
    """One sentence per synthetic arm, from the numbers: helped = the joint model's β interval lies above 0. Where
    the arm's heterogeneity test rejects one β for every base (p < HETEROGENEITY_P) and per-base fits exist, one
    sentence per (arm, base) instead, each base's outcome from its own β and its sample sets at that base."""
    present = {a for arms in points["arms"] for a in arms.split(" = ")}
    verdicts = {r.arm: r.verdict for r in fit.itertuples() if r.arm in present}
    split = _split_by_base(fit, fit_by_base, verdicts)
    if split:
        points = points.assign(arms=[" = ".join(_unit(a, b, split) for a in arms.split(" = "))
                                     for arms, b in zip(points["arms"], points["base_per_class"], strict=True)])  # fmt: skip
        for arm, per_base in split.items():
            del verdicts[arm]
            verdicts |= {_unit(arm, b, split): v for b, v in per_base.items()}
    helped = {a: v == "gain" for a, v in verdicts.items() if v in ("gain", "no measurable gain", "hurts")}
    table = dx.separations(points, helped)
    lines = [f"- **{a}**: β is {v}, so it is in neither group." for a, v in verdicts.items() if a not in helped]
    alone = [r for r in table.itertuples() if not r.rivals]
    if alone:  # no arm of the other outcome: one sentence for all of them, not one per arm
        lines.append(f"- {', '.join(f'**{r.arm}**' for r in alone)}: {_outcome(alone[0].helped)}. No arm had the "
                     "other outcome, so no diagnostic can separate the arms that helped from those that did not.")  # fmt: skip
    for r in table.itertuples():
        if not r.rivals:
            continue
        outcome = _outcome(r.helped)
        if r.shared:
            lines.append(f"- **{r.arm}** {outcome}, but it trains on the same sample sets as {', '.join(r.rivals)} "
                         "(of the other outcome): no sample-set diagnostic can separate them; the difference is in "
                         "how the samples are mixed into training.")  # fmt: skip
        elif r.diagnostic is None:
            lines.append(f"- **{r.arm}** {outcome}; no diagnostic is available on both sides to compare it with "
                         f"{', '.join(r.rivals)}.")  # fmt: skip
        else:
            lines.append(f"- **{r.arm}** {outcome}: the diagnostic that best separates it from "
                         f"{', '.join(r.rivals)} is {dx.DIAGNOSTICS[r.diagnostic]}, {r.mean:.3g} vs {r.other_mean:.3g} "
                         f"(mean over {r.n_sets} vs {r.n_other} sample sets; rank separation {r.auc:.2f}, the share "
                         "of (its set, their set) pairs where its value is the larger: 0 or 1 = no overlap).")  # fmt: skip
    where = "per arm"
    if split:
        p = fit.set_index("arm")["heterogeneity_base_p"]
        where = "per arm, and per base size for " + ", ".join(
            f"{a} (β differs between bases: p = {p[a]:.2g})" for a in split
        )
    return f"Which diagnostic separates the arms that helped from those that did not ({where}):\n\n" + "\n".join(lines)


def _outcome(helped: bool) -> str:
    return "helped (β > 0)" if helped else "did not help (β's interval includes or lies below 0)"


def _unit(arm: str, base, split: dict) -> str:
    """The name an arm's sample sets go by: the arm, or "arm at B/class" when it is split by base."""
    return f"{arm} at {int(base)}/class" if arm in split else arm


def _split_by_base(fit, fit_by_base, verdicts: dict) -> dict[str, dict]:
    """Arms whose per-base test rejects one β: {arm: {base: verdict of that base's β}}."""
    if fit_by_base is None or not len(fit_by_base) or "heterogeneity_base_p" not in fit or "verdict" not in fit_by_base:
        return {}
    split = {}
    for r in fit.itertuples():
        p = r.heterogeneity_base_p
        if r.arm in verdicts and rejects_one_beta(p):
            mine = fit_by_base[fit_by_base["arm"] == r.arm]
            if len(mine) > 1:
                split[r.arm] = dict(zip(mine["base_per_class"], mine["verdict"], strict=True))
    return split


# --- the nearest-base-image rows of the samples figure ---------------------------------------------------------


def nearest_previews(store: Path | None, done: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Rows for plots.sample_grids (arm, label, base_per_class, seed, path): the most-memorised arm's nearest.png
    per base (lowest seed), and a caption sentence; empty without a store or panels."""
    cols = ["arm", "label", "base_per_class", "seed", "path"]
    points = dx.sample_set_points(done)
    label = dx.most_memorised(points) if len(points) else None
    if store is None or label is None:
        return pd.DataFrame(columns=cols), ""
    rows = []
    for base, g in points[points["arms"] == label].sort_values("seed").groupby("base_per_class"):
        for r in g.itertuples():
            d = Store(store).find("diagnostics", str(r.diagnostics_key))
            if d is not None and (d / NEAREST).exists():
                rows.append({"arm": r.arm, "label": f"{label}:\nsample | nearest base", "base_per_class": base,
                             "seed": r.seed, "path": d / NEAREST})  # fmt: skip
                break
    if not rows:
        return pd.DataFrame(columns=cols), ""
    mean = points.loc[points["arms"] == label, "mem_frac"].mean()
    caption = (f" The last row is the most-memorised arm ({label}; mean near-copy share {mean:.2f}): each of its "
               "first samples per class followed by its nearest base image in pixel space (for a closed-set arm, "
               "the generator's own training image).")  # fmt: skip
    return pd.DataFrame(rows)[cols], caption
