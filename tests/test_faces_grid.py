"""A tiny face grid end to end on the AT&T faces: study.run verifies every cell on the held-out identities, new
identities from mixing extend the head, study.report writes the verification section; a leaking grid is refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from study.report import build as study_report
from study.runner import cli as study_run

GRID = """
name: faces-tiny
dataset: {{name: att, path: "{path}", resolution: 8}}
real: {{base: [2, 4], extra: [2]}}
synthetic: {{volume: [2]}}
generators:
  conditional: &gen
    model: {{preset: tiny}}
    train: {{steps: 20, batch_size: 32, warmup: 5}}
    sample: {{sampler: dpmpp, steps: 3, guidance: 2.0}}
  sm-far: {{<<: *gen, sample: {{sampler: dpmpp, steps: 3, guidance: 2.0, strategy: scoremix, pairs: far, labels: new-class}}}}
classifier: {{arch: study_cnn, width: 4, steps: 20, batch_size: 32, embedding: {{dim: 16, scale: 16.0, margin: 0.2}}}}
analysis: {{metric: verif_auc}}
seeds: [0]
device: cpu
"""


@pytest.mark.slow
def test_tiny_face_grid_end_to_end(shared_data, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(path=shared_data / "att_faces" / "att_faces.npz"))
    assert study_run.main([str(grid), "--results", str(tmp_path / "results"), "--quiet"]) == 0

    # Every cell verifies on the 12 held-out identities.
    cells = pd.read_csv(tmp_path / "results" / "faces-tiny" / "cells.csv")
    assert (cells["status"] == "done").all() and len(cells) == 2 * (1 + 1 + 2)
    assert cells["identity_disjoint"].all() and (cells["n_verif_identities"] == 12).all()
    assert (cells["n_verif_pairs"] == 7140).all() and (cells["n_different"] == 6600).all()
    assert cells["far_resolution"].iloc[0] == pytest.approx(1 / 6600)
    for column in ("verif_auc", "verif_eer", "verif_acc", "tar_at_far_1e-1", "tar_at_far_1e-3", "rank1", "verif_auc_n"):
        assert cells[column].notna().all(), column
    assert cells["test_acc"].isna().all()  # no test split: faces verify instead
    assert (cells["verif_acc_n"] == 7140).all()  # pair accuracy: one binomial trial per pair
    roc = pd.read_csv(tmp_path / "results" / "faces-tiny" / "roc.csv")
    assert set(roc["cell"]) == set(cells["cell"]) and roc["far"].min() == pytest.approx(1 / 6600)

    # Mixed samples are new identities: the head has a row per training identity and per mixed pair.
    mixed = cells[cells["arm"] == "sm-far"]
    assert (mixed["n_pairs"] == 28).all() and (mixed["labels"] == "new-class").all()
    for key in mixed["cell_key"]:
        (d,) = (tmp_path / "results" / "store" / "classifier").glob(f"*__{key[:12]}")
        assert json.loads((d / "metrics.json").read_text())["train"]["num_outputs"] == 28 + 28

    # The report measures beta on the grid's metric and has the verification section.
    out = tmp_path / "report"
    code = study_report.main([str(grid), "--results", str(tmp_path / "results"), "--out", str(out), "--n-boot", "20"])
    assert code == 0
    text = (out / "report.md").read_text()
    assert "## Verification on unseen identities" in text and (out / "fig8_roc.png").exists()
    assert "Measured on verification AUC (`analysis.metric: verif_auc`)" in text
    assert "## Verification AUC vs training-set size" in text
    assert "| sm-far − conditional | all | 2 | 2 |" in text  # head to head: ScoreMix and plain of one generator
    assert "| verification pairs | 7140 |" in text and "12 verification; identity-disjoint in 8 of 8 cells" in text


def test_a_leaking_grid_is_refused_naming_the_identities(shared_data, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    text = GRID.format(path=shared_data / "att_faces" / "att_faces.npz")
    grid.write_text(text.replace("resolution: 8}", "resolution: 8, identities: [s1, s2, s30, s31]}"))
    assert study_run.main([str(grid), "--results", str(tmp_path / "results"), "--quiet"]) == 2
    assert "2 training identities are also verification identities (s30, s31)" in capsys.readouterr().err
