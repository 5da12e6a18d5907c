"""Bad input vs bugs: every user-fixable error is a StudyInputError, which `study.run` reports in one line with
exit 2; a plain ValueError or RuntimeError (a bug) is never reported as bad input. No model is trained here."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.data.datasets import DatasetError
from study.data.sources import OpenSetError
from study.errors import BackendError, DeviceError, ModelSpecError, StudyInputError
from study.grid import GridError
from study.hub import PretrainedError
from study.runner import cli as study_run
from study.runner.preflight import BadInput

GRID = """
name: tiny
dataset: {name: digits}
real: {base: [5]}
synthetic: {volume: [5]}
generators:
  closed:
    model: {preset: tiny}
    train: {steps: 5, batch_size: 8, warmup: 1}
    sample: {sampler: dpmpp, steps: 2, guidance: 2.0}
classifier: {arch: study_cnn, width: 8, steps: 5, batch_size: 8}
seeds: [0]
device: cpu
"""


def run(tmp_path: Path, text: str = GRID, *extra: str) -> int:
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    return study_run.main([str(grid), "--results", str(tmp_path / "results"), "--quiet", *extra])


def test_the_input_errors_share_one_base():
    for error in (GridError, OpenSetError, PretrainedError, DatasetError, ModelSpecError):  # bad values
        assert issubclass(error, StudyInputError) and issubclass(error, ValueError), error
    for error in (DeviceError, BackendError, BadInput):  # the machine's, or the runner's own wrapper
        assert issubclass(error, StudyInputError) and not issubclass(error, ValueError), error
    assert not issubclass(ValueError, StudyInputError) and not issubclass(RuntimeError, StudyInputError)


def test_bad_grid_and_dataset_exit_2_with_the_message(tmp_path, capsys):
    assert run(tmp_path, GRID.replace("seeds: [0]", "seeds: [0]\nseedz: [1]")) == 2
    assert "seedz: unknown key" in capsys.readouterr().err
    missing = tmp_path / "nowhere.npz"
    assert run(tmp_path, GRID.replace("{name: digits}", f"{{name: npz, path: {missing}}}")) == 2
    assert str(missing) in capsys.readouterr().err  # the dataset error names the file it looked for


def test_model_settings_fail_up_front(tmp_path, capsys):
    """A generator preset that cannot downsample 8 px digits fails once before anything runs, not in every cell."""
    assert run(tmp_path, GRID.replace("preset: tiny", "preset: l")) == 2
    err = capsys.readouterr().err
    assert "generators.closed.model.preset: 'l'" in err and "resolution 8" in err
    assert not (tmp_path / "results" / "store" / "generator").exists()


def test_an_internal_error_in_preflight_is_not_bad_input(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr("study.models.classifier.build_classifier", bug)
    with pytest.raises(ValueError, match="an internal bug"):  # a traceback, not "error: ..." with exit 2
        run(tmp_path)


def test_an_internal_runtime_error_while_running_is_not_bad_input(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr("study.runner.execute.run_nodes", bug)
    with pytest.raises(RuntimeError, match="an internal bug"):
        run(tmp_path)


def test_a_backend_that_cannot_start_exits_2(tmp_path, capsys):
    pytest.importorskip("dask.distributed", reason="the dask extra is not installed")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = run(tmp_path, GRID, "--backend", "dask", "--address", "tcp://127.0.0.1:9")
    assert code == 2
    assert "--address tcp://127.0.0.1:9: cannot connect to the Dask scheduler" in capsys.readouterr().err


def test_ray_with_one_job_is_refused_before_anything_runs_here(tmp_path, capsys):
    """joblib's ray backend (a multiprocessing backend) runs a one-job call in the calling process: the login
    node on a cluster. Refused up front, ray installed or not."""
    assert run(tmp_path, GRID, "--backend", "ray") == 2
    assert "--backend ray --jobs 1: with one job joblib runs every stage in this process" in capsys.readouterr().err
    assert not (tmp_path / "results" / "store").exists()


def test_a_missing_device_exits_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert run(tmp_path, GRID, "--device", "cuda") == 2
    assert "'cuda' was asked for but CUDA is not available" in capsys.readouterr().err
