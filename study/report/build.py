"""Write the study's report: `python -m study.report GRID.yaml | RESULTS_DIR [--out DIR]`.

    python -m study.report grids/quickstart.yaml                  # results/quickstart -> reports/quickstart/
    python -m study.report results/quickstart --out /tmp/report   # a results directory, another output
    python -m study.report grids/cifar.yaml --smoke --results /scratch/results

Reads `results/<name>/cells.csv` (and `plan.json` beside it, for the grid and the artifact store), runs the
equivalence analysis (writing `equivalence.csv` and `equivalence_fit.csv` beside `cells.csv`) and writes
`reports/<name>/report.md` with its PNG figures. It works on an incomplete grid (a banner says what is
missing), on `--smoke` runs and on grids with real arms only. Costs seconds to a minute (the bootstrap);
never imports torch. Exit codes: 0 written; 2 bad input (the message names the file and what was expected).

The parts: study.report.inputs (what is read), .sections and .estimates (the sections), .markdown (numbers,
tables, figure references), .provenance (the artifact store), .plots (the figures); the numbers come from
study.analysis (estimators, equivalence).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from study.analysis import equivalence
from study.analysis.estimators import CELL_KEYS, paired_gains, summarise
from study.analysis.metric import MetricError, grid_metric, metric_label, on_metric
from study.report import diagnostics as sample_set_diagnostics
from study.report import plots, verification
from study.report.estimates import accuracy_section, closed_form_section, headline, methods, rate_section
from study.report.inputs import ReportError, Results, locate, n_classes_of
from study.report.markdown import FIGURES, capitalised, in_arm_order
from study.report.planning import planning_section
from study.report.provenance import provenance_section
from study.report.sections import (
    METRICS,
    banner,
    diagnostics_section,
    failed_cells,
    head_to_head_section,
    overview,
    per_cell_table,
    samples_section,
    strategy_diagnostics,
    strategy_section,
)
from study.store import ROC_CURVES, atomic_write_text

__all__ = ["FIGURES", "ReportError", "Results", "locate", "main", "write_report"]


def write_report(res: Results, out: str | Path, n_boot: int = 1000, level: float = 0.9, seed: int = 0) -> Path:
    """Run the analysis, draw the figures and write `out/report.md`; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in [*FIGURES.values(), verification.FIGURE]:  # a figure not drawn now must not survive from before
        (out / name).unlink(missing_ok=True)
    raw = res.cells
    res, metric = on_grid_metric(res)
    label = metric_label(metric)
    done = res.cells[res.cells["status"] == "done"].copy()
    arms = list(dict.fromkeys([a for a in plots.REAL_ARMS if a in set(res.cells["arm"])] + list(res.cells["arm"])))
    palette = plots.arm_palette(arms)
    kinds = dict(zip(res.cells["arm"], res.cells["arm_kind"], strict=False))
    summary = in_arm_order(summarise(done, level), arms, *CELL_KEYS[2:])
    per_seed, gains = paired_gains(done, level)
    gains = in_arm_order(gains, arms, "base_per_class", "added_per_class")
    eq, eq_error = analyse_results(res, done, n_boot, level, seed)
    synthetic = [a for a in arms if kinds[a] in ("closed", "open")]
    n_classes = n_classes_of(res.cells)

    md = [f"# Report: {res.name}", f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
          f"`python -m study.report` from `{res.results_dir}/cells.csv`.", *banner(res), *overview(res, done)]  # fmt: skip
    if done.empty:
        md += ["No cell is done yet: nothing to analyse.", "## Failed cells", *failed_cells(res.cells),
               "## Provenance", *provenance_section(res)]  # fmt: skip
        return _write(out, md)
    md += ["## Headline", *headline(eq, eq_error, synthetic, level, metric)]
    md += [f"## {'Accuracy' if metric == 'test_acc' else capitalised(label)} vs training-set size",
           *accuracy_section(done, summary, palette, eq, n_classes, out, level, label)]  # fmt: skip
    if synthetic:
        md += ["## Exchange rate: synthetic images per real image", *rate_section(eq, eq_error, palette, kinds, out,
                                                                                   level)]  # fmt: skip
        md += ["## Equivalence curves and the closed form",
               *closed_form_section(eq, eq_error, palette, kinds, n_classes, out)]  # fmt: skip
        md += ["## Planning", *planning_section(eq, res.results_dir, level)]
        md += ["## Strategy comparison", *strategy_section(gains, palette, kinds, out, level, label)]
        md += strategy_diagnostics(in_arm_order(done, arms), level)
        md += head_to_head_section(done, arms, level, label)
        md += ["## Synthetic samples", *samples_section(res, done, palette, n_classes, out)]
        md += ["## Generator diagnostics vs downstream gain", *diagnostics_section(per_seed, palette, out, level)]
        md += ["## Why did synthetic data help or not?",
               *sample_set_diagnostics.section(done, getattr(eq, "per_cell", None), getattr(eq, "fit", None),
                                               palette, out, level, getattr(eq, "fit_by_base", None))]  # fmt: skip
    if verification.is_verification(done):
        roc = res.results_dir / ROC_CURVES
        md += ["## Verification on unseen identities",
               *verification.verification_section(done, pd.read_csv(roc) if roc.exists() else None, palette, out,
                                                  level)]  # fmt: skip
    if metric in METRICS:  # test_acc, or a column of the table itself (test_auc): every column as measured
        as_measured = raw[raw["status"] == "done"]
        cells = summary if metric == "test_acc" else in_arm_order(summarise(as_measured, level), arms, *CELL_KEYS[2:])
        md += ["## Per-cell results", *per_cell_table(cells, level)]
    else:
        md += ["## Per-cell results", *per_cell_table(summary, level, label)]
    md += ["## Failed cells", *failed_cells(res.cells)]
    md += ["## Provenance", *provenance_section(res)]
    md += ["## Methods", *methods(eq, level, n_boot, bool(synthetic))]
    return _write(out, md)


