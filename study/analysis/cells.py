"""The cells table as the equivalence analysis reads it: validation, the normalised copy, pooling, and the view of
one (dataset, classifier) group. Never imports torch; costs milliseconds.

    t, notes = check_cells(cells)          # raises EquivalenceError naming the column, the cells, what was expected
    g = Group("digits", "study_cnn", t, level=0.9)
    g.real_measurements, g.synthetic       # done real cells (one row per measurement), done synthetic cells
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from study.table import REQUIRED, upgrade

if TYPE_CHECKING:
    from study.analysis.curve import Curve

REQUIRED_COLUMNS = tuple(REQUIRED)  # study.table's columns the analysis needs
REAL_KINDS = ("real-only", "real-extra")
SYNTHETIC_KINDS = ("closed", "open")
CURVE_KEYS = ["dataset", "classifier"]
ARM_KEYS = ["arm", "arm_kind", "strategy", "mix"]  # what an arm is: its name, generator kind, sampling and mixing
GROUP_KEYS = CURVE_KEYS + ARM_KEYS + ["base_per_class", "volume_per_class"]


class EquivalenceError(ValueError):
    """A cells table that cannot be analysed: the message names the column, the cells and what was expected."""


def _cells_named(t: pd.DataFrame, mask) -> str:
    names = t.loc[mask, "cell"].astype(str).tolist()
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_cells(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Validate a cells table and return a normalised copy (with `correct`, `n_real`, `n_classes` = n_base /
    base_per_class) and notes.

    Raises EquivalenceError naming the missing columns, or the column, the cells and what was expected."""
    if not isinstance(cells, pd.DataFrame):
        raise EquivalenceError(f"expected a pandas DataFrame of cells, got {type(cells).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in cells.columns]
    if missing:
        raise EquivalenceError(f"cells table: missing column(s) {missing}; the table needs {list(REQUIRED_COLUMNS)}")
    if cells.empty:
        raise EquivalenceError("cells table: no rows (no cell has finished or failed yet)")
    t = upgrade(cells).reset_index(drop=True)  # older tables: today's column names (a copy)
    notes = []
    real_row = t["arm_kind"].isin(REAL_KINDS)
    if t["mix"].isna().all():  # tables written before the column existed
        t["mix"] = np.where(real_row, "none", "uniform")
        notes.append("no `mix` column: every synthetic arm is taken as uniform mixing")
    for col in ("cell", "dataset", "classifier", "arm", "arm_kind", "status", "strategy", "mix", "error"):
        t[col] = t[col].astype("string").fillna("").astype(str)  # an all-empty column reads as float
    for col, allowed in (("status", ("done", "failed")), ("arm_kind", REAL_KINDS + SYNTHETIC_KINDS)):
        bad = ~t[col].isin(allowed)
        if bad.any():
            raise EquivalenceError(
                f"cells table: column {col!r} has {sorted(set(t.loc[bad, col]))} (cells {_cells_named(t, bad)}); "
                f"expected one of {list(allowed)}"
            )
    dup = t["cell"].duplicated(keep=False)
    if dup.any():
        raise EquivalenceError(f"cells table: cell names repeat ({_cells_named(t, dup)}); expected one row per cell")

    numeric = ("base_per_class", "n_base", "extra_per_class", "n_extra", "volume_per_class", "n_syn")
    for col in (*numeric, "test_acc", "n_test"):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype(float)
    # Sizes an arm does not use may be blank; they are zero.
    for cols, uses in (
        (("extra_per_class", "n_extra"), ["real-extra"]),
        (("volume_per_class", "n_syn"), SYNTHETIC_KINDS),
    ):
        for col in cols:
            t.loc[~t["arm_kind"].isin(uses), col] = t.loc[~t["arm_kind"].isin(uses), col].fillna(0.0)

    done = t["status"] == "done"
    _check_done_rows(t, done)
    t["n_classes"] = t["n_base"] / t["base_per_class"]
    per_dataset = t[done].groupby("dataset")["n_classes"].nunique()
    if (per_dataset > 1).any():
        ds = per_dataset[per_dataset > 1].index[0]
        raise EquivalenceError(
            f"cells table: n_base / base_per_class differs between done cells of dataset {ds!r}; "
            "expected one class count per dataset"
        )
    # Failed cells may lack sizes (the class count was unknown); take the dataset's class count.
    t["n_classes"] = t["dataset"].map(t[done].groupby("dataset")["n_classes"].first())
    for total, per_class in (
        ("n_base", "base_per_class"),
        ("n_extra", "extra_per_class"),
        ("n_syn", "volume_per_class"),
    ):
        t[total] = t[total].fillna(t[per_class] * t["n_classes"])
    t["n_real"] = t["n_base"] + t["n_extra"]
    t["correct"] = np.round(t["test_acc"] * t["n_test"])
    return t, notes


def _check_done_rows(t: pd.DataFrame, done: pd.Series) -> None:
    def need(mask, column: str, expected: str) -> None:
        mask = done & mask
        if mask.any():
            raise EquivalenceError(
                f"cells table: column {column!r} must be {expected} in done cells (bad: {_cells_named(t, mask)})"
            )

    need(t["seed"].isna(), "seed", "given")
    for col in ("base_per_class", "n_base", "extra_per_class", "n_extra", "volume_per_class", "n_syn"):
        need(t[col].isna(), col, "a number")
    need(~t["test_acc"].between(0.0, 1.0), "test_acc", "an accuracy in [0, 1]")
    need(~(t["n_test"] > 0) | (t["n_test"] % 1 != 0), "n_test", "a positive whole number")
    need(~(t["base_per_class"] > 0) | ~(t["n_base"] > 0), "base_per_class", "positive (with n_base > 0)")
    need((t["n_base"] % t["base_per_class"]) != 0, "n_base", "a whole multiple of base_per_class (the class count)")
    n_classes = t["n_base"] / t["base_per_class"]
    need(t["arm_kind"].isin(SYNTHETIC_KINDS) & ~(t["n_syn"] > 0), "n_syn", "positive for synthetic arms")
    need((t["arm_kind"] == "real-extra") & ~(t["n_extra"] > 0), "n_extra", "positive for real-extra cells")
    need(
        t["n_syn"] != t["volume_per_class"] * n_classes, "n_syn", "volume_per_class x classes (n_base / base_per_class)"
    )
    need(
        t["n_extra"] != t["extra_per_class"] * n_classes,
        "n_extra",
        "extra_per_class x classes (n_base / base_per_class)",
    )


# --- pooling and groups ------------------------------------------------------------------------------


def pool(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Pooled correct counts and test images per group, with the group's sizes and number of seeds."""
    g = cells.groupby(keys, dropna=False, sort=True)
    out = g[["correct", "n_test", "n_base", "n_extra", "n_syn"]].agg(
        {"correct": "sum", "n_test": "sum", "n_base": "first", "n_extra": "first", "n_syn": "first"}
    )
    return out.assign(n_seeds=g["seed"].nunique()).reset_index()


def status_counts(cells: pd.DataFrame, keys: list[str], done: str = "n_done") -> pd.DataFrame:
    """Per group of `keys`: how many of its synthetic cells are done (column `done`) and how many failed."""
    syn = cells[cells["arm_kind"].isin(SYNTHETIC_KINDS)]
    return (
        syn.assign(**{done: syn["status"] == "done", "n_failed": syn["status"] == "failed"})
        .groupby(keys, dropna=False, sort=True)[[done, "n_failed"]]
        .sum()
        .reset_index()
    )


def arms_of(cells: pd.DataFrame) -> pd.DataFrame:
    """The synthetic arms of a table, one row each (CURVE_KEYS + ARM_KEYS)."""
    syn = cells[cells["arm_kind"].isin(SYNTHETIC_KINDS)]
    return syn[CURVE_KEYS + ARM_KEYS].drop_duplicates().sort_values(ARM_KEYS).reset_index(drop=True)


def arm_mask(cells: pd.DataFrame, arm: pd.Series) -> np.ndarray:
    """The synthetic cells of one arm (a row of `arms_of`)."""
    return (cells["arm_kind"].isin(SYNTHETIC_KINDS) & (cells[ARM_KEYS] == arm[ARM_KEYS]).all(axis=1)).to_numpy()


def generator_of(cells: pd.DataFrame) -> pd.Series:
    """The independent unit each synthetic cell's images came from: its sample set (`samples_key`: one per trained
    generator and seed, whose smaller volumes are prefixes; a pretrained model's per-seed sample sets are its
    independent draws), else its `generator_key`, else, for tables without keys, the runner's rule: one generator
    per arm, seed and base for a closed-set arm, per arm and seed for an open-set one (shared by every base)."""
    for col in ("samples_key", "generator_key"):
        if col in cells and cells[col].notna().all() and (cells[col].astype(str) != "").all():
            return cells[col].astype(str)
    closed = cells["arm_kind"] == "closed"
    rule = cells["arm"].astype(str) + "/s" + cells["seed"].astype(str)
    return rule.where(~closed, rule + "/b" + cells["base_per_class"].astype(str))


@dataclass(frozen=True, eq=False)
class Group:
    """One (dataset, classifier) of a checked table: its cells, its real learning curve (None with the reason in
    `curve_problem` where there is none) and views of its cells."""

    dataset: str
    classifier: str
    cells: pd.DataFrame  # all rows (done and failed)
    level: float
    curve: Curve | None = None
    curve_problem: str = ""

    @cached_property
    def done(self) -> pd.DataFrame:
        return self.cells[self.cells["status"] == "done"]

    @cached_property
    def real(self) -> pd.DataFrame:
        return self.done[self.done["arm_kind"].isin(REAL_KINDS)]

    @cached_property
    def real_measurements(self) -> pd.DataFrame:
        """The real cells with one row per distinct measurement. Subsets are nested, so base b + e extra and
        base b + e alone train on the same images: the runner shares one classifier between them (same
        `cell_key`) and its row appears twice. Fits count it once; otherwise n and the dispersion shrink."""
        return self.real.drop_duplicates(self.measurement_key)

    @property
    def measurement_key(self) -> list[str]:
        has_key = "cell_key" in self.real.columns and self.real["cell_key"].notna().all()
        return ["cell_key"] if has_key else ["seed", "n_real"]

    @cached_property
    def synthetic(self) -> pd.DataFrame:
        return self.done[self.done["arm_kind"].isin(SYNTHETIC_KINDS)]

    @property
    def chance(self) -> float:
        """Chance accuracy 1 / classes: the floor of the bounded learning curve (0 when the class count is unknown)."""
        k = self.cells["n_classes"].dropna()
        return 1.0 / float(k.iloc[0]) if len(k) and k.iloc[0] > 0 else 0.0

    @property
    def z(self) -> float:
        return float(stats.norm.ppf(0.5 + self.level / 2))

    @property
    def where(self) -> str:
        return f"{self.dataset}/{self.classifier}"

    @property
    def usable_curve(self) -> bool:
        """A real learning curve that rises with n: effective sizes are defined."""
        return self.curve is not None and self.curve.increasing
