"""Chaos (issue 19): the tiny grid (without the two diagnostics that train classifiers, to stay within the suite's
budget) is SIGKILLed at a seeded schedule of points spread over generator training,
sampling, classifier training, sample-set diagnostics and table writing, and rerun after every kill. The final
cells.csv must equal an uninterrupted run's, and no artifact may be built again once it was done (counted from
each artifact's provenance: the process that built it, and its done marker, never change after it is first
seen done).

Kill points are observed from outside, through the store's own locks: an artifact is being built exactly while
its directory's `.lock` is held, and the table is being written while `results/<name>/.table.lock` is. The test
waits for the phase its schedule names, waits a seeded delay (so kills land at different depths of the work),
and kills only if that phase is still running. No wall-clock assertion: pytest-timeout ends a run that hangs.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from study.store import PROVENANCE, Store

REPO = Path(__file__).resolve().parent.parent
LIGHT = (Path(__file__).resolve().parent / "tiny.yaml").read_text() + "diagnostics: {domain: null, cas: false}\n"
SEED = 19
# Kills per phase, in the order the grid reaches the phases (jobs=1: one artifact at a time), and the longest
# seeded delay after a phase is seen running (a kill only counts if the phase is still running after it).
SCHEDULE = [("generator", 3, 1.5), ("samples", 2, 0.4), ("classifier", 3, 0.4), ("diagnostics", 2, 0.2),
            ("table", 2, 0.0)]  # fmt: skip


def held(lock: Path) -> bool:
    """True while another process holds `lock` (the store's FileLock is a flock on this file)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def running(results: Path, phase: str) -> bool:
    if phase == "table":
        return held(results / "tiny" / ".table.lock")
    return any(held(lock) for lock in (results / "store" / phase).glob("*/.lock"))


def start(grid: Path, results: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "study.run", str(grid), "--results", str(results), "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_in(proc: subprocess.Popen, results: Path, phase: str, delay: float) -> bool:
    """SIGKILL `proc` while `phase` runs, `delay` seconds after it is first seen running; False if the run ended
    first (the phase was already complete)."""
    while proc.poll() is None:
        if running(results, phase):
            time.sleep(delay)
            if running(results, phase) and proc.poll() is None:
                proc.kill()
                proc.wait()
                return True
        time.sleep(0.01)
    return False


def snapshot(store: Store) -> dict[Path, tuple]:
    """Every finished artifact: the pid that built it (provenance) and its done marker's contents."""
    out = {}
    for done in store.root.glob("*/*/done.json"):
        d = done.parent
        out[d] = (json.loads((d / PROVENANCE).read_text())["pid"], done.read_text())
    return out


def comparable(results: Path) -> pd.DataFrame:
    df = pd.read_csv(results / "tiny" / "cells.csv").sort_values("cell").reset_index(drop=True)
    return df.drop(columns=["seconds"])  # the only column that is a measurement of time


@pytest.mark.slow
def test_kill_anywhere_rerun_same_table_nothing_built_twice(tmp_path):
    grid = tmp_path / "light.yaml"
    grid.write_text(LIGHT)
    reference = tmp_path / "uninterrupted"
    uninterrupted = start(grid, reference)
    out = uninterrupted.communicate()[0]
    assert uninterrupted.returncode == 0, out
    results = tmp_path / "results"
    store = Store(results / "store")
    rng = random.Random(SEED)
    first_seen: dict[Path, tuple] = {}
    kills: list[tuple[str, float]] = []
    missed: list[str] = []
    pids = []

    def record() -> None:
        for d, state in snapshot(store).items():
            assert first_seen.setdefault(d, state) == state, f"{d} was built again after it was done"

    for phase, count, longest in SCHEDULE:
        for _ in range(count):
            delay = round(rng.uniform(0, longest), 3)
            proc = start(grid, results)
            pids.append(proc.pid)
            if kill_in(proc, results, phase, delay):
                kills.append((phase, delay))
            else:
                missed.append(phase)
                assert proc.returncode == 0, proc.communicate()[0]
            record()
    final = start(grid, results)
    out = final.communicate()[0]
    assert final.returncode == 0, out
    pids.append(final.pid)
    record()

    assert len(kills) >= 10 and {p for p, _ in kills} >= {"generator", "samples", "classifier", "table"}, (
        kills,
        missed,
    )
    pd.testing.assert_frame_equal(comparable(results), comparable(reference))
    reference_artifacts = {p.parent.relative_to(reference) for p in (reference / "store").glob("*/*/done.json")}
    assert {d.relative_to(results) for d in first_seen} == reference_artifacts
    # built once: each artifact's builder is one of the runs, and nothing it recorded changed afterwards (record)
    assert {pid for pid, _ in first_seen.values()} <= set(pids)
    assert all(store.verify(d) is None for d in first_seen)
    print(f"chaos: {len(kills)} kills {kills}; phases finished before their kill: {missed}")
