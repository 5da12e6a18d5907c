"""grids/imagenet100.yaml end to end with --smoke on a small ImageFolder tree made here, then its report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from study.report import build as study_report
from study.runner import cli as study_run

REPO = Path(__file__).resolve().parent.parent

GRID = REPO / "grids" / "imagenet100.yaml"
CLASSES = ("n01440764", "n01443537", "n01484850")  # ImageNet-style wnid folder names


def make_imagefolder(root, classes=CLASSES, train=6, val=3, size=(48, 40)) -> None:
    """train/<class>/*.JPEG and val/<class>/*.JPEG: noise with one colour channel raised per class, at a size and
    aspect the loader must resize and centre-crop to the grid's resolution."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, (*size, 3), dtype=np.uint8)
                pixels[..., c % 3] += 150
                Image.fromarray(pixels).save(folder / f"{name}_{i}.JPEG")


@pytest.mark.slow
def test_imagenet_grid_smoke_runs_and_reports(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "data" / "imagenet100")
    monkeypatch.setenv("STUDY_DATA", str(tmp_path / "data"))  # the grid's root: ${STUDY_DATA:-data}/imagenet100
    results = tmp_path / "results"
    assert study_run.main([str(GRID), "--smoke", "--results", str(results), "-q"]) == 0

    cells = pd.read_csv(results / "imagenet100-equivalence" / "cells.csv")
    assert set(cells["arm_kind"]) == {"real-only", "real-extra", "closed"}
    assert (cells["status"] == "done").all()
    assert (cells["n_classes"] == len(CLASSES)).all() and (cells["n_test"] == 3 * len(CLASSES)).all()
    assert cells["test_acc"].between(0, 1).all() and cells["test_nll"].gt(0).all()
    closed = cells[cells["arm_kind"] == "closed"].iloc[0]
    assert closed["n_syn"] == len(CLASSES) * closed["volume_per_class"] > 0  # the generator sampled every class

    out = tmp_path / "report"
    assert study_report.main([str(GRID), "--smoke", "--results", str(results), "--out", str(out), "--n-boot", "0"]) == 0
    md = (out / "report.md").read_text()
    table = md.split("## Per-cell results")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2:7] in ("real-", "close")]
    assert len(rows) == len(cells)
    for line in rows:  # the accuracy column holds a number in [0, 1]
        accuracy = line.split("|")[6].strip().split()[0]
        assert 0.0 <= float(accuracy) <= 1.0, line
