"""`--dry-run` is the real run's pre-flight: every input the real run rejects before computing, the dry run
rejects with the same message and exit 2 (issue 19); a grid that passes the dry run is not rejected by the
real run. Nothing here trains a model: the real runs stop at their pre-flight."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from study.data import datasets
from study.runner import cli

TINY = (Path(__file__).resolve().parent / "tiny.yaml").read_text()


def run(args: list[str]) -> int:
    return cli.main([*args, "--quiet"])


def errors_of(capsys, grid: Path, results: Path, *extra: str) -> tuple[tuple[int, str], tuple[int, str]]:
    """(exit code, stderr) of the dry run and of the real run of `grid`."""
    dry = run([str(grid), "--results", str(results), "--dry-run", *extra]), capsys.readouterr().err
    real = run([str(grid), "--results", str(results), *extra]), capsys.readouterr().err
    return dry, real


def write(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def small_npz(path: Path, per_class: int = 6) -> Path:
    """A 3-class 8x8 grey dataset with `per_class` training images per class."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), per_class)
    test_labels = np.repeat(np.arange(3), 2)
    np.savez(
        path,
        train_images=rng.integers(0, 255, (len(labels), 8, 8), dtype=np.uint8),
        train_labels=labels,
        test_images=rng.integers(0, 255, (len(test_labels), 8, 8), dtype=np.uint8),
        test_labels=test_labels,
    )
    return path


def npz_grid(data: Path) -> str:
    return TINY.replace("dataset: {name: digits}", f"dataset: {{name: npz, path: {data}}}")


@pytest.mark.parametrize(
    "case, edit, expected",
    [
        ("missing dataset", lambda t, d: npz_grid(d / "absent.npz"), "file not found"),
        ("too few images", lambda t, d: npz_grid(small_npz(d / "small.npz", per_class=6)), "per class were asked"),
        ("too many for digits", lambda t, d: t.replace("extra: [5]", "extra: [500]"), "510 per class were asked"),
        ("corrupt dataset", lambda t, d: npz_grid(_garbage(d / "bad.npz")), "corrupt or not an .npz file"),
        ("generator model", lambda t, d: t.replace("preset: tiny", "preset: tiny, width: 7"), "generators.closed"),
    ],
)
def test_dry_run_rejects_what_the_real_run_rejects_with_the_same_message(tmp_path, capsys, case, edit, expected):
    grid = write(tmp_path, edit(TINY, tmp_path))
    dry, real = errors_of(capsys, grid, tmp_path / "results")
    assert dry == real, case
    assert dry[0] == 2 and expected in dry[1] and "Traceback" not in dry[1], dry
    assert not list((tmp_path / "results").glob("store/*/*/done.json"))


def _garbage(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 not really a zip file")
    return path


def test_dry_run_checks_the_device(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    dry, real = errors_of(capsys, write(tmp_path, TINY), tmp_path / "results", "--device", "cuda")
    assert dry == real and dry[0] == 2 and "CUDA is not available" in dry[1]


def test_dry_run_checks_the_results_directory_before_anything(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    dry, real = errors_of(capsys, write(tmp_path, TINY), not_a_dir / "results")
    assert dry == real and dry[0] == 2
    assert f"{not_a_dir} is not a directory" in dry[1]
    capsys.readouterr()
    assert run([str(write(tmp_path, TINY)), "--results", str(tmp_path / "new" / "results"), "--dry-run"]) == 0
    assert not (tmp_path / "new" / "results" / "tiny").exists()  # a dry run creates no table directory


@contextlib.contextmanager
def read_only_dir(path: Path):
    """A directory this process cannot write in: a read-only tmpfs when running as root (which ignores
    permission bits), else mode 0555. Skips the test when neither is possible."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs as root here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_results_directory_is_bad_input_before_any_work(tmp_path, capsys):
    with read_only_dir(tmp_path / "ro") as ro:
        dry, real = errors_of(capsys, write(tmp_path, TINY), ro)
        assert dry == real and dry[0] == 2, dry
        assert str(ro) in dry[1] and ("read-only" in dry[1] or "cannot be written" in dry[1]), dry[1]
        assert not any(ro.iterdir())


def test_a_grid_that_passes_the_dry_run_is_decoded_once(tmp_path, capsys, monkeypatch):
    """The dry run decodes the dataset into the store's decode cache; the real run after it reads the cache."""
    data = small_npz(tmp_path / "ok.npz", per_class=12)
    grid = write(tmp_path, npz_grid(data).replace("base: [5, 10]", "base: [5]"))
    calls = []
    real_loader = datasets.LOADERS["npz"]
    monkeypatch.setitem(datasets.LOADERS, "npz", lambda spec: calls.append(spec) or real_loader(spec))
    monkeypatch.setattr(datasets, "_MEMO", {})
    assert run([str(grid), "--results", str(tmp_path / "results"), "--dry-run"]) == 0
    assert "pre-flight: inputs checked (3 classes)" in capsys.readouterr().out
    assert len(calls) == 1
    monkeypatch.setattr(datasets, "_MEMO", {})  # a new process: only the on-disk cache is left
    from study.grid import load_grid

    datasets.load_dataset(load_grid(grid).dataset, cache_dir=tmp_path / "results" / "store" / "dataset")
    assert len(calls) == 1  # read from the decode cache, not decoded again
