"""The findings page's search table: before synthetic data is called worthless on a dataset, the settings the
harness exposes are searched (issue 20), one grid per group of settings, and this table shows every searched
setting side by side: what it changes against a baseline, β at each base with its interval, k, the verdict, the
sample-set diagnostics and what the setting cost. Never imports torch.

    python -m study.report.search RESULTS_DIR... --out reports/FINDINGS.md [--baseline RESULTS_DIR:ARM[:BASE]]

Each row is one (study, synthetic arm, base size) of the given results directories, from the same analysis as
the study's own report (study.report.build), so a searched setting reads exactly as its report would. The
"setting" column is computed, not written by hand: the differences between the row's generator and classifier
specs (from each run's plan.json) and the baseline's, plus the base when it differs. The baseline is the first
arm of the first directory unless `--baseline` names one. Only the part of `--out` between this table's two
marker lines is rewritten.
Columns besides those of the findings table (study.report.findings):
    build (min)         wall time of building the row's generators, sample sets, diagnostics and synthetic-cell
                        classifiers (done.json of each artifact, counted once, cached or not): what the setting
                        cost where it ran (a shared machine inflates it), not what this run spent
    CPU (min)           their process CPU time, the cost on any machine; — where a build did not record it
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from study.report.build import analyse_results, on_grid_metric
from study.report.estimates import k_text
from study.report.findings import diagnostic_means, page_parser, rewrite_page
from study.report.inputs import ReportError, Results, locate
from study.report.markdown import fmt, fmt_ci, in_arm_order, md_table
from study.report.provenance import build_seconds

SEARCH_START = "<!-- search table: written by `python -m study.report.search`; edit outside the markers -->"
SEARCH_END = "<!-- end of search table -->"
FIDELITY = ("cond. acc.", "near-copy", "precision", "recall", "domain AUC")


def arm_setting(res: Results, arm: str) -> dict[str, dict]:
    """Everything that decides an arm's cells: its generator block and the grid's classifier (plan.json)."""
    grid = (res.plan or {}).get("grid") or {}
    generators = grid.get("generators") or {}
    if arm not in generators:
        raise ReportError(f"{res.results_dir / 'plan.json'}: no generator block for arm {arm!r}; expected one of "
                          f"{sorted(generators)} (plan.json written by `python -m study.run`)")  # fmt: skip
    return {"generator": generators[arm], "classifier": grid.get("classifier") or {}}


def differences(baseline, setting, name: str = "") -> list[str]:
    """'name old → new' for every leaf that differs, recursing where both sides are blocks; a block against a
    plain value (mix: uniform → {fraction: 0.25}) is one difference."""
    if isinstance(baseline, dict) and isinstance(setting, dict):
        return [line for key in sorted(baseline.keys() | setting.keys())
                for line in differences(baseline.get(key), setting.get(key), f"{name}.{key}" if name else key)]  # fmt: skip
    return [] if baseline == setting else [f"{name} {_value(baseline)} → {_value(setting)}"]


def setting_text(setting: dict, base: int, baseline: dict, baseline_base: int) -> str:
    """'train.steps 800 → 2400; base 20 → 80/class' (generator keys without their prefix), or 'baseline'."""
    changes = [c.removeprefix("generator.") for c in differences(baseline, setting)]
    if base != baseline_base:
        changes.append(f"base {baseline_base} → {base}/class")
    return "; ".join(changes) or "baseline"


def _value(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items() if x is not None) + "}"
    return "—" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def study_rows(res: Results, baseline: tuple[dict, int], n_boot: int = 1000, level: float = 0.9) -> pd.DataFrame:
    """One row per synthetic arm and base of one searched grid (see the module docstring for the columns)."""
    res, _ = on_grid_metric(res)
    done = res.cells[res.cells["status"] == "done"].copy()
    eq, error = analyse_results(res, done, n_boot, level, 0)
    if eq is None:
        raise ReportError(f"{res.results_dir}: the equivalence analysis could not run: {error}")
    by_base = eq.fit_by_base if len(eq.fit_by_base) else eq.fit.assign(base_per_class=done["base_per_class"].max())
    rows = []
    for r in in_arm_order(by_base, list(dict.fromkeys(res.cells["arm"])), "base_per_class").itertuples():
        base = int(r.base_per_class)
        here = done[(done["arm"] == r.arm) & (done["base_per_class"] == base)]
        rows.append({"study": res.name, "arm": r.arm,
                     "setting": setting_text(arm_setting(res, r.arm), base, *baseline),
                     "base/class": base, "β": fmt_ci(r.beta, r.beta_lo, r.beta_hi, sig=True), "k": k_text(r),
                     "verdict": r.verdict, **{k: v for k, v in diagnostic_means(here).items() if k in FIDELITY},
                     **_compute_minutes(res, here)})  # fmt: skip
    return pd.DataFrame(rows)


def _compute_minutes(res: Results, cells: pd.DataFrame) -> dict[str, str]:
    """Build wall time and process CPU time of the row's distinct artifacts, in minutes; CPU — unless every
    artifact recorded it."""
    wall, cpu = 0.0, 0.0
    for stage, col in (("generator", "generator_key"), ("samples", "samples_key"),
                       ("diagnostics", "diagnostics_key"), ("classifier", "cell_key")):  # fmt: skip
        for key in cells[col].dropna().unique() if col in cells and res.store is not None else []:
            built = build_seconds(res.store, stage, str(key)) or (np.nan, np.nan)
            wall, cpu = wall + built[0], cpu + built[1]
    return {"build (min)": fmt(wall / 60, 1) if res.store else "—", "CPU (min)": fmt(cpu / 60, 1)}


def parse_baseline(text: str | None, targets: list[Results]) -> tuple[dict, int]:
    """`RESULTS_DIR:ARM[:BASE]` (default: the arm's smallest base), or the first target's first synthetic arm at
    its smallest base -> (setting, base)."""
    if text is None:
        res = targets[0]
        syn = res.cells[res.cells["generator_key"].notna()] if "generator_key" in res.cells else res.cells.iloc[:0]
        if syn.empty:
            raise ReportError(f"{res.results_dir}: no synthetic cells, so no baseline arm; give --baseline DIR:ARM")
        arm = syn["arm"].iloc[0]
    else:
        path, sep, arm = text.rpartition(":")
        base = None
        if arm.isdigit() and ":" in path:
            (path, _, arm), base = path.rpartition(":"), int(arm)
        if not sep:
            raise ReportError(f"--baseline {text!r}: expected RESULTS_DIR:ARM or RESULTS_DIR:ARM:BASE")
        res = locate(path)
        syn = res.cells[res.cells["arm"] == arm]
        if syn.empty:
            raise ReportError(f"--baseline {text!r}: {res.results_dir / 'cells.csv'} has no cells of arm {arm!r}")
        if base is not None:
            if base not in set(syn["base_per_class"]):
                raise ReportError(f"--baseline {text!r}: arm {arm!r} has no cells at base {base} per class; it has "
                                  f"{sorted(set(syn['base_per_class']))}")  # fmt: skip
            return arm_setting(res, arm), base
    return arm_setting(res, arm), int(syn["base_per_class"].min())


def table_markdown(targets: list[str | Path], baseline: str | None = None, n_boot: int = 1000,
                   level: float = 0.9) -> str:  # fmt: skip
    results = [locate(t) for t in targets]
    base = parse_baseline(baseline, results)
    rows = pd.concat([study_rows(res, base, n_boot, level) for res in results], ignore_index=True)
    return (
        f"{level:.0%} intervals; built from {', '.join(f'`{t}`' for t in targets)} (the same analysis as each "
        "study's report); the setting column lists what differs from the baseline row.\n\n" + md_table(rows)
    )


def main(argv: list[str] | None = None) -> int:
    p = page_parser("python -m study.report.search", __doc__,
                    "results directories (or grid files) of the searched grids, in order")  # fmt: skip
    p.add_argument("--baseline", help="RESULTS_DIR:ARM[:BASE] whose settings the others are compared with "
                                      "(default: the first target's first synthetic arm at its smallest base)")  # fmt: skip
    args = p.parse_args(argv)
    return rewrite_page(args.out, lambda: table_markdown(args.targets, args.baseline, args.n_boot, args.level),
                        SEARCH_START, SEARCH_END, "search table")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
