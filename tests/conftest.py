from __future__ import annotations

import os
from pathlib import Path

# Before any test module imports torch (study/__init__.py sets it too, but tests import torch first): spinning
# OpenMP threads made the tests ~15x slower on this shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY_GRID = Path(__file__).resolve().parent / "tiny.yaml"  # the end-to-end grid; its numbers are pinned

# Tests that need one of these fixtures train real models for seconds to minutes: they are marked `slow`, so
# `python -m pytest -m "not slow"` is a fast lane (the default run still runs everything).
SLOW_FIXTURES = {"gen_dir", "tiny_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def shared_data_dir() -> Path | None:
    """`$STUDY_SHARED_DATA`, else `../shared/data` beside the checkout; None when neither exists."""
    for candidate in (os.environ.get("STUDY_SHARED_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real datasets not found: set STUDY_SHARED_DATA or put shared/data beside the checkout")
    return path


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-dataset cache in a temp dir, so tests never read or write the user's ~/.cache."""
    os.environ["STUDY_CACHE"] = str(tmp_path_factory.mktemp("study-cache"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """One uninterrupted `study.run` of tests/tiny.yaml (~45 s of CPU): (grid file, results root). Shared by the
    tests that compare with it; they must not write into it."""
    from study.runner import cli

    tmp = tmp_path_factory.mktemp("tiny-run")
    grid = tmp / "tiny.yaml"
    grid.write_text(TINY_GRID.read_text())
    assert cli.main([str(grid), "--results", str(tmp / "results"), "--quiet"]) == 0
    return grid, tmp / "results"


# --- digits, a tiny generator trained on its 20-per-class base, and a reference judge (shared by modules) ----


@pytest.fixture(scope="session")
def digits():
    from study.data.datasets import load_dataset
    from study.grid import DigitsData

    return load_dataset(DigitsData(name="digits"))


@pytest.fixture(scope="session")
def base(digits):
    """The seed-0 base of 20 images per class."""
    from study.data.datasets import subset_indices

    idx = subset_indices(digits.train.labels, 10, seed=0, start=0, count=20, dataset_key=digits.key)
    return digits.train.subset(idx)


@pytest.fixture(scope="session")
def gen_dir(tmp_path_factory, base):
    """A tiny class-conditional generator trained on `base` (~10 s)."""
    from study.grid import GeneratorTrainSpec, ModelSpec
    from study.models.generator import train_generator

    out = tmp_path_factory.mktemp("generator")
    spec = GeneratorTrainSpec(steps=200, batch_size=64, lr=1e-3, warmup=20)
    train_generator(
        ModelSpec(preset="tiny"), spec, base.images, base.labels, 10, out, seed=0, flip=False, progress=False
    )
    return out


@pytest.fixture(scope="session")
def edm_gen(tmp_path_factory, base):
    """The same tiny network trained as an EDM denoiser (Karras et al. 2022) on `base` (~5 s)."""
    from study.grid import GeneratorTrainSpec, ModelSpec
    from study.models.generator import load_generator, train_generator

    out = tmp_path_factory.mktemp("edm-generator")
    spec = GeneratorTrainSpec(steps=100, batch_size=64, lr=1e-3, warmup=20)
    model = ModelSpec(preset="tiny", prediction="edm")
    train_generator(model, spec, base.images, base.labels, 10, out, seed=0, flip=False, progress=False)
    return load_generator(out, device="cpu")


@pytest.fixture(scope="session")
def gen(gen_dir):
    from study.models.generator import load_generator

    return load_generator(gen_dir, device="cpu")


@pytest.fixture(scope="session")
def reference(digits):
    """A logistic regression on the whole real pool: judges whose class a sample looks like."""
    from sklearn.linear_model import LogisticRegression

    pool = digits.train
    clf = LogisticRegression(max_iter=2000).fit(pool.images.reshape(len(pool), -1).numpy() / 255.0, pool.labels)
    return lambda images: clf.predict_proba(images.reshape(len(images), -1).numpy() / 255.0)
