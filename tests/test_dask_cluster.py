"""A real Dask cluster on loopback (issue 19): `dask scheduler` and two `dask worker` processes started from
their command lines, as a cluster's job scripts start them, and `study.run --backend dask --address`. The
cells equal a local-process (loky) run of the same grid with the same thread layout (one torch thread per
worker); one worker is SIGKILLed while it builds an artifact and the grid still finishes with nothing lost
(Dask reschedules the task, or, if the run gives up on it, the same command completes the grid)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed", reason="the dask extra is not installed")

REPO = Path(__file__).resolve().parent.parent
TINY = (Path(__file__).resolve().parent / "tiny.yaml").read_text()
LIGHT = TINY + "diagnostics: {domain: null, cas: false}\n"  # the tiny grid without its two slowest diagnostics
RESULT_COLUMNS = ["cell", "status", "test_acc", "test_nll", "n_test"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
DASK = str(Path(sys.executable).with_name("dask"))


def spawn(*args: str, log: Path) -> subprocess.Popen:
    """A process in its own session (its group can be killed with everything it started)."""
    return subprocess.Popen(args, env=ENV, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def loopback_cluster(tmp_path: Path):
    """A scheduler and two one-thread workers on 127.0.0.1; yields (address, [worker processes])."""
    info = tmp_path / "scheduler.json"
    procs = [spawn(DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                   "--scheduler-file", str(info), log=tmp_path / "scheduler.log")]  # fmt: skip
    try:
        while not info.exists():  # pytest-timeout ends a scheduler that never starts
            assert procs[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written in one go, but be safe against a partial read
        address = json.loads(info.read_text())["address"]
        workers = [spawn(DASK, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}",
                         "--death-timeout", "60", log=tmp_path / f"worker{i}.log") for i in range(2)]  # fmt: skip
        procs += workers
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, workers
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def study_run(grid: Path, results: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "study.run", str(grid), "--results", str(results), "-q", *extra],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def table(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "tiny" / "cells.csv").sort_values("cell").reset_index(drop=True)


@pytest.mark.slow
def test_loopback_dask_cluster_matches_loky_and_survives_a_worker_kill(tmp_path):
    grid = tmp_path / "light.yaml"
    grid.write_text(LIGHT)
    loky = study_run(grid, tmp_path / "loky", "--jobs", "2")
    out = loky.communicate()[0]
    assert loky.returncode == 0, out

    results = tmp_path / "dask"
    with loopback_cluster(tmp_path) as (address, workers):
        run = study_run(grid, results, "--backend", "dask", "--address", address, "--jobs", "2")
        # Kill worker 0 (nanny and worker process) while a generator is being trained somewhere on the cluster.
        while not list((results / "store").glob("generator/*/checkpoint.pt")):
            assert run.poll() is None, run.communicate()[0]
            time.sleep(0.05)
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        out = run.communicate()[0]
        first = run.returncode
        if first != 0:  # the scheduler gave up on the task: the same command completes the grid
            rerun = study_run(grid, results, "--backend", "dask", "--address", address, "--jobs", "2")
            out += rerun.communicate()[0]
            assert rerun.returncode == 0, out
    done = table(results)
    assert len(done) == 8 and set(done["status"]) == {"done"}, out
    pd.testing.assert_frame_equal(done[RESULT_COLUMNS], table(tmp_path / "loky")[RESULT_COLUMNS])
    print(f"dask worker kill: first run exit {first}")
