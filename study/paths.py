"""Where study keeps data it did not make: dataset files (`$STUDY_DATA`) and decoded-data caches
(`$STUDY_CACHE`). Torch-free."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_root() -> Path:
    return Path(os.environ.get("STUDY_DATA") or Path.home() / ".cache" / "study" / "data").expanduser()


def default_cache_dir() -> Path:
    return Path(os.environ.get("STUDY_CACHE") or Path.home() / ".cache" / "study" / "decoded").expanduser()
