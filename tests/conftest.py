from __future__ import annotations

import os
from pathlib import Path

# Before any test module imports torch (study/__init__.py sets it too, but tests import torch first): spinning
# OpenMP threads made the tests ~15x slower on this shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


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
