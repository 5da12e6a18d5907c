"""The runner end to end on a tiny digits grid: plan, results table, caching, failures, resume, concurrency,
backends. Every run trains real (tiny) generators and classifiers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from study.runner import cli as study_run
from study.runner import stages
from study.runner.collect import COLUMNS
from study.table import SCHEMA

REPO = Path(__file__).resolve().parent.parent
TINY = """
name: tiny
dataset: {name: digits}
real: {base: [5, 10], extra: [5]}
synthetic: {volume: [5, 10]}
generators:
  closed:
    model: {preset: tiny}
    train: {steps: 30, batch_size: 32, warmup: 5, checkpoint_every: 10}
    sample: {sampler: dpmpp, steps: 4, guidance: 2.0}
classifier: {arch: study_cnn, width: 8, steps: 30, batch_size: 32}
seeds: [0]
device: cpu
"""
RESULT_COLUMNS = ["cell", "status", "test_acc", "test_nll", "n_test"]


def write_grid(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def run(args: list[str]) -> int:
    return study_run.main([*args, "--quiet"])


def table(results: Path, name: str = "tiny") -> pd.DataFrame:
    return pd.read_csv(results / name / "cells.csv").sort_values("cell").reset_index(drop=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run of the tiny grid, shared by the tests that compare against it."""
    tmp = tmp_path_factory.mktemp("finished")
    grid = write_grid(tmp)
    assert run([str(grid), "--results", str(tmp / "results")]) == 0
    return grid, tmp / "results"