def _write(out: Path, md: list[str]) -> Path:
    path = out / "report.md"
    atomic_write_text(path, "\n\n".join(md).rstrip() + "\n")
    return path


def on_grid_metric(res: Results) -> tuple[Results, str]:
    """The results with test_acc / n_test holding the grid's analysed metric as a proportion over its effective
    binomial trials (study.analysis.metric; test accuracy itself for classification grids), and the metric."""
    metric = grid_metric((res.plan or {}).get("grid"), res.cells)
    try:
        return dataclasses.replace(res, cells=on_metric(res.cells, metric)), metric
    except MetricError as exc:
        raise ReportError(f"{res.results_dir / 'cells.csv'}: {exc}") from None


def analyse_results(res: Results, done: pd.DataFrame, n_boot: int, level: float, seed: int):
    """The equivalence analysis and its tables beside cells.csv; a reduced grid (one base size, no real
    curve, real arms only) gives the reason instead, and the report goes on without it."""
    if done.empty:
        return None, "no cell is done"
    # Numerical warnings (perfect separation on tiny grids, ...) are summarised under Methods, not printed.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            eq = equivalence.analyse(res.cells, n_boot=n_boot, level=level, seed=seed, published=res.published)
        except equivalence.EquivalenceError as exc:
            return None, str(exc)
    kinds = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
    if kinds:
        eq.notes.append(f"the fits raised {len(caught)} numerical warnings ({'; '.join(kinds[:3])}"
                        f"{'; …' if len(kinds) > 3 else ''}); treat estimates from very small grids with care")  # fmt: skip
    equivalence.write_tables(eq, res.results_dir)
    return eq, None


# --- command line ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m study.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("target", help="grid file (YAML) or results directory (results/<name>/ with cells.csv)")
    p.add_argument("--out", help="output directory (default reports/<name>/)")
    p.add_argument("--results", default="results", help="results root for a grid file (default results/)")
    p.add_argument("--smoke", action="store_true", help="with a grid file: apply its `smoke:` block (for the name)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (0: delta-method intervals only)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    if not 0 < args.level < 1:
        p.error(f"--level: expected a number between 0 and 1, got {args.level}")
    if args.n_boot < 0:
        p.error(f"--n-boot: expected a count >= 0, got {args.n_boot}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        res = locate(args.target, args.results, args.smoke)
        path = write_report(res, args.out or Path("reports") / res.name, args.n_boot, args.level, args.seed)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
