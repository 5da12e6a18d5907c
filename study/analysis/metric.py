"""The equivalence analysis on any metric column: the cells table seen through one metric and its noise model.

    view = on_metric(cells, "verif_acc")     # test_acc := the metric as a proportion, n_test := its trials
    eq = equivalence.analyse(view)            # beta, k, the joint model: unchanged in meaning

The analysis models a cell's result as y correct out of n Bernoulli trials (study.analysis.equivalence). A metric
column M of the table (study.grid.ANALYSIS_METRICS) enters it as the proportion p = M (1 - M where lower is
better: EER) with n = the column holding its effective number of binomial trials, rounded to a whole number
(at least 1): the test images for `test_acc`; the pairs for LFW pair accuracy, each pair one trial; for AUC,
TAR@FAR and 1 - EER, n = p (1 - p) / Var(M) with Var from a bootstrap over the verification pairs
(study.verification), the binomial sample size with the same variance at that proportion. The seed-to-seed
scatter comes on top as the analysis's dispersion phi, as for accuracy. Never imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.grid import ANALYSIS_METRICS, FACE_DATASETS


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
        names = ", ".join(out.loc[lacking, "cell"].astype(str).head(5))
        raise MetricError(
            f"{int(lacking.sum())} done cells have no {metric} or {spec.trials} (e.g. {names}); a FAR below the "
            "protocol's resolution is not measurable: choose another analysis.metric"
        )
    out["test_acc"] = value if spec.higher_is_better else 1.0 - value
    out["n_test"] = np.maximum(1.0, trials.round())
    return out.assign(metric=metric)


def metric_label(metric: str) -> str:
    """How reports name the analysed proportion: `1 - EER` for EER, else the metric's label."""
    spec = ANALYSIS_METRICS[metric]
    return spec.label if spec.higher_is_better else f"1 − {spec.label}"
