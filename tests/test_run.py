"""The runner end to end on the tiny digits grid (tests/tiny.yaml): plan, results table, caching, --force,
--device, --smoke, failures, resume after Ctrl-C and SIGKILL, concurrency, backends. Every run trains real
(tiny) generators and classifiers."""

from __future__ import annotations

import json
import os
import re
import shutil
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
TINY = (Path(__file__).resolve().parent / "tiny.yaml").read_text()
RESULT_COLUMNS = ["cell", "status", "test_acc", "test_nll", "n_test"]


def write_grid(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def run(args: list[str]) -> int:
    return study_run.main([*args, "--quiet"])


def table(results: Path, name: str = "tiny") -> pd.DataFrame:
    return pd.read_csv(results / name / "cells.csv").sort_values("cell").reset_index(drop=True)


def done_markers(results: Path) -> dict[Path, int]:
    """Every artifact's done.json and its modification time (ns): a rebuilt artifact rewrites it."""
    return {p: p.stat().st_mtime_ns for p in (results / "store").glob("*/*/done.json")}


def test_dry_run_prints_the_plan(tmp_path, capsys):
    assert run([str(REPO / "grids" / "quickstart.yaml"), "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grid quickstart: 270 cells" in out
    assert "generator       12 needed,     0 cached,    12 to compute" in out
    assert "reference        3 needed" in out  # one judge per seed
    # 12 generators shared by 6 arms: closed and closed-30 share their sample sets; auggen, auggen-0.7 and
    # scoremix-far sample the closed-set generators in their own ways (3 bases x 3 seeds each); open: 3 seeds x 3 bases
    assert "samples         39 needed" in out and "classifier     255 needed" in out
    assert "diagnostics     45 needed" in out
    assert not (tmp_path / "quickstart").exists()  # computes nothing


def test_full_run_writes_the_table(tiny_run, capsys):
    grid, results = tiny_run
    df = table(results)
    assert len(df) == 8 and set(df["status"]) == {"done"}
    assert set(COLUMNS) <= set(df.columns)
    assert df["test_acc"].between(0, 1).all() and (df["n_test"] == 540).all()
    assert df["test_auc_n"].gt(1).all()  # evaluate's AUC trials reach the table (study.metrics.auc_trials)
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


def test_cached_rerun_computes_nothing(tiny_run, capsys):
    grid, results = tiny_run
    before, markers = table(results), done_markers(results)
    assert run([str(grid), "--results", str(results)]) == 0
    assert "nothing to compute" in capsys.readouterr().out
    assert done_markers(results) == markers  # no artifact was rebuilt
    pd.testing.assert_frame_equal(table(results), before)


def test_bad_input_exits_2(tmp_path, capsys):
    assert run([str(tmp_path / "missing.yaml")]) == 2
    assert "grid file not found" in capsys.readouterr().err
    assert run([str(write_grid(tmp_path, TINY.replace("classifier: {", "classifier: {stpes: 30, ")))]) == 2
    assert "classifier.stpes: unknown key" in capsys.readouterr().err
    too_big = write_grid(tmp_path, TINY.replace("extra: [5]", "extra: [500]"))
    assert run([str(too_big), "--results", str(tmp_path / "r")]) == 2
    assert "per class were asked for" in capsys.readouterr().err
    assert run([str(write_grid(tmp_path)), "--shard", "3/2"]) == 2
    assert "--shard '3/2'" in capsys.readouterr().err
    bad_arch = write_grid(tmp_path, TINY.replace("arch: study_cnn", "arch: resnet-18"))
    assert run([str(bad_arch), "--results", str(tmp_path / "r")]) == 2  # up front, not in every cell
    assert "classifier.arch: 'resnet-18' is not a timm model name" in capsys.readouterr().err
    bad_kwargs = write_grid(tmp_path, TINY.replace("classifier: {", "classifier: {model_kwargs: {bogus: 1}, "))
    assert run([str(bad_kwargs), "--results", str(tmp_path / "r")]) == 2
    assert "classifier.model_kwargs: 'study_cnn' does not accept {'bogus': 1}" in capsys.readouterr().err


@pytest.mark.slow
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


# `python -m study.run ARGS` that turns SIGINT into KeyboardInterrupt as an interactive shell's command does. A
# shell without job control starts background commands (e.g. a test suite run with `&`) with SIGINT ignored,
# and Python then keeps it ignored, so Ctrl-C is restored explicitly before the runner starts.
WITH_CTRL_C = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); " \
              "runpy.run_module('study.run', run_name='__main__', alter_sys=True)"  # fmt: skip


def subprocess_run(grid: Path, results: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WITH_CTRL_C, str(grid), "--results", str(results), "-q", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_done(results: Path, pattern: str, proc: subprocess.Popen) -> None:
    """Poll until an artifact matching `pattern` (e.g. "samples/*") is done, while `proc` is still running.
    No deadline of its own: pytest-timeout ends a run that hangs."""
    while not list((results / "store").glob(f"{pattern}/done.json")):
        assert proc.poll() is None, f"the run ended before {pattern} was done:\n{proc.communicate()[0]}"
        time.sleep(0.05)


def test_resume_after_sigkill_gives_the_same_table(tiny_run, tmp_path):
    grid, reference = tiny_run
    results = tmp_path / "results"
    proc = subprocess_run(grid, results)
    wait_until_done(results, "samples/*", proc)
    os.kill(proc.pid, signal.SIGKILL)  # mid-grid: a sample set is done, classifiers are not
    proc.wait()
    assert not (results / "tiny" / "cells.csv").exists() or len(table(results)) < 8
    assert subprocess_run(grid, results).wait() == 0
    pd.testing.assert_frame_equal(table(results)[RESULT_COLUMNS], table(reference)[RESULT_COLUMNS])


def test_ctrl_c_exits_130_keeps_finished_work_and_the_same_command_resumes(tiny_run, tmp_path):
    grid, reference = tiny_run
    results = tmp_path / "results"
    proc = subprocess_run(grid, results)
    wait_until_done(results, "generator/*", proc)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out = proc.communicate()[0]
    assert proc.returncode == 130, out
    assert "interrupted: finished artifacts are kept; run the same command to resume" in out
    kept = done_markers(results)
    assert 0 < len(kept) < len(done_markers(reference))
    resumed = subprocess_run(grid, results)
    out = resumed.communicate()[0]
    assert resumed.returncode == 0, out
    after = done_markers(results)
    assert {p: after[p] for p in kept} == kept  # what was done before Ctrl-C is not rebuilt
    assert after.keys() == {results / p.relative_to(reference) for p in done_markers(reference)}
    pd.testing.assert_frame_equal(table(results)[RESULT_COLUMNS], table(reference)[RESULT_COLUMNS])


def test_force_rebuilds_every_artifact_with_the_same_numbers(tiny_run, tmp_path, capsys):
    grid, reference = tiny_run
    results = tmp_path / "results"
    shutil.copytree(reference, results)
    before = done_markers(results)
    assert run([str(grid), "--results", str(results), "--force"]) == 0
    built = re.findall(r"^\s+\w+\s+built\s+(\d+)", capsys.readouterr().out, re.M)
    assert sum(map(int, built)) == len(before)
    after = done_markers(results)
    assert after.keys() == before.keys() and all(after[p] != before[p] for p in before)  # every one rewritten
    pd.testing.assert_frame_equal(table(results)[RESULT_COLUMNS], table(reference)[RESULT_COLUMNS])


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_bad_device_exits_2_before_anything_runs(tmp_path, capsys):
    results = tmp_path / "results"
    assert run([str(write_grid(tmp_path)), "--device", "gpu", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "--device 'gpu'" in err and "cuda:N" in err
    assert run([str(write_grid(tmp_path, TINY.replace("device: cpu", "device: gpu"))), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "device:" in err and "'gpu'" in err and "cuda:N" in err
    if not torch_cuda_available():
        assert run([str(write_grid(tmp_path)), "--device", "cuda", "--results", str(results)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not list(results.glob("store/*/*/done.json"))


SMOKE = """smoke:
  real: {base: [5], extra: []}
  synthetic: {volume: [5]}
  generators: {"*": {train: {steps: 10}}}
  classifier: {steps: 10}
"""


@pytest.mark.slow
def test_smoke_run_with_the_device_flag(tmp_path):
    """`--smoke` shrinks the grid through study.run; `--device cpu` overrides the grid's `device: cuda`."""
    grid = write_grid(tmp_path, TINY.replace("device: cpu", "device: cuda") + SMOKE)
    results = tmp_path / "results"
    assert run([str(grid), "--smoke", "--device", "cpu", "--results", str(results)]) == 0
    df = table(results)
    assert list(df["cell"]) == ["closed-base5-vol5-s0", "real-only-base5-s0"] and set(df["status"]) == {"done"}
    plan = json.loads((results / "tiny" / "plan.json").read_text())
    assert plan["cells"] == 2
    provenance = [json.loads(p.read_text()) for p in (results / "store").glob("*/*/provenance.json")]
    # reference classifier, generator, samples, their diagnostics and the two cells' classifiers, all on the CPU
    assert len(provenance) == 6 and {p["device"] for p in provenance} == {"cpu"}


def test_two_concurrent_runners_build_each_artifact_once(tiny_run, tmp_path):
    grid, reference = tiny_run
    results = tmp_path / "results"
    procs = [subprocess_run(grid, results), subprocess_run(grid, results, "--shard", "1/2")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    built = sum(int(m.group(1)) for out in outputs for m in re.finditer(r"^\s+\w+\s+built\s+(\d+)", out, re.M))
    assert built == len(list((results / "store").glob("*/*/done.json")))
    pd.testing.assert_frame_equal(table(results)[RESULT_COLUMNS], table(reference)[RESULT_COLUMNS])


@pytest.mark.slow
def test_dask_backend_matches_local_processes(tmp_path):
    pytest.importorskip("dask.distributed", reason="the dask extra is not installed")
    grid = write_grid(tmp_path)
    assert run([str(grid), "--results", str(tmp_path / "loky"), "--jobs", "2"]) == 0
    assert run([str(grid), "--results", str(tmp_path / "dask"), "--jobs", "2", "--backend", "dask"]) == 0
    pd.testing.assert_frame_equal(table(tmp_path / "dask")[RESULT_COLUMNS], table(tmp_path / "loky")[RESULT_COLUMNS])
