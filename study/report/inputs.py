"""What the report reads: a grid file or a results directory -> `Results` (cells.csv, plan.json beside it, the
artifact store, whether it was a --smoke run, the published setting the grid names). Never imports torch.

    res = locate("grids/quickstart.yaml")                 # results/quickstart/
    res = locate("results/quickstart")                    # a results directory
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from study.analysis.published import grid_setting
from study.grid import GridError, deep_merge, load_grid
from study.store import read_json
from study.table import TableError
from study.table import read_cells as read_table


class ReportError(ValueError):
    """Bad input to the report: names the file or directory and what was expected."""


@dataclass(frozen=True)
class Results:
    name: str
    results_dir: Path
    cells: pd.DataFrame  # every row of cells.csv (done and failed)
    plan: dict | None  # plan.json, None when absent
    store: Path | None  # the artifact store, None when not found
    smoke: bool  # the run was a --smoke run (its grid already carries its smoke overrides)
    published: str | None = None  # the grid's analysis.published (study.analysis.published), None when not named


def locate(target: str | Path, results_root: str | Path = "results", smoke: bool = False) -> Results:
    """A grid file (results in `results_root/<name>/`) or a results directory -> the loaded inputs. The published
    setting comes from the grid file when one is given (its current `analysis:` block), else from plan.json."""
    target = Path(target)
    grid = None
    if target.is_dir():
        results_dir, name = target, None
    elif target.suffix in (".yaml", ".yml") or target.is_file():
        try:
            grid = load_grid(target, smoke=smoke)
        except GridError as exc:
            raise ReportError(str(exc)) from None
        results_dir, name = Path(results_root) / grid.name, grid.name
    else:
        raise ReportError(f"{target}: not found; expected a grid file (.yaml) or a results directory with cells.csv")
    csv = results_dir / "cells.csv"
    if not csv.exists():
        hint = f"python -m study.run {target}" if name else "python -m study.run GRID.yaml"
        raise ReportError(f"{csv}: no results table (expected cells.csv; run `{hint}` first)")
    cells = read_cells(csv)
    plan = read_json(results_dir / "plan.json", ReportError)
    name = name or (plan or {}).get("name") or results_dir.name
    published = grid.analysis.published if grid is not None else grid_setting((plan or {}).get("grid"))
    return Results(name, results_dir, cells, plan, _find_store(results_dir, plan), _is_smoke(plan), published)


def read_cells(csv: Path) -> pd.DataFrame:
    """cells.csv in today's columns (study.table), errors as text and unused sizes as 0."""
    try:
        df = read_table(csv)
    except TableError as exc:
        raise ReportError(str(exc)) from None
    df["error"] = df["error"].fillna("").astype(str)
    for col in ("extra_per_class", "volume_per_class"):
        df[col] = df[col].fillna(0).astype(int)
    return df


def n_classes_of(cells: pd.DataFrame) -> int:
    """From the n_classes column, else n_base / base_per_class (tables written before the column existed)."""
    for ratio in (cells.get("n_classes"), cells.get("n_base", pd.Series(dtype=float)) / cells["base_per_class"]):
        if ratio is not None and ratio.notna().any():
            return int(round(ratio.dropna().iloc[0]))
    raise ReportError("cells.csv: neither n_classes nor n_base is filled in any row; cannot tell the class count")


def _find_store(results_dir: Path, plan: dict | None) -> Path | None:
    """plan.json's store path, else `store/` beside the results directory (a results root moved whole)."""
    for candidate in ((plan or {}).get("store"), results_dir.parent / "store"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def _is_smoke(plan: dict | None) -> bool:
    """A smoke run's grid already carries its smoke overrides, so merging them again changes nothing."""
    grid = (plan or {}).get("grid") or {}
    if not grid.get("smoke"):
        return False
    try:
        return deep_merge(grid, grid["smoke"]) == grid
    except GridError:
        return False
