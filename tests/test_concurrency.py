"""Concurrency (issue 19): two different grids sharing one results/store directory, run at the same time, and the
two `--shard` halves of one grid, run at the same time. All finish, every artifact is built once (the builders'
"built" counts add up to the artifacts in the store, and each artifact's provenance names one of the runs), and
the numbers are those of the uninterrupted single run. The grids are the tiny grid without the two diagnostics
that train classifiers (domain, CAS), to stay within the suite's budget."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from study.store import PROVENANCE, Store

REPO = Path(__file__).resolve().parent.parent
TINY = (Path(__file__).resolve().parent / "tiny.yaml").read_text()
LIGHT = TINY + "diagnostics: {domain: null, cas: false}\n"
# Another study on the same data: shares the judge, both generators and the 10-per-class sample sets with LIGHT.
OTHER = LIGHT.replace("name: tiny", "name: other").replace("volume: [5, 10]", "volume: [10]")
OTHER = OTHER.replace("extra: [5]", "extra: [10]")
RESULT_COLUMNS = ["cell", "cell_key", "status", "test_acc", "test_nll", "n_test"]


def start(grid: Path, results: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "study.run", str(grid), "--results", str(results), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(procs: list[subprocess.Popen]) -> list[str]:
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs
    return outputs


def built(outputs: list[str]) -> int:
    return sum(int(m.group(1)) for out in outputs for m in re.finditer(r"^\s+\w+\s+built\s+(\d+)", out, re.M))


def table(results: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(results / name / "cells.csv").sort_values("cell").reset_index(drop=True)


def assert_built_once(results: Path, procs: list[subprocess.Popen], outputs: list[str]) -> None:
    store = Store(results / "store")
    dirs = [p.parent for p in store.root.glob("*/*/done.json")]
    assert built(outputs) == len(dirs)  # no artifact was built by both
    assert {json.loads((d / PROVENANCE).read_text())["pid"] for d in dirs} <= {p.pid for p in procs}
    assert all(store.verify(d) is None for d in dirs)


def test_two_different_grids_share_one_store_at_the_same_time(tiny_run, tmp_path):
    _, reference = tiny_run
    results = tmp_path / "results"
    (tmp_path / "light.yaml").write_text(LIGHT)
    (tmp_path / "other.yaml").write_text(OTHER)
    procs = [start(tmp_path / "light.yaml", results), start(tmp_path / "other.yaml", results)]
    outputs = finish(procs)
    assert_built_once(results, procs, outputs)
    light, other, ref = table(results, "tiny"), table(results, "other"), table(reference, "tiny")
    assert len(light) == 8 and len(other) == 6 and set(light["status"]) == set(other["status"]) == {"done"}
    pd.testing.assert_frame_equal(light[RESULT_COLUMNS], ref[RESULT_COLUMNS])
    shared = other.merge(ref, on="cell_key", suffixes=("", "_ref"))  # cells both studies have: the same numbers
    assert len(shared) >= 4 and (shared["test_acc"] == shared["test_acc_ref"]).all()


def test_two_shard_halves_at_the_same_time(tiny_run, tmp_path):
    _, reference = tiny_run
    results = tmp_path / "results"
    grid = tmp_path / "light.yaml"
    grid.write_text(LIGHT)
    procs = [start(grid, results, "--shard", "0/2"), start(grid, results, "--shard", "1/2")]
    outputs = finish(procs)
    assert_built_once(results, procs, outputs)
    pd.testing.assert_frame_equal(table(results, "tiny")[RESULT_COLUMNS], table(reference, "tiny")[RESULT_COLUMNS])
