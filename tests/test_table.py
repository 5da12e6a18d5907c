"""The cells table's one schema (study.table): the simulator writes it, older tables are read into it, the README
documents it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.analysis.equivalence import analyse
from study.analysis.simulate import PlantedArm, simulate_cells
from study.table import COLUMNS, RENAMED, REQUIRED, SCHEMA, TableError, conform, read_cells, upgrade

REPO = Path(__file__).resolve().parent.parent


def test_the_simulator_writes_every_column_with_its_dtype():
    cells = simulate_cells([PlantedArm("closed", beta=0.3), PlantedArm("open", beta=0.1, kind="open")],
                           fail_rate=0.2, seed=1)  # fmt: skip
    assert list(cells.columns) == COLUMNS
    assert {c: str(t) for c, t in cells.dtypes.items()} == {c: s.dtype for c, s in SCHEMA.items()}
    done, failed = cells[cells["status"] == "done"], cells[cells["status"] == "failed"]
    assert (cells["n_classes"] == 10).all() and len(failed) > 0 and failed["n_test"].isna().all()
    closed, opened = done[done["arm_kind"] == "closed"], done[done["arm_kind"] == "open"]
    assert (closed["gen_train_images"] == closed["n_base"]).all()  # a closed-set generator saw the base set
    assert closed["gen_train_data"].str.fullmatch(r"simulated:train\[\d+\]").all()
    assert opened["gen_train_images"].isna().all() and opened["gen_train_data"].isna().all()
    assert set(done.loc[done["arm_kind"].str.startswith("real"), "labels"]) == {"none"}
    assert set(closed["labels"]) == {"class"}
    # What a simulated study does not have is empty, never made up.
    for col in ("test_auc", "test_nll", "test_ece", "seconds", "cond_acc", "pair_weight_i", "pair_weight_j",
                "pair_distance", "source_mass", "cka", "n_pairs"):  # fmt: skip
        assert cells[col].isna().all(), col
    # Its generators are named as the runner builds them (closed: per seed and base; open: per seed, every base).
    syn = cells[cells["arm_kind"].isin(["closed", "open"])]
    assert syn["generator_key"].notna().all() and (syn["samples_key"] == syn["generator_key"]).all()
    assert cells.loc[~cells.index.isin(syn.index), "generator_key"].isna().all()
    assert syn.groupby("arm")["generator_key"].nunique().to_dict() == {"closed": 9, "open": 3}


def test_an_older_table_is_read_with_todays_names(tmp_path):
    """A table from before the renames (mix_a, mix_b) and before optional columns existed still reads, and the
    analysis gives the same answer on it."""
    cells = simulate_cells([PlantedArm("closed", beta=0.3)], seed=2)
    old = cells.rename(columns={new: old for old, new in RENAMED.items()}).drop(columns=["cka", "n_classes", "mix"])
    old.loc[old["arm"] == "closed", "mix_a"] = 0.7
    old.to_csv(tmp_path / "cells.csv", index=False)
    back = read_cells(tmp_path / "cells.csv")
    assert set(COLUMNS) <= set(back.columns) and "mix_a" not in back.columns
    assert (back.loc[back["arm"] == "closed", "pair_weight_i"] == 0.7).all()
    assert back["cka"].isna().all() and back["n_classes"].isna().all()
    new, older = analyse(cells, n_boot=0, by_base=False), analyse(back, n_boot=0, by_base=False)
    pd.testing.assert_frame_equal(new.fit[["arm", "beta", "beta_lo", "beta_hi"]],
                                  older.fit[["arm", "beta", "beta_lo", "beta_hi"]])  # fmt: skip
    assert any("no `mix` column" in note for note in older.notes)
    assert (upgrade(old.assign(extra="x"))["extra"] == "x").all()  # columns the schema does not know are kept


def test_bad_tables_name_the_file_and_what_was_expected(tmp_path):
    path = tmp_path / "cells.csv"
    pd.DataFrame({"cell": ["a"], "seed": [0]}).to_csv(path, index=False)
    with pytest.raises(TableError, match=rf"{re.escape(str(path))}: missing columns \['dataset', 'base_per_class'"):
        read_cells(path)
    simulate_cells(seed=0).assign(status="running").to_csv(path, index=False)
    with pytest.raises(TableError, match=r"status: unexpected values \['running'\]"):
        read_cells(path)
    with pytest.raises((TypeError, ValueError)):
        conform(pd.DataFrame({"n_test": ["many"]}))  # the writers' values are checked, not silently dropped


def test_parquet_and_csv_read_alike(tmp_path):
    cells = simulate_cells(seed=4)
    cells.to_csv(tmp_path / "cells.csv", index=False)
    cells.to_parquet(tmp_path / "cells.parquet", index=False)
    a, b = read_cells(tmp_path / "cells.csv"), read_cells(tmp_path / "cells.parquet")
    np.testing.assert_allclose(a["test_acc"].to_numpy(float), b["test_acc"].to_numpy(float))
    assert list(a.columns) == list(b.columns) == COLUMNS


def test_readme_documents_every_column():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### cells.csv columns")[1].split("\n## ")[0]
    documented = re.findall(r"^\| `([\w-]+)` \|", section, flags=re.M)
    assert documented == COLUMNS
    for name in REQUIRED:
        assert f"| `{name}` | " in section
