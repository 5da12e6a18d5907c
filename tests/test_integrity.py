"""Artifact integrity (issue 19): done.json records every file's size and checksum; a truncated, corrupted or
missing file is found before it is used, reported with its path, and the artifact is rebuilt together with the
finished artifacts that depend on it; the temporaries a killed writer leaves are cleaned up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from study.grid import expand, load_grid
from study.runner import cli, stages
from study.runner.collect import collect
from study.runner.plan import make_plan
from study.store import (
    CHECKSUM,
    CONFIG,
    DONE,
    GENERATOR_META,
    INVALIDATED,
    METRICS,
    SAMPLES,
    UNET_DIR,
    Artifact,
    Store,
)

RESULT_COLUMNS = ["cell", "status", "test_acc", "test_nll", "n_test"]


def build_toy(store: Store, name: str = "a", body: bytes = b"x" * 1000) -> Artifact:
    art = Artifact("toy", name, {"n": name})

    def build(d: Path) -> None:
        (d / "weights.bin").write_bytes(body)
        (d / "sub").mkdir(exist_ok=True)
        (d / "sub" / "part.json").write_text('{"a": 1}')

    assert store.ensure(art, build)
    return art


def test_done_json_lists_every_file_with_its_checksum(tmp_path):
    store = Store(tmp_path)
    art = build_toy(store)
    files = json.loads((store.path(art) / DONE).read_text())["files"]
    assert set(files) == {"weights.bin", "sub/part.json", CONFIG, "provenance.json"}
    assert files["weights.bin"]["bytes"] == 1000 and len(files["weights.bin"][CHECKSUM]) == 128
    assert store.verify(art) is None


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: f.write_bytes(f.read_bytes()[:500]), "truncated or changed (500 bytes, 1000 when it was written)"),
        (lambda f: f.write_bytes(b"y" + f.read_bytes()[1:]), "corrupted (blake2b checksum differs"),
        (lambda f: f.unlink(), "missing"),
    ],
)
def test_verify_names_the_damaged_file(tmp_path, damage, expected):
    store = Store(tmp_path)
    art = build_toy(store)
    damage(store.path(art) / "weights.bin")
    problem = store.verify(art)
    assert problem == f"{store.path(art) / 'weights.bin'}: {expected}" or problem.startswith(
        f"{store.path(art) / 'weights.bin'}: {expected}"
    )
    assert store.verify(art, names=("sub/part.json",)) is None  # only the files asked for


def test_an_artifact_finished_before_checksums_passes(tmp_path):
    store = Store(tmp_path)
    art = build_toy(store)
    done = store.path(art) / DONE
    done.write_text(json.dumps({k: v for k, v in json.loads(done.read_text()).items() if k != "files"}))
    (store.path(art) / "weights.bin").write_bytes(b"changed")
    assert store.verify(art) is None


def test_invalidate_forgets_and_empties_the_artifact(tmp_path):
    store = Store(tmp_path)
    art = build_toy(store)
    store.invalidate(art, "weights.bin: corrupted")
    d = store.path(art)
    assert not store.is_done(art)
    assert sorted(p.name for p in d.iterdir()) == sorted([CONFIG, ".lock", INVALIDATED])
    assert build_toy(store).key == art.key and store.verify(art) is None  # rebuilt from scratch
    assert not (d / INVALIDATED).exists()


def test_a_killed_writers_temporaries_are_removed_before_the_rebuild(tmp_path):
    store = Store(tmp_path)
    art = Artifact("toy", "a", {"n": "a"})
    d = store.path(art)
    d.mkdir(parents=True)
    (d / ".weights.bin.k3j2.tmp").write_bytes(b"half")  # atomic_write_bytes killed before its rename
    (d / f".{UNET_DIR}.tmp").mkdir()  # an atomic_dir (save_pretrained) killed half way
    (d / f".{UNET_DIR}.tmp" / "model.safetensors").write_bytes(b"half")
    build_toy(store)
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == [".lock"]
    assert ".weights.bin.k3j2.tmp" not in json.loads((d / DONE).read_text())["files"]


# --- end to end on the tiny grid -------------------------------------------------------------------------


def markers(results: Path) -> dict[Path, int]:
    return {p.parent: p.stat().st_mtime_ns for p in (results / "store").glob("*/*/done.json")}


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def table(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "tiny" / "cells.csv").sort_values("cell").reset_index(drop=True)


def test_damaged_artifacts_are_rebuilt_with_their_dependants(tiny_run, tmp_path, capsys):
    grid, reference = tiny_run
    results = tmp_path / "results"
    shutil.copytree(reference, results)
    store = Store(results / "store")
    plan = make_plan(load_grid(grid), expand(load_grid(grid)))
    before = markers(results)

    # Three kinds of damage: a bit flipped in a generator's weights, a truncated sample set, a cell's metrics
    # edited by hand.
    gen = next(n for n in plan.by_stage("generator") if n.base_per_class == 5)
    weights = next((store.path(gen.art) / UNET_DIR).glob("*.safetensors"))
    flip_byte(weights, weights.stat().st_size // 2)
    other_samples = next(
        n for n in plan.by_stage("samples") if plan.nodes[n.art.config["generator"]].base_per_class == 10
    )
    samples = store.path(other_samples.art) / SAMPLES
    samples.write_bytes(samples.read_bytes()[:-100])
    real_cell = next(n for n in plan.by_stage("classifier") if "samples" not in n.art.config)
    metrics = store.path(real_cell.art) / METRICS
    metrics.write_text(metrics.read_text().replace('"test_acc": 0.', '"test_acc": 1.'))

    # Before the rerun, the table never shows the edited metrics: the cell is reported, with the path.
    df = collect(plan, store)
    row = df[df["cell_key"] == real_cell.key].iloc[0]
    assert row["status"] == "failed" and str(metrics) in row["error"] and pd.isna(row["test_acc"])

    assert cli.main([str(grid), "--results", str(results), "--quiet"]) == 0
    err = capsys.readouterr().err
    for damaged in (weights, samples, metrics):
        assert str(damaged) in err
    after = markers(results)
    rebuilt = {d for d in before if after[d] != before[d]}
    descendants = {gen.key, other_samples.key, real_cell.key}
    for node in plan.nodes.values():  # everything downstream of a damaged artifact
        if set(node.parents) & descendants:
            descendants.add(node.key)
    assert rebuilt == {store.path(plan.nodes[k].art) for k in descendants}
    # generator + samples + 2 cells + diagnostics; samples + 2 cells + diagnostics; the real cell
    assert len(rebuilt) == 10
    pd.testing.assert_frame_equal(table(results)[RESULT_COLUMNS], table(reference)[RESULT_COLUMNS])
    assert all(store.verify(d) is None for d in after)


def test_a_stage_never_reads_a_damaged_parent(tiny_run, tmp_path):
    """Damage found while loading (after the run's start-up check): the parent is invalidated, this build fails
    with the path, and the next run rebuilds both."""
    grid, reference = tiny_run
    results = tmp_path / "results"
    shutil.copytree(reference, results)
    store = Store(results / "store")
    plan = make_plan(load_grid(grid), expand(load_grid(grid)))
    samples = plan.by_stage("samples")[0]
    gen_dir = store.path(plan.nodes[samples.art.config["generator"]].art)
    flip_byte(gen_dir / GENERATOR_META, 5)
    with pytest.raises(stages.ParentFailed, match=str(gen_dir / GENERATOR_META)):
        stages._parent_dir(store, samples, "generator")
    assert not (gen_dir / DONE).exists() and (gen_dir / INVALIDATED).exists()
