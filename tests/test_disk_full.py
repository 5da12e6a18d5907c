"""Out of disk (issue 19): ENOSPC while writing an artifact fails that artifact cleanly (no done.json, no half
file under its real name, no temporary left) with a message saying the disk is full, the file and the
filesystem; the next run, with space again, finishes the grid with the same numbers."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from study import store as store_module
from study.runner import cli
from study.store import DONE, ERROR, Artifact, DiskFullError, Store, atomic_path, atomic_write_bytes

RESULT_COLUMNS = ["cell", "status", "test_acc", "test_nll", "n_test"]


def no_space_for(monkeypatch, name: str) -> None:
    """os.replace of a temporary onto a file called `name` fails as on a full disk."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(store_module.os, "replace", replace)


def test_enospc_fails_the_artifact_cleanly_and_names_the_disk(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    art = Artifact("toy", "a", {"n": 1})
    no_space_for(monkeypatch, "weights.bin")

    def build(d: Path) -> None:
        atomic_write_bytes(d / "notes.txt", b"written before the disk filled up")
        atomic_write_bytes(d / "weights.bin", b"x" * 4096)

    with pytest.raises(DiskFullError) as info:
        store.ensure(art, build)
    message = str(info.value)
    d = store.path(art)
    assert f"disk full writing {d / 'weights.bin'} (filesystem " in message and "MiB free" in message
    assert info.value.errno == errno.ENOSPC
    assert not (d / DONE).exists() and not (d / "weights.bin").exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temporary left
    assert "DiskFullError" in (d / ERROR).read_text()
    monkeypatch.undo()
    assert store.ensure(art, build) and store.verify(art) is None  # with space again: built, not resumed half


def test_enospc_in_a_writer_that_needs_a_file_name(tmp_path, monkeypatch):
    no_space_for(monkeypatch, "model.safetensors")
    with (
        pytest.raises(DiskFullError, match="disk full writing .*model.safetensors"),
        atomic_path(tmp_path / "model.safetensors") as tmp,
    ):
        tmp.write_bytes(b"x" * 100)
    assert list(tmp_path.iterdir()) == []


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    """A real tmpfs of `size` at `path` (root only), so ENOSPC comes from the kernel; skips elsewhere."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def table(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "tiny" / "cells.csv").sort_values("cell").reset_index(drop=True)


def test_a_writers_own_error_on_a_full_disk_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """torch.save and safetensors raise RuntimeError on ENOSPC: the disk is asked whether it is full."""
    monkeypatch.setattr(store_module, "no_space_left", lambda directory, probe_bytes=1 << 16: True)
    with (
        pytest.raises(DiskFullError, match="disk full writing .*checkpoint.pt .*RuntimeError: .* unexpected pos"),
        atomic_path(tmp_path / "checkpoint.pt"),
    ):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 846784 vs 846672")
    monkeypatch.setattr(store_module, "no_space_left", lambda directory, probe_bytes=1 << 16: False)
    with pytest.raises(RuntimeError, match="a bug"), atomic_path(tmp_path / "checkpoint.pt"):
        raise RuntimeError("a bug")  # with space left, a writer's error stays what it is


def test_a_full_disk_fails_artifacts_and_the_rerun_with_space_finishes_the_grid(tiny_run, tmp_path, capsys):
    """The tiny grid on a 1 MiB tmpfs (its store needs ~2 MiB, a generator's training checkpoint more): the
    artifacts that do not fit fail with the disk named; growing the filesystem and running the same command
    finishes the grid with the uninterrupted run's numbers."""
    grid, reference = tiny_run
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        results = disk / "results"
        code = cli.main([str(grid), "--results", str(results), "--quiet"])
        out, err = capsys.readouterr()
        assert code == 1, out + err
        assert f"disk full writing {results}" in out + err and f"(filesystem {disk}," in out + err, out + err
        assert "Traceback" not in err
        store = Store(results / "store")
        for d in (results / "store").glob("*/*__*"):
            assert not [p for p in d.rglob(".*") if p.name != ".lock"], d  # no temporary survives
            if (d / DONE).exists():
                assert store.verify(d) is None, d  # what is marked done is whole
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert cli.main([str(grid), "--results", str(results), "--quiet"]) == 0
        pd.testing.assert_frame_equal(table(results)[RESULT_COLUMNS], table(reference)[RESULT_COLUMNS])
