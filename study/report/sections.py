"""Report sections that read the cells table (and the estimators' summaries of it): banner, overview, per-cell
results, failed cells, strategy comparison, sample-set diagnostics, samples, generator diagnostics. Each returns
markdown paragraphs; numbers come from study.analysis.estimators. Never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.analysis.estimators import gain_diagnostics, head_to_head, sample_set_means, spearman_by_arm
from study.report import plots
from study.report.inputs import Results
from study.report.markdown import capitalised, figure, fmt_ci, md_table
from study.report.provenance import sample_previews
from study.report.verification import is_verification

METRICS = {"test_acc": "accuracy", "test_bacc": "balanced acc.", "test_auc": "AUC", "test_nll": "NLL",
           "test_ece": "ECE"}  # fmt: skip
# Sample-set diagnostics of the strategies (study.table): one value per sample set, shared by its volumes.
STRATEGY_DIAGNOSTICS = {"pair_weight_i": "weight i", "pair_weight_j": "weight j", "pair_distance": "pair distance",
                        "source_mass": "source mass", "cka": "CKA"}  # fmt: skip


def banner(res: Results) -> list[str]:
    cells = res.cells
    done, failed = int((cells["status"] == "done").sum()), int((cells["status"] == "failed").sum())
    lines = []
    if res.plan is None:
        lines.append(f"> **Grid size unknown:** no plan.json beside cells.csv, so missing cells cannot be "
                     f"counted; {done} cells done, {failed} failed.")  # fmt: skip
    elif res.plan.get("cells", 0) > len(cells):
        total = res.plan["cells"]
        lines.append(f"> **Incomplete grid:** {total - len(cells)} of {total} cells are missing (not run yet); "
                     f"{done} done, {failed} failed. Everything below uses the {done} done cells only.")  # fmt: skip
    if failed:
        lines.append(f"> **{failed} failed cell{'s' * (failed > 1)}:** listed with the error under "
                     "[Failed cells](#failed-cells) and left out of every number.")  # fmt: skip
    if res.smoke:
        lines.append("> **Smoke run:** a shrunk grid (`--smoke`) that checks the plumbing; its numbers say "
                     "nothing about the science.")  # fmt: skip
    return ["\n>\n".join(lines)] if lines else []


def overview(res: Results, done: pd.DataFrame) -> list[str]:
    grid = (res.plan or {}).get("grid") or {}
    arms = list(dict.fromkeys(res.cells["arm"]))
    kinds = dict(zip(res.cells["arm"], res.cells["arm_kind"], strict=False))
    first = done.iloc[0] if len(done) else res.cells.iloc[0]
    faces = is_verification(res.cells)
    what = "training identities" if faces else "classes"
    classes = f" ({int(first['n_classes'])} {what})" if pd.notna(first["n_classes"]) else ""
    evaluated, count = ("verification pairs", "n_verif_pairs") if faces else ("test images", "n_test")
    facts = [
        ("dataset", f"{first['dataset']}{classes}"),
        ("classifier", str(first.get("classifier", "—"))),
        (evaluated, str(int(first[count])) if pd.notna(first[count]) else "—"),
        ("seeds", ", ".join(map(str, sorted(res.cells["seed"].unique())))),
        ("base per class", ", ".join(map(str, sorted(res.cells["base_per_class"].unique())))),
        ("arms", ", ".join(f"{a} ({kinds[a]}-set generator)" if kinds[a] not in plots.REAL_ARMS else a for a in arms)),
        ("cells", f"{len(done)} done, {int((res.cells['status'] == 'failed').sum())} failed"
                  + (f", {res.plan['cells']} in the grid" if res.plan else "")),
    ]  # fmt: skip
    if grid.get("generators"):
        mixes = dict(zip(res.cells["arm"], res.cells["mix"].fillna("—"), strict=False))
        facts.append(("mixing", ", ".join(f"{a}: {mixes.get(a, '—')}" for a in grid["generators"])))
    return [md_table(pd.DataFrame(facts, columns=["", "value"]))]


def per_cell_table(summary: pd.DataFrame, level: float, label: str = "accuracy") -> list[str]:
    """`label` names the analysed metric in the test_acc column (the grid's analysis.metric)."""
    names = METRICS | {"test_acc": label}
    rows = []
    for r in summary.itertuples():
        mark = "†" if r.binomial else ""
        row = {"arm": r.arm, "base/class": r.base_per_class, "extra/class": r.extra_per_class or "",
               "synthetic/class": r.volume_per_class or "", "n": r.n}  # fmt: skip
        for metric, name in names.items():
            if metric in summary and summary[metric].notna().any():
                m = getattr(r, metric)
                row[name] = fmt_ci(m, getattr(r, f"{metric}_lo"), getattr(r, f"{metric}_hi"),
                                    mark=mark if metric == "test_acc" else "")  # fmt: skip
        rows.append(row)
    note = (f"Means over seeds (n = seeds done) with {level:.0%} t intervals over seeds. "
            "† one seed: the interval is the test set's Wilson binomial interval and leaves out seed variance.")  # fmt: skip
    return [note, md_table(pd.DataFrame(rows))]


def failed_cells(cells: pd.DataFrame) -> list[str]:
    failed = cells[cells["status"] == "failed"]
    if failed.empty:
        return ["No cell failed."]
    table = failed[["cell", "error"]].copy()
    table["error"] = table["error"].map(lambda e: f"`{e.strip()}`" if e.strip() else "(no error recorded)")
    return [f"{len(failed)} cell{'s' * (len(failed) > 1)} failed; none is used in any number above.", md_table(table)]


def strategy_section(
    gains: pd.DataFrame, palette, kinds, out: Path, level: float, label: str = "accuracy"
) -> list[str]:
    if not (gains["arm_kind"] != "real-extra").any():
        return ["Not available: no synthetic cell has a real-only partner (same base and seed)."]
    fig = plots.strategy_gains(gains, palette, kinds, level, label=label)
    caption = (f"{capitalised(label)} gain over real-only at the same base, paired by seed, {level:.0%} intervals; "
               "real-extra (grey line) adds the same number of real images per class instead.")  # fmt: skip
    table = pd.DataFrame({
        "arm": gains["arm"], "base/class": gains["base_per_class"], "added/class": gains["added_per_class"],
        "n pairs": gains["n"],
        "gain": [fmt_ci(m, lo, hi, mark="†" if b else "") for m, lo, hi, b in
                 zip(gains["mean"], gains["lo"], gains["hi"], gains["binomial"], strict=True)],
    })  # fmt: skip
    lines = [figure(fig, out, "strategies", caption), md_table(table)]
    if gains["binomial"].any():
        lines.append("† one seed: Newcombe's interval of the two test-set proportions (no seed variance).")
    return lines


def strategy_diagnostics(done: pd.DataFrame, level: float) -> list[str]:
    """Per synthetic arm: its strategy, label policy and the mean of each sample-set diagnostic over its sample
    sets (t intervals), when the table has them (older tables do not)."""
    cols = list(STRATEGY_DIAGNOSTICS)
    if not done[cols].notna().any().any():
        return []
    means = sample_set_means(done, cols, level)
    table = means[["arm", "strategy", "labels", "n_sets"]].rename(columns={"n_sets": "n sets"})
    for col, label in STRATEGY_DIAGNOSTICS.items():
        table[label] = [fmt_ci(m, lo, hi) for m, lo, hi in zip(means[col], means[f"{col}_lo"], means[f"{col}_hi"],
                                                                 strict=True)]  # fmt: skip
    note = ("Sample-set diagnostics (mean over sample sets, one per base and seed; "
            f"{level:.0%} t intervals). weight i, j: the mixing weights of a pair's classes (AugGen's alpha, beta "
            "as searched or set; ScoreMix's lambda, 1 − lambda). pair distance: mean cosine distance of the pairs' "
            "class centroids in the real-only classifier's space. source mass: the reference classifier's mean "
            "probability on a mixed image's two source classes (2/K by chance). CKA: linear CKA of the generator's "
            "class embeddings and the real-only classifier's class centroids (ScoreMix reports ≈ 0.35 for faces; "
            "with K classes as items, small K biases it upwards).")  # fmt: skip
    return [note, md_table(table)]


def head_to_head_table(pairs: pd.DataFrame, difference: str = "difference") -> pd.DataFrame:
    """The rows of study.analysis.estimators.head_to_head, formatted: a − b, base, generators, cells, difference."""
    return pd.DataFrame({
        "a − b": pairs["a"] + " − " + pairs["b"], "base/class": pairs["base_per_class"],
        "generators": pairs["n_generators"], "cells": pairs["n_cells"],
        difference: [fmt_ci(m, lo, hi) for m, lo, hi in zip(pairs["mean"], pairs["lo"], pairs["hi"], strict=True)],
    })  # fmt: skip


def head_to_head_section(done: pd.DataFrame, arms: list[str], level: float, label: str = "accuracy") -> list[str]:
    """Arms that sample the same generators, cell by cell (study.analysis.estimators.head_to_head); nothing when no
    two arms share one."""
    pairs = head_to_head(done, arms, level)
    if pairs.empty:
        return []
    table = head_to_head_table(pairs, f"{label} difference")
    note = (f"Head to head: arms that sample the same trained generators, compared at the same generator, seed, base "
            f"and volume ({label} of a minus that of b). Each generator's mean difference over its cells is one "
            f"value, and the interval is the {level:.0%} t interval over generators, so the generator's own quality "
            "and the test set are paired out: what remains is how the two arms sample or mix it.")  # fmt: skip
    return [note, md_table(table)]


def samples_section(res: Results, done: pd.DataFrame, palette, n_classes: int, out: Path) -> list[str]:
    previews = sample_previews(res, done)
    if previews.empty:
        why = "no artifact store found" if res.store is None else "no done sample set has a preview.png"
        return [f"Not available: {why}."]
    from study.report.diagnostics import nearest_previews  # the most-memorised arm beside its nearest base images

    nearest, nearest_caption = nearest_previews(res.store, done)
    fig = plots.sample_grids(pd.concat([previews, nearest]) if len(nearest) else previews, palette, n_classes)
    seeds = ", ".join(map(str, sorted(previews["seed"].unique())))
    caption = (f"Synthetic samples from each arm's sample set (seed {seeds}; the lowest seed done), one row per class, "
               "per base size. Arms joined by '=' share one sample set (they differ only in how samples are mixed "
               "into classifier batches or labelled).") + nearest_caption  # fmt: skip
    return [figure(fig, out, "samples", caption)]


def diagnostics_section(per_seed: pd.DataFrame, palette, out: Path, level: float) -> list[str]:
    points = gain_diagnostics(per_seed)
    if points.empty:
        return ["Not available: no done synthetic cell carries a generator diagnostic (cond_acc)."]
    fig = plots.diagnostics_vs_gain(points, palette)
    caption = ("Conditional accuracy of each sample set (the share of its samples a reference classifier trained on "
               "the whole real pool labels as their class) vs the accuracy gain over real-only of the cells trained "
               "on it (same base and seed), averaged over the set's volumes.")  # fmt: skip
    rho = spearman_by_arm(points, level)
    table = pd.DataFrame({
        "arm": rho["arm"], "n sample sets": rho["n"],
        "Spearman ρ": [fmt_ci(r, lo, hi, 2) if pd.notna(r) else "— (too few distinct points)"
                       for r, lo, hi in zip(rho["rho"], rho["lo"], rho["hi"], strict=True)],
    })  # fmt: skip
    return [figure(fig, out, "diagnostics", caption), f"Rank correlation ({level:.0%} Fisher-z intervals):",
            md_table(table)]  # fmt: skip
