"""The report's verification section for face grids: the protocol, ROC curves per arm, TAR@FAR and EER with
intervals over seeds. Reads `cells.csv` and `roc.csv` (study.store.ROC_CURVES, written by study.runner.collect);
never imports torch.

    lines = verification_section(done, roc, palette, out_dir, level=0.9)   # markdown blocks; figure written

The ROC figure draws, at one base size (the largest), every arm's cell with the most added data (real-extra:
the largest extra; synthetic arms: the largest volume) beside real-only: TAR against FAR on a log axis from
the protocol's resolution (1 / different-identity pairs) to 1, the mean over seeds of each seed's ROC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from study.analysis.estimators import t_interval
from study.report import plots
from study.report.markdown import FIGURES, fmt, fmt_ci, md_table
from study.verification import FARS, TAR_COLUMNS

# Face grids only, so not among study.report.markdown.FIGURES (every report draws those); numbered after them.
FIGURE, FIGURE_NUMBER = "fig8_roc.png", len(FIGURES) + 1

LABELS = {"verif_acc": "pair accuracy", "verif_auc": "AUC", "verif_eer": "EER", "rank1": "rank-1",
          **{c: f"TAR@FAR={f:g}" for c, f in zip(TAR_COLUMNS, FARS, strict=True)}}  # fmt: skip


def is_verification(cells: pd.DataFrame) -> bool:
    return "verif_auc" in cells and cells["verif_auc"].notna().any()


def _t(values, level: float) -> str:
    """Mean over seeds with its t interval; n/m when no seed could measure it (FAR below the resolution)."""
    mean, lo, hi = t_interval(values, level)
    return "n/m" if not np.isfinite(mean) else fmt_ci(mean, lo, hi)


def _added(cells: pd.DataFrame) -> pd.Series:
    return np.where(cells["arm"] == "real-extra", cells["extra_per_class"], cells["volume_per_class"])


def protocol_facts(done: pd.DataFrame) -> list[str]:
    first = done.iloc[0]
    disjoint = done["identity_disjoint"].astype(str).str.lower().eq("true")
    facts = [
        ("protocol", str(first["verif_protocol"])),
        ("pairs", f"{int(first['n_verif_pairs'])} ({int(first['n_same'])} same, {int(first['n_different'])} different)"),
        ("FAR resolution", f"{fmt(first['far_resolution'], sig=True)} (1 / different pairs: TAR at a lower FAR is not measurable, "
                           "n/m)"),
        ("identities", f"{int(first['n_classes'])} training, {int(first['n_verif_identities'])} verification; "
                       f"identity-disjoint in {int(disjoint.sum())} of {len(done)} cells"),
    ]  # fmt: skip
    return [md_table(pd.DataFrame(facts, columns=["", "value"]))]


def metric_table(done: pd.DataFrame, arms: list[str], level: float) -> pd.DataFrame:
    """Per arm, base and added amount: every verification metric as the mean over seeds with a t interval."""
    cells = done.assign(added=_added(done))
    columns = ["verif_acc", "verif_auc", "verif_eer", *TAR_COLUMNS]
    if "rank1" in cells and cells["rank1"].notna().any():
        columns.append("rank1")
    rank = {a: i for i, a in enumerate(arms)}
    rows = []
    for (arm, base, added), g in cells.groupby(["arm", "base_per_class", "added"], sort=False):
        row = {"arm": arm, "base/id": int(base), "added/id": int(added) or "", "n seeds": len(g)}
        row |= {LABELS[c]: _t(g[c], level) for c in columns}
        rows.append((rank.get(arm, len(rank)), base, added, row))
    return pd.DataFrame([r for *_, r in sorted(rows, key=lambda t: t[:3])])


def roc_figure(done: pd.DataFrame, roc: pd.DataFrame, palette: dict, base: int) -> Figure | None:
    """Mean ROC over seeds per arm at `base`, each arm at its largest added amount; log FAR axis."""
    cells = done[done["base_per_class"] == base].assign(added=_added(done[done["base_per_class"] == base]))
    picked = cells[cells["added"] == cells.groupby("arm")["added"].transform("max")]
    curves = roc.merge(picked[["cell", "arm", "added"]], on="cell")
    if curves.empty:
        return None
    with plots.style():
        fig = Figure(figsize=(plots.PAGE_WIDTH * 0.6, 3.0), layout="constrained")
        ax = fig.subplots()
        for arm in [a for a in palette if a in set(curves["arm"])]:
            c = curves[curves["arm"] == arm]
            mean = c.groupby("far")["tar"].mean()
            added = int(c["added"].iloc[0])
            label = arm if arm == "real-only" else f"{arm} (+{added}/id)"
            ax.step(mean.index, mean.to_numpy(), where="post", color=palette[arm], lw=1.3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("false accept rate (FAR)")
        ax.set_ylabel("true accept rate (TAR)")
        ax.set_title(f"ROC on unseen identities (base {base}/identity)")
        ax.legend(loc="lower right")
    return fig


def verification_section(done: pd.DataFrame, roc: pd.DataFrame | None, palette: dict, out: Path,
                         level: float) -> list[str]:  # fmt: skip
    arms = list(palette)
    lines = [
        "Verification on identities never trained on (by the classifier or the generator): cosine similarity of "
        "L2-normalised embeddings, pair accuracy by the LFW protocol (threshold chosen on the other folds), "
        "AUC, EER and TAR at fixed FAR.",
        *protocol_facts(done),
    ]
    (out / FIGURE).unlink(missing_ok=True)
    if roc is not None and len(roc):
        base = int(done["base_per_class"].max())
        fig = roc_figure(done, roc, palette, base)
        if fig is not None:
            caption = (f"TAR against FAR (log axis, from the FAR resolution to 1) at base {base} images per identity: "
                       "each arm with its largest added amount, the mean of the seeds' ROCs.")  # fmt: skip
            plots.save(fig, out / FIGURE)
            lines.append(f"![Figure {FIGURE_NUMBER}]({FIGURE})\n\n**Figure {FIGURE_NUMBER}.** {caption}")
    lines += [
        f"Per arm, base and added images per identity: means over seeds with {level:.0%} t intervals over seeds "
        "(n/m: FAR below the resolution, not measurable).",
        md_table(metric_table(done, arms, level)),
    ]
    return lines
