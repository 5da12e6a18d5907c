"""Artifact store: atomic writes, done marker written last, failures not cached, one build under concurrency."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time

import pytest

from study import store as names
from study.store import Artifact, Store, atomic_write_bytes

ART = Artifact("generator", "gen-test", {"schema_version": 1, "steps": 3})


def test_artifact_directory_layout(tmp_path):
    store = Store(tmp_path)

    def build(d):
        sum(i * i for i in range(200_000))  # some CPU work, so the build's recorded CPU time is above zero
        (d / "weights.bin").write_bytes(b"w")

    built = store.ensure(ART, build)
    assert built and store.is_done(ART)
    d = store.path(ART)
    assert d == tmp_path / "generator" / f"gen-test__{ART.key[:12]}"
    assert json.loads((d / "config.json").read_text()) == ART.config
    prov = json.loads((d / "provenance.json").read_text())
    assert {"git_commit", "git_dirty", "packages", "device", "host", "seconds", "cpu_seconds"} <= set(prov)
    assert store.done_info(ART)["key"] == ART.key and 0 < store.done_info(ART)["cpu_seconds"] == prov["cpu_seconds"]
    assert not store.ensure(ART, lambda d: pytest.fail("cached artifacts are not rebuilt"))


def test_artifact_file_names_are_the_ones_on_disk():
    """Every existing store holds these names: renaming one orphans its caches (change them only with a
    migration). study.store is the only module that spells them."""
    on_disk = {
        "DONE": "done.json", "CONFIG": "config.json", "PROVENANCE": "provenance.json", "ERROR": "error.txt",
        "METRICS": "metrics.json", "CLASSIFIER_META": "classifier.json", "CLASSIFIER_WEIGHTS": "classifier.safetensors",
        "GENERATOR_META": "generator.json", "GENERATOR_CHECKPOINT": "checkpoint.pt", "UNET_DIR": "unet",
        "SCHEDULER_DIR": "scheduler", "TRAIN_STATS": "train_stats.json", "PRETRAINED_META": "pretrained.json",
        "SAMPLES": "samples.safetensors", "SAMPLES_META": "samples.json", "PREVIEW": "preview.png",
    }  # fmt: skip
    assert {name: getattr(names, name) for name in on_disk} == on_disk


def test_find_by_stage_and_key(tmp_path):
    store = Store(tmp_path)
    assert store.find("generator", ART.key) is None
    renamed = Artifact(ART.stage, "gen-old-slug", ART.config)  # same key, another slug (an older version's)
    store.path(renamed).mkdir(parents=True)
    assert store.find("generator", ART.key) == store.path(renamed)  # whatever the slug
    store.ensure(ART, lambda d: None)
    assert store.find("generator", ART.key) == store.path(ART)  # the finished one wins
    assert store.find("samples", ART.key) is None  # another stage


def test_failure_is_recorded_not_cached(tmp_path):
    store = Store(tmp_path)

    def boom(d):
        raise RuntimeError("loss is NaN")

    with pytest.raises(RuntimeError):
        store.ensure(ART, boom)
    assert not store.is_done(ART)
    assert "loss is NaN" in (store.path(ART) / "error.txt").read_text()
    assert store.ensure(ART, lambda d: None)  # retried, and the stale error is cleared
    assert not (store.path(ART) / "error.txt").exists()


def _slow_build(root, started):
    def build(d):
        (d / "part1").write_text("x")
        started.set()
        time.sleep(60)

    Store(root).ensure(ART, build)


def test_killed_build_leaves_no_done_marker(tmp_path):
    started = mp.get_context("fork").Event()
    proc = mp.get_context("fork").Process(target=_slow_build, args=(tmp_path, started))
    proc.start()
    assert started.wait(30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    store = Store(tmp_path)
    assert (store.path(ART) / "part1").exists() and not store.is_done(ART)
    assert store.ensure(ART, lambda d: None)  # the lock died with the process; the next run builds


def test_atomic_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "table.csv"
    atomic_write_bytes(path, b"old")

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # the temp file is cleaned up


class _SignallingStore(Store):
    """Sets `checked` when `ensure` has looked and found the artifact not done, i.e. just before it takes the lock."""

    def __init__(self, root, checked):
        super().__init__(root)
        self.checked = checked

    def is_done(self, art):
        done = super().is_done(art)
        if not done:
            self.checked.set()
        return done


def _log_build(d):
    with open(d.parent / "builds.log", "a") as f:
        f.write(f"{os.getpid()}\n")


def _first_builder(root, building, second_checked):
    def build(d):
        _log_build(d)
        building.set()
        # Hold the lock until the second process has found the artifact not done and gone for the lock too.
        assert second_checked.wait(60), "the second process never reached the lock"

    assert Store(root).ensure(ART, build)


def _second_builder(root, building, second_checked):
    assert building.wait(60), "the first process never started building"
    assert not _SignallingStore(root, second_checked).ensure(ART, _log_build)  # it waited, then found it done


def test_two_processes_build_once(tmp_path):
    """The second process asks for the artifact while the first is building it (certain: the first holds the
    lock until the second has looked), so without the lock, or without looking again under it, both build."""
    ctx = mp.get_context("fork")
    building, second_checked = ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(target=f, args=(tmp_path, building, second_checked)) for f in (_first_builder, _second_builder)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len((tmp_path / "generator" / "builds.log").read_text().split()) == 1
    assert Store(tmp_path).is_done(ART)
