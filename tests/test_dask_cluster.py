"""A real Dask cluster on loopback (issue 19): `dask scheduler` and two `dask worker` processes started from
their command lines, as a cluster's job scripts start them, and `study.run --backend dask --address`. The
cells equal a local-process (loky) run of the same grid with the same thread layout (one torch thread per
worker); one worker is SIGKILLed while it builds an artifact and the grid still finishes with nothing lost
(Dask reschedules the task, or, if the run gives up on it, the same command completes the grid). No artifact
is ever built by the submitting `study.run` process (on a cluster, the login node), also when the cluster is
down to one worker thread: each artifact's provenance names the process that built it."""

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


def builders(results: Path) -> dict[str, int]:
    """Every finished artifact (stage/directory) and the pid its provenance names as its builder."""
    return {
        f"{p.parent.parent.name}/{p.parent.name}": json.loads((p.parent / "provenance.json").read_text())["pid"]
        for p in (results / "store").glob("*/*/done.json")
    }


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
        first, submitters = run.returncode, {run.pid}
        if first != 0:  # the scheduler gave up on the task: the same command completes the grid
            rerun = study_run(grid, results, "--backend", "dask", "--address", address, "--jobs", "2")
            out += rerun.communicate()[0]
            submitters.add(rerun.pid)
            assert rerun.returncode == 0, out
    # After the kill the cluster has one worker thread: still nothing is built by the submitting process.
    built = builders(results)
    assert len(built) == 14 and not {a: pid for a, pid in built.items() if pid in submitters}, built
    done = table(results)
    assert len(done) == 8 and set(done["status"]) == {"done"}, out
    pd.testing.assert_frame_equal(done[RESULT_COLUMNS], table(tmp_path / "loky")[RESULT_COLUMNS])
    print(f"dask worker kill: first run exit {first}")


REAL_ONLY = """
name: tiny
dataset: {name: digits}
real: {base: [5], extra: [5]}
classifier: {arch: study_cnn, width: 4, steps: 5, batch_size: 16, augment: false, precision: fp32}
seeds: [0]
device: cpu
"""


def test_a_one_thread_dask_cluster_computes_nothing_in_the_submitting_process(tmp_path):
    """`--backend dask --jobs 1` starts a local cluster of one one-thread worker: joblib's dask backend would
    run such a call in the calling process; every artifact must come from the worker."""
    grid = tmp_path / "real.yaml"
    grid.write_text(REAL_ONLY)
    run = study_run(grid, tmp_path / "results", "--backend", "dask", "--jobs", "1")
    out = run.communicate()[0]
    assert run.returncode == 0, out
    built = builders(tmp_path / "results")
    assert len(built) == 2, built  # the two real-only classifiers (no generators: no reference)
    assert run.pid not in set(built.values()), built
    assert len(set(built.values())) == 1, built  # the one worker process built them all


def test_a_task_the_cluster_gives_up_on_is_a_failed_artifact_the_rerun_builds(tmp_path, monkeypatch):
    """What `future.result()` raises for a task Dask gave up on (KilledWorker after `allowed-failures` worker
    deaths; simulated here by a task that raises on an in-process cluster) is that artifact's failure, named
    LostOnCluster, with no done marker: the others go on and the next run builds it. (A real KilledWorker, with
    allowed-failures 0 and a worker SIGKILLed under a generator, gave the same: that generator and its 4
    dependants failed, exit 1, and the same command built them on the surviving worker.)"""
    from distributed import Client, LocalCluster

    from study.grid import expand, load_grid
    from study.runner import execute
    from study.runner.plan import make_plan
    from study.runner.stages import Context

    grid_file = tmp_path / "real.yaml"
    grid_file.write_text(REAL_ONLY)
    grid = load_grid(grid_file)
    plan = make_plan(grid, expand(grid))
    nodes = list(plan.nodes.values())
    ctx = Context(grid, str(tmp_path / "store"), "cpu", progress=False)

    def lost(node, ctx, threads):
        raise OSError(f"the worker building {node.art.slug} died")

    monkeypatch.setattr(execute, "_build_pair", lost)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        outcomes = list(execute._dask_map(client, nodes, ctx, None))
    assert sorted(n.key for n, _ in outcomes) == sorted(n.key for n in nodes) and len(nodes) == 2
    for node, outcome in outcomes:
        assert outcome.status == "failed" and not ctx.store.is_done(node.art)
        expected = f"LostOnCluster: the Dask cluster lost the task (OSError: the worker building {node.art.slug} died)"
        assert outcome.error.startswith(expected), outcome.error
        assert (ctx.store.path(node.art) / "error.txt").read_text().startswith(expected)
