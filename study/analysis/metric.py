"""The equivalence analysis on any metric column: the cells table seen through one metric and its noise model.

    view = on_metric(cells, "verif_acc")     # test_acc := the metric as a proportion, n_test := its trials
    eq = equivalence.analyse(view)            # beta, k, the joint model: unchanged in meaning

The analysis models a cell's result as y correct out of n Bernoulli trials (study.analysis.equivalence). A metric
column M of the table (study.grid.ANALYSIS_METRICS) enters it as the proportion p = M (1 - M where lower is
better: EER) with n = the column holding its effective number of binomial trials, rounded to a whole number
(at least 1): the test images for `test_acc`; the pairs for LFW pair accuracy, each pair one trial; for
verification AUC, TAR@FAR and 1 - EER, n = p (1 - p) / Var(M) with Var from a bootstrap over the verification
pairs (study.verification), the binomial sample size with the same variance at that proportion; for the test
AUC (`test_auc`, MedMNIST's second metric: threshold-free, so less tied to the test set's class prior than
accuracy) the same n with Hanley & McNeil's (1982) Var (`test_auc_n`, study.metrics.auc_trials). The
seed-to-seed scatter comes on top as the analysis's dispersion phi, as for accuracy. Never imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.grid import ANALYSIS_METRICS, FACE_DATASETS
from study.store import KEY_CHARS


class MetricError(ValueError):
    """The table lacks the metric or its noise column: names them and what was expected."""


def default_metric(dataset: str) -> str:
    """The metric a grid analyses when `analysis.metric` is not given (study.grid.Grid.metric)."""
    return "verif_acc" if dataset in FACE_DATASETS else "test_acc"


def grid_metric(grid: dict | None, cells: pd.DataFrame) -> str:
    """The metric named by a plan.json grid (`analysis.metric`), else the default for its dataset (from the grid,
    else from the table: a table with verification columns is a face grid's)."""
    grid = grid or {}
    chosen = (grid.get("analysis") or {}).get("metric")
    if chosen:
        return chosen
    name = (grid.get("dataset") or {}).get("name")
    if name is None:
        face = "verif_acc" in cells and cells["verif_acc"].notna().any()
        return "verif_acc" if face else "test_acc"
    return default_metric(name)


def on_metric(cells: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """A copy of the table whose `test_acc` and `n_test` are `metric` as a proportion and its effective binomial
    trials (module docstring); `metric` and `metric_trials` record which. Done rows must have both."""
    if metric not in ANALYSIS_METRICS:
        raise MetricError(f"analysis.metric: unknown metric {metric!r}; expected one of {list(ANALYSIS_METRICS)}")
    spec = ANALYSIS_METRICS[metric]
    missing = [c for c in (metric, spec.trials) if c not in cells]
    if missing:
        raise MetricError(f"cells.csv has no column {missing} (needed to analyse {metric}: {spec.label})")
    out = cells.copy()
    if metric == "test_acc":
        return out.assign(metric=metric)
    value = pd.to_numeric(out[metric], errors="coerce")
    trials = pd.to_numeric(out[spec.trials], errors="coerce")
    done = out["status"] == "done"
    lacking = done & (value.isna() | trials.isna())
    if lacking.any():
        raise MetricError(_lacking_message(out, lacking, metric, value, trials))
    out["test_acc"] = value if spec.higher_is_better else 1.0 - value
    out["n_test"] = np.maximum(1.0, trials.round())
    return out.assign(metric=metric)


def _lacking_message(cells: pd.DataFrame, lacking: pd.Series, metric: str, value: pd.Series, trials: pd.Series) -> str:
    """Why done cells have no value or no trials for `metric`, by cause, and what to do about each."""
    trials_name = ANALYSIS_METRICS[metric].trials
    head = f"{int(lacking.sum())} done cells have no {metric} or {trials_name}"
    if metric != "test_auc":  # a verification metric: TAR below the FAR resolution
        names = ", ".join(cells.loc[lacking, "cell"].astype(str).head(5))
        return f"{head} (e.g. {names}); a FAR below the protocol's resolution is not measurable: choose another analysis.metric"

    def some(mask: pd.Series) -> str:
        return f"{int(mask.sum())} (e.g. {', '.join(cells.loc[mask, 'cell'].astype(str).head(3))})"

    no_auc = lacking & value.isna()
    extreme = lacking & value.isin([0.0, 1.0])
    before = lacking & ~no_auc & ~extreme  # an AUC inside (0, 1) always has trials (study.metrics.auc_trials)
    parts = [head]
    if no_auc.any():
        parts.append(f"{some(no_auc)} have no test_auc (one class alone in the test split)")
    if extreme.any():
        parts.append(f"{some(extreme)} have test_auc 0 or 1, whose Hanley-McNeil variance is 0: no trials")
    if before.any():
        key = str(cells.loc[before, "cell_key"].iloc[0]) if "cell_key" in cells else ""
        example = f" (e.g. *__{key[:KEY_CHARS]})" if len(key) >= KEY_CHARS else ""
        parts.append(
            f"{some(before)} were computed before the column {trials_name} existed (their cached classifier "
            f"artifacts' metrics.json lack it): delete those artifacts, RESULTS/store/classifier/*__<the first "
            f"{KEY_CHARS} characters of their cell_key>{example}, and run the grid again to rerun only their "
            "classifiers (--force would recompute every artifact of the grid, generators included)"
        )
    return "; ".join(parts)


def metric_label(metric: str) -> str:
    """How reports name the analysed proportion: `1 - EER` for EER, else the metric's label."""
    spec = ANALYSIS_METRICS[metric]
    return spec.label if spec.higher_is_better else f"1 − {spec.label}"
