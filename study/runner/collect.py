"""Finished cells -> one tidy table (`results/<name>/cells.csv` and `.parquet`), read from the store.

The table is a pure function of the plan and the store's contents, so it is the same whoever computed the
cells (any worker, shard or earlier interrupted run), and rewriting it is always safe. A cell is `done`
when its classifier artifact is; `failed` when the artifact (or one it depends on) recorded an error;
cells not yet attempted are left out, and `plan.json` beside the table says how many the grid has. The
columns, their dtypes and meanings are study.table's. Never imports torch.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from filelock import FileLock

from study.grid import Cell, Grid, dataset_label, mix_label
from study.runner.plan import Plan
from study.store import (
    DIAGNOSTICS,
    DONE,
    ERROR,
    METRICS,
    ROC_CURVES,
    SAMPLES_META,
    TRAIN_STATS,
    Store,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
)
from study.table import COLUMNS, DIAGNOSTIC_COLUMNS, TEST_METRIC_COLUMNS, VERIFICATION_COLUMNS, conform

_SAMPLE_DIAGNOSTICS = ("n_pairs", "pair_distance", "source_mass", "cka")  # samples.json diagnostics -> columns


def _first_error(store: Store, plan: Plan, key: str) -> str | None:
    """The error recorded for this artifact or, first, for the nearest failed artifact it depends on."""
    node = plan.nodes[key]
    for parent in node.parents:
        err = _first_error(store, plan, parent)
        if err:
            return err
    d = store.path(node.art)
    if (d / DONE).exists():
        return None
    text = (d / ERROR).read_text() if (d / ERROR).exists() else None
    if not text:
        return None
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return f"{node.stage} {node.art.slug}: {last[:400]} (traceback: {d / ERROR})"


def arm_fields(grid: Grid, cell: Cell) -> dict:
    if cell.arm_kind in ("real-only", "real-extra"):
        return {"strategy": "none", "mix": "none", "labels": "none"}
    gen = grid.generators[cell.arm]
    strategy = gen.sample.strategy
    if gen.sample.mixing:
        strategy += f"-{gen.sample.pair_rule}"
    labels = gen.sample.label_policy if gen.sample.mixing else "class"
    return {"strategy": strategy, "mix": mix_label(gen.mix or grid.classifier.mix), "labels": labels}


def cell_row(plan: Plan, store: Store, cell: Cell, n_classes: int | None) -> dict | None:
    grid = plan.grid
    node = plan.nodes[plan.cell_node[cell]]
    d = store.path(node.art)
    damaged = store.verify(d, (METRICS,)) if (d / DONE).exists() else None
    metrics = read_json(d / METRICS) if (d / DONE).exists() and damaged is None else None
    if damaged:  # a finished cell whose metrics no longer match their checksum: reported, never read
        error = f"{damaged}; run again to rebuild it"
    else:
        error = None if metrics else _first_error(store, plan, node.key)
    if metrics is None and error is None:
        return None  # not attempted yet
    classes = (metrics or {}).get("num_classes", n_classes)
    row = {
        "cell": cell.label,
        "dataset": dataset_label(grid.dataset),
        "seed": cell.seed,
        "base_per_class": cell.base_per_class,
        "arm": cell.arm,
        "arm_kind": cell.arm_kind,
        "extra_per_class": cell.extra_per_class,
        "volume_per_class": cell.volume_per_class,
        "classifier": grid.classifier.arch,
        "n_classes": classes,
        "n_base": cell.base_per_class * classes if classes else None,
        "n_extra": cell.extra_per_class * classes if classes else None,
        "n_syn": cell.volume_per_class * classes if classes else None,
        "status": "done" if metrics else "failed",
        "error": error or "",
        "cell_key": node.key,
        **arm_fields(grid, cell),
    }
    if metrics:
        # A metric added since the artifact was built (test_auc_n) is absent from its metrics.json: left empty.
        row |= {m: metrics.get(m) for m in TEST_METRIC_COLUMNS}
        if "verif_auc" in metrics:
            row |= {m: metrics.get(m) for m in VERIFICATION_COLUMNS} | {"n_verif_pairs": metrics.get("n_pairs")}
        row["seconds"] = store.done_info(node.art)["seconds"]
    if "samples" in node.art.config:
        row |= _synthetic_fields(plan, store, node.art.config["samples"])
    if cell in plan.cell_diagnostics:
        row |= _diagnostic_fields(plan, store, plan.cell_diagnostics[cell])
    return row


def _diagnostic_fields(plan: Plan, store: Store, key: str) -> dict:
    """The sample set's diagnostics at this cell's base; a failed diagnostics stage leaves its error (the cell
    itself stays done: no cell depends on its diagnostics)."""
    node = plan.nodes[key]
    d = store.path(node.art)
    values = read_json(d / DIAGNOSTICS) if (d / DONE).exists() else None
    error = "" if values is not None else (_first_error(store, plan, key) or "")
    return {"diagnostics_key": key, "diagnostics_error": error,
            **{name: (values or {}).get(name) for name in DIAGNOSTIC_COLUMNS}}  # fmt: skip


def _synthetic_fields(plan: Plan, store: Store, samples_key: str) -> dict:
    samples = plan.nodes[samples_key]
    gen = plan.nodes[samples.art.config["generator"]]
    meta = read_json(store.path(samples.art) / SAMPLES_META) or {}
    stats = read_json(store.path(gen.art) / TRAIN_STATS) or {}
    diagnostics = meta.get("diagnostics", {})
    weights = diagnostics.get("weights") or [None, None]
    return {
        "generator_key": gen.key,
        "samples_key": samples_key,
        "cond_acc": diagnostics.get("cond_acc"),
        "gen_train_images": stats.get("train_images"),  # what the generator saw (None: unknown, pretrained)
        "gen_train_data": stats.get("train_data"),
        "pair_weight_i": weights[0],
        "pair_weight_j": weights[1],
        **{name: diagnostics.get(name) for name in _SAMPLE_DIAGNOSTICS},
    }


def collect_roc(plan: Plan, store: Store, cells: pd.DataFrame) -> pd.DataFrame:
    """The stored ROC of every done face cell, long: cell, far, tar (NaN below the FAR resolution)."""
    frames = []
    for cell, key in zip(cells["cell"], cells["cell_key"], strict=True):
        metrics = read_json(store.path(plan.nodes[key].art) / METRICS) or {}
        if "roc" in metrics:
            frames.append(pd.DataFrame({"cell": cell, **metrics["roc"]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["cell", "far", "tar"])


def known_num_classes(plan: Plan, store: Store) -> int | None:
    """The class count from any finished classifier or reference (None when nothing is done yet)."""
    for node in plan.nodes.values():
        if node.stage in ("classifier", "reference"):
            metrics = read_json(store.path(node.art) / METRICS)
            if metrics and "num_classes" in metrics:
                return metrics["num_classes"]
    return None


def collect(plan: Plan, store: Store, n_classes: int | None = None) -> pd.DataFrame:
    n_classes = n_classes or known_num_classes(plan, store)
    rows = [r for c in plan.cells if (r := cell_row(plan, store, c, n_classes)) is not None]
    return conform(pd.DataFrame(rows, columns=COLUMNS))


def write_table(plan: Plan, store: Store, results_dir: Path, n_classes: int | None = None) -> pd.DataFrame:
    """Rewrite cells.csv, cells.parquet and plan.json atomically, under a lock shared by all runners."""
    results_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(results_dir / ".table.lock")):
        for stale in results_dir.glob(".*.tmp"):  # a writer killed mid-write (no live one: we hold the lock)
            stale.unlink(missing_ok=True)
        df = collect(plan, store, n_classes)
        atomic_write_bytes(results_dir / "cells.csv", df.to_csv(index=False).encode())
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(results_dir / "cells.parquet", buf.getvalue())
        done = df[df["status"] == "done"]
        if done["verif_auc"].notna().any():
            atomic_write_bytes(results_dir / ROC_CURVES, collect_roc(plan, store, done).to_csv(index=False).encode())
        atomic_write_json(results_dir / "plan.json", {
            "name": plan.grid.name,
            "cells": len(plan.cells),
            "done": int((df["status"] == "done").sum()),
            "failed": int((df["status"] == "failed").sum()),
            "store": str(store.root.resolve()),
            "grid": plan.grid.model_dump(mode="json"),
        })  # fmt: skip
    return df
