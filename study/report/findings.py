"""The findings page's table: one row per study and synthetic arm, built from each study's results directory by
the analysis its report runs (study.report.build: the grid's metric, the equivalence analysis with the same
bootstrap seed and level), so the page and the per-study reports agree. Never imports torch.

    python -m study.report.findings results/quickstart results/cifar10-16px --out reports/FINDINGS.md

Only the part of `--out` between the two marker lines (FINDINGS_START, FINDINGS_END) is rewritten: the prose
around it (the claims set against the papers, the search table) is written by hand and kept. A file without the
markers gets them appended. Columns per arm:
    β [interval]         real images gained per synthetic image, pooled over base sizes (joint model, random
                         effect per generator); per base first when the likelihood-ratio test rejects one β
    k                    1/β with its interval where β > 0 is measured; the bound k ≥ 1/β_hi otherwise
    c1, c2 (published)   the paper's closed form n_real = c1 · log(1 + n_syn / (c2 · n_real)) fitted here, the
                         paper's c2 where the grid names its setting (analysis.published); c2 "not identified"
                         where c1 is not (no gain to fit: the form has no meaning without both)
    verdict              gain / no measurable gain / hurts / not estimable
    diagnostics          means over the arm's sample sets: conditional accuracy (judge), near-copy share and
                         distance ratio against the base (memorisation), precision / recall (fidelity, diversity),
                         domain AUC (0.5 = indistinguishable from real)
Below it, the head to head of arms that sample the same generators (study.analysis.estimators.head_to_head),
pooled over base sizes.
Cost: the analysis of each study (seconds to a minute each, the bootstrap).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis.estimators import head_to_head
from study.analysis.metric import metric_label
from study.report.build import analyse_results, on_grid_metric
from study.report.estimates import k_text, per_base_betas, rejects_one_beta
from study.report.inputs import ReportError, Results, locate
from study.report.markdown import fmt, fmt_ci, in_arm_order, md_table
from study.report.sections import head_to_head_table
from study.store import atomic_write_text

FINDINGS_START = "<!-- findings table: written by `python -m study.report.findings`; edit outside the markers -->"
FINDINGS_END = "<!-- end of findings table -->"
DIAGNOSTICS = {"cond_acc": "cond. acc.", "mem_frac": "near-copy", "mem_ratio": "dist. ratio",
               "precision": "precision", "recall": "recall", "domain_auc": "domain AUC"}  # fmt: skip


def study_rows(res: Results, n_boot: int = 1000, level: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """One row per synthetic arm of one study (see the module docstring for the columns)."""
    res, metric = on_grid_metric(res)
    done = res.cells[res.cells["status"] == "done"].copy()
    eq, error = analyse_results(res, done, n_boot, level, seed)
    if eq is None:
        raise ReportError(f"{res.results_dir}: the equivalence analysis could not run: {error}")
    if eq.fit.empty:
        raise ReportError(f"{res.results_dir}: no synthetic arm with done cells: nothing for the findings table")
    n_cells = res.cells.groupby("arm")["status"].agg(total="size", failed=lambda s: int((s != "done").sum()))
    rows = []
    for r in in_arm_order(eq.fit, list(dict.fromkeys(res.cells["arm"]))).itertuples():
        row = {"study": f"{res.name} ({metric_label(metric)})", "arm": r.arm,
               "cells (failed)": f"{n_cells.loc[r.arm, 'total']} ({n_cells.loc[r.arm, 'failed']})",
               "β": _beta(r, eq.fit_by_base), "k": k_text(r), "c1": fmt(r.c1, 3, sig=True),
               "c2 [published]": _c2(r), "verdict": r.verdict}  # fmt: skip
        rows.append(row | diagnostic_means(done[done["arm"] == r.arm]))
    return pd.DataFrame(rows)


def diagnostic_means(cells: pd.DataFrame) -> dict[str, str]:
    """Means of the sample-set diagnostics over the distinct sample sets of `cells` (conditional accuracy over
    the cells, which carry their sample set's), formatted; — where none was measured."""
    with_sets = cells[cells.get("diagnostics_key", pd.Series(dtype=str, index=cells.index)).notna()]
    sets = with_sets.drop_duplicates("diagnostics_key") if "diagnostics_key" in with_sets else with_sets
    out = {}
    for col, label in DIAGNOSTICS.items():
        source = cells if col == "cond_acc" else sets
        values = pd.to_numeric(source.get(col, pd.Series(dtype=float)), errors="coerce").dropna()
        out[label] = fmt(values.mean(), 2) if len(values) else "—"
    return out


def _beta(r, by_base: pd.DataFrame) -> str:
    pooled = fmt_ci(r.beta, r.beta_lo, r.beta_hi, sig=True)
    p = getattr(r, "heterogeneity_base_p", np.nan)
    if not rejects_one_beta(p) or by_base.empty:
        return pooled
    return f"per base (p = {fmt(p, 2, sig=True)}): {per_base_betas(by_base, r.arm)}; pooled {pooled}"


def _c2(r) -> str:
    if not np.isfinite(r.c1):  # c2 alone means nothing: the form needs both (e.g. no gain to fit, beta <= 0)
        ours = "not identified"
    else:
        ours = fmt_ci(r.c2, r.c2_lo, r.c2_hi, sig=True) if np.isfinite(r.c2) and r.c2 < 1e5 else "unbounded"
    published = getattr(r, "c2_published", np.nan)
    return ours + (f" [{fmt(published, 3, sig=True)}]" if pd.notna(published) else "")


def head_to_head_rows(res: Results, level: float = 0.9) -> pd.DataFrame:
    """The report's head to head (study.analysis.estimators.head_to_head) pooled over base sizes: one row per pair
    of arms that sample the same generators, on the study's metric; empty where no two arms share one."""
    res, metric = on_grid_metric(res)
    done = res.cells[res.cells["status"] == "done"]
    pairs = head_to_head(done, list(dict.fromkeys(res.cells["arm"])), level)
    table = head_to_head_table(pairs[pairs["base_per_class"] == "all"]).drop(columns="base/class")
    return table.assign(study=f"{res.name} ({metric_label(metric)})")[["study", *table.columns]]


def table_markdown(targets: list[str | Path], n_boot: int = 1000, level: float = 0.9) -> str:
    studies = [locate(t) for t in targets]
    rows = pd.concat([study_rows(res, n_boot, level) for res in studies], ignore_index=True)
    text = (f"{level:.0%} intervals; built from {', '.join(f'`{t}`' for t in targets)} "
            "(the same analysis as each study's report).\n\n" + md_table(rows))  # fmt: skip
    pairs = pd.concat([head_to_head_rows(res, level) for res in studies], ignore_index=True)
    if len(pairs):
        text += ("\n\nHead to head: arms that sample the same trained generators, cell by cell at the same "
                 "generator, seed, base and volume (the metric of a minus that of b), pooled over base sizes: one "
                 f"value per generator, {level:.0%} t interval over generators (per base: each study's report).\n\n"
                 + md_table(pairs))  # fmt: skip
    return text


def replace_between_markers(text: str, table: str, start: str = FINDINGS_START, end: str = FINDINGS_END) -> str:
    """`text` with the part between the markers replaced by `table` (the markers appended when absent)."""
    block = f"{start}\n\n{table}\n\n{end}"
    if start not in text:
        return text.rstrip() + ("\n\n" if text.strip() else "") + block + "\n"
    head, rest = text.split(start, 1)
    if end not in rest:
        raise ReportError(f"the findings page has {start!r} but not {end!r}: fix the markers")
    return head + block + rest.split(end, 1)[1]


def page_parser(prog: str, doc: str, targets_help: str) -> argparse.ArgumentParser:
    """The options the findings page's table writers share (this module's and study.report.search's)."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", help=targets_help)
    p.add_argument("--out", default="reports/FINDINGS.md", help="the findings page (default reports/FINDINGS.md)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates, as the reports (default 1000)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    return p


def rewrite_page(out: str | Path, table_of: Callable[[], str], start: str, end: str, what: str) -> int:
    """Write `table_of()` between the markers `start` and `end` of the page `out`; exit code 0, or 2 on bad input
    (the message on stderr names what was wrong)."""
    out = Path(out)
    try:
        table = table_of()
        atomic_write_text(out, replace_between_markers(out.read_text() if out.exists() else "", table, start, end))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{what}: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = page_parser("python -m study.report.findings", __doc__,
                       "results directories (or grid files) of the studies, in row order").parse_args(argv)  # fmt: skip
    return rewrite_page(args.out, lambda: table_markdown(args.targets, args.n_boot, args.level), FINDINGS_START,
                        FINDINGS_END, "findings table")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