def test_dry_run_prints_the_plan(tmp_path, capsys):
    assert run([str(REPO / "grids" / "quickstart.yaml"), "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grid quickstart: 162 cells" in out
    assert "generator       12 needed,     0 cached,    12 to compute" in out
    assert "reference        3 needed" in out  # one judge per seed
    assert "diagnostics     18 needed" in out  # closed: 3 bases x 3 seeds; open: 3 seeds x 3 bases
    assert not (tmp_path / "quickstart").exists()  # computes nothing


def test_full_run_writes_the_table(finished, capsys):
    grid, results = finished
    df = table(results)
    assert len(df) == 8 and set(df["status"]) == {"done"}
    assert set(COLUMNS) <= set(df.columns)
    assert df["test_acc"].between(0, 1).all() and (df["n_test"] == 540).all()
    synthetic = df[df["arm"] == "closed"]
    assert (synthetic["n_syn"] == synthetic["volume_per_class"] * 10).all()
    assert synthetic["cond_acc"].notna().all()  # the sample set's diagnostic reaches the table
    diagnostics = ["mem_frac", "mem_ratio", "mem_frac_feat", "fd", "kd", "precision", "recall", "density",
                   "coverage", "domain_auc", "cas"]  # fmt: skip
    assert synthetic[diagnostics].notna().all().all() and synthetic["diagnostics_error"].isna().all()
    assert synthetic["domain_auc"].between(0, 1).all() and synthetic["cas"].between(0, 1).all()
    assert synthetic.groupby("base_per_class")["diagnostics_key"].nunique().eq(1).all()  # one per set and base
    assert (results / "tiny" / "cells.parquet").exists()
    parquet = pd.read_parquet(results / "tiny" / "cells.parquet").sort_values("cell").reset_index(drop=True)
    pd.testing.assert_frame_equal(parquet[RESULT_COLUMNS], df[RESULT_COLUMNS], check_dtype=False)
    assert {c: str(t) for c, t in parquet.dtypes.items()} == {c: s.dtype for c, s in SCHEMA.items()}  # study.table


def test_cached_rerun_computes_nothing(finished, capsys):
    grid, results = finished
    before = table(results)
    start = time.perf_counter()
    assert run([str(grid), "--results", str(results)]) == 0
    assert "nothing to compute" in capsys.readouterr().out
    assert time.perf_counter() - start < 5
    pd.testing.assert_frame_equal(table(results), before)


def test_bad_input_exits_2(tmp_path, capsys):
    assert run([str(tmp_path / "missing.yaml")]) == 2
    assert "grid file not found" in capsys.readouterr().err
    assert run([str(write_grid(tmp_path, TINY.replace("steps: 30, batch_size: 32}\nseeds", "stpes: 30}\nseeds")))]) == 2
    assert "classifier.stpes: unknown key" in capsys.readouterr().err
    too_big = write_grid(tmp_path, TINY.replace("extra: [5]", "extra: [500]"))
    assert run([str(too_big), "--results", str(tmp_path / "r")]) == 2
    assert "per class were asked for" in capsys.readouterr().err
    assert run([str(write_grid(tmp_path)), "--shard", "3/2"]) == 2
    assert "--shard '3/2'" in capsys.readouterr().err
    bad_arch = write_grid(tmp_path, TINY.replace("arch: study_cnn", "arch: resnet-18"))
    assert run([str(bad_arch), "--results", str(tmp_path / "r")]) == 2  # up front, not in every cell
    assert "classifier.arch: 'resnet-18' is not a timm model name" in capsys.readouterr().err
    bad_kwargs = write_grid(tmp_path, TINY.replace("batch_size: 32}", "batch_size: 32, model_kwargs: {bogus: 1}}"))
    assert run([str(bad_kwargs), "--results", str(tmp_path / "r")]) == 2
    assert "classifier.model_kwargs: 'study_cnn' does not accept {'bogus': 1}" in capsys.readouterr().err


def test_failed_cell_keeps_the_others(tmp_path, monkeypatch, capsys):
    real_build = stages.BUILDERS["generator"]

    def flaky(node, ctx, out):
        if node.base_per_class == 10:
            raise FloatingPointError("generator loss is NaN at step 3")
        return real_build(node, ctx, out)

    monkeypatch.setitem(stages.BUILDERS, "generator", flaky)
    results = tmp_path / "results"
    assert run([str(write_grid(tmp_path)), "--results", str(results)]) == 1
    df = table(results)
    failed = df[df["status"] == "failed"]
    assert set(failed["cell"]) == {"closed-base10-vol5-s0", "closed-base10-vol10-s0"}
    assert failed["error"].str.contains("loss is NaN").all() and failed["error"].str.contains("traceback").all()
    assert (df[df["status"] == "done"]["test_acc"] > 0).all() and len(df) == 8
    monkeypatch.setitem(stages.BUILDERS, "generator", real_build)
    assert run([str(write_grid(tmp_path)), "--results", str(results)]) == 0  # retried, not cached
    assert set(table(results)["status"]) == {"done"}


def subprocess_run(grid: Path, results: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "study.run", str(grid), "--results", str(results), "-q", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_resume_after_sigkill_gives_the_same_table(finished, tmp_path):
    grid, reference = finished
    results = tmp_path / "results"
    proc = subprocess_run(grid, results)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((results / "store").glob("samples/*/done.json"))) < 1:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-grid: a sample set is done, classifiers are not
    proc.wait()
    assert not (results / "tiny" / "cells.csv").exists() or len(table(results)) < 8
    assert subprocess_run(grid, results).wait() == 0
    pd.testing.assert_frame_equal(table(results)[RESULT_COLUMNS], table(reference)[RESULT_COLUMNS])


def test_two_concurrent_runners_build_each_artifact_once(finished, tmp_path):
    grid, reference = finished
    results = tmp_path / "results"
    procs = [subprocess_run(grid, results), subprocess_run(grid, results, "--shard", "1/2")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    built = sum(int(m.group(1)) for out in outputs for m in re.finditer(r"^\s+\w+\s+built\s+(\d+)", out, re.M))
    assert built == len(list((results / "store").glob("*/*/done.json")))
    pd.testing.assert_frame_equal(table(results)[RESULT_COLUMNS], table(reference)[RESULT_COLUMNS])


def test_dask_backend_matches_local_processes(tmp_path):
    pytest.importorskip("dask.distributed", reason="the dask extra is not installed")
    grid = write_grid(tmp_path)
    assert run([str(grid), "--results", str(tmp_path / "loky"), "--jobs", "2"]) == 0
    assert run([str(grid), "--results", str(tmp_path / "dask"), "--jobs", "2", "--backend", "dask"]) == 0
    pd.testing.assert_frame_equal(table(tmp_path / "dask")[RESULT_COLUMNS], table(tmp_path / "loky")[RESULT_COLUMNS])
