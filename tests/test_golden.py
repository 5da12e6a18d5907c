"""Golden numbers, and the analysis and report on a real run: the tiny digits grid (tests/tiny.yaml) run by
study.run, its test accuracies and cache keys pinned; study.report and study.equivalence read its table.

The pinned values move only when seeding, subset order, cache keys or training change. When that is on
purpose, bump SCHEMA_VERSION in study/grid/schema.py (the keys change with it), set PINNED_SCHEMA_VERSION and
re-pin the values below from the failure messages (each one prints what it got). Keys, subset indices and
seeds are exact on every machine. Test accuracies are compared within TOLERANCE test images of the pinned
counts: another x86 CPU, or another number of torch threads, sums floats in another order, which moves a real
cell's count by an image and a synthetic cell's by more (measured, beside TOLERANCE).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.grid import SCHEMA_VERSION
from study.keys import canonical_json, derive_seed, key_of

PINNED_SCHEMA_VERSION = 3
N_TEST = 540  # digits' fixed test split

# Test images classified correctly per cell (test_acc x n_test), pinned on a 2-core Xeon (AVX-512, 2 torch threads).
CORRECT = {
    "real-only-base5-s0": 465, "real-only-base10-s0": 498, "real-extra-base5-extra5-s0": 498,
    "real-extra-base10-extra5-s0": 517, "closed-base5-vol5-s0": 451, "closed-base5-vol10-s0": 449,
    "closed-base10-vol5-s0": 477, "closed-base10-vol10-s0": 490,
}  # fmt: skip
# Tolerances, in test images, from the same grid run with 1 and 2 torch threads and with oneDNN/MKL held to
# AVX2 kernels (at schema versions 1 and 2): real cells moved by at most 1 image. Synthetic cells moved by up
# to 8 (6 at version 2): the 30-step generator draws noise-like images, the runs' sample sets differed in 2 of
# 6,400 pixels by one grey level, and a classifier trained on 100 such images beside 50 real ones turns that into
# a few test images.
TOLERANCE = {"real-only": 2, "real-extra": 2, "closed": 12}

# The first 16 hex digits of each cell's classifier, generator and sample-set keys (the table's *_key columns).
KEYS = {
    "real-only-base5-s0": ["4bdb221a0f396ed1"],
    "real-only-base10-s0": ["26ad176d00ff03dd"],  # the same classifier as real-extra-base5-extra5: 10 per class
    "real-extra-base5-extra5-s0": ["26ad176d00ff03dd"],
    "real-extra-base10-extra5-s0": ["45452407d10bdb95"],
    "closed-base5-vol5-s0": ["8f67748722e677ff", "4c1afa2b54ac81ad", "6b8794e17a2db481"],
    "closed-base5-vol10-s0": ["f920cfc66c607d64", "4c1afa2b54ac81ad", "6b8794e17a2db481"],
    "closed-base10-vol5-s0": ["ed48f3d68a62071d", "84500c5759406c96", "6c040244e24b293b"],
    "closed-base10-vol10-s0": ["4c37a982bd3557e3", "84500c5759406c96", "6c040244e24b293b"],
}

# Training-pool indices of the first two images per class in the seed's class order (digits).
SUBSET = {
    0: [119, 445, 128, 78, 407, 426, 233, 404, 877, 147, 373, 1201, 1235, 515, 197, 513, 584, 562, 676, 297],
    1: [1048, 576, 649, 323, 1013, 639, 1064, 484, 347, 1216, 326, 242, 61, 374, 898, 375, 363, 283, 462, 1011],
}
DIGITS_KEY = "21b7a0f93ae2a0962ab3639a6d5be764c0dcf340ee8182b001d020bdcd4069fd"

RERUN = "python -m pytest tests/test_golden.py"


def pinned(what: str, got, expected) -> None:
    assert got == expected, (
        f"{what} changed: pinned {expected!r}, got {got!r}. Seeding, subset order or cache keys changed. If that "
        f"is on purpose, bump SCHEMA_VERSION in study/grid/schema.py and re-pin the values in tests/test_golden.py "
        f"(`{RERUN}` prints each one)."
    )


def test_pinned_at_this_schema_version():
    assert SCHEMA_VERSION == PINNED_SCHEMA_VERSION, (
        f"SCHEMA_VERSION is {SCHEMA_VERSION} but the golden values in tests/test_golden.py were pinned at "
        f"{PINNED_SCHEMA_VERSION}: re-pin them (`{RERUN}`: each failure prints the values it got) and set "
        f"PINNED_SCHEMA_VERSION = {SCHEMA_VERSION}."
    )


def test_keys_and_derived_seeds():
    config = {"stage": "generator", "steps": 30, "lr": 1.0, "sizes": [5, 10], "note": None}
    pinned(
        "canonical_json", canonical_json(config), '{"lr":1,"note":null,"sizes":[5,10],"stage":"generator","steps":30}'
    )
    pinned("key_of", key_of(config), "a55b324eae971ce0f22eea7f4b85ea2739761e4f02f93a7bd2d0d0e6546ad020")
    pinned("derive_seed", derive_seed(0, "generator", key_of(config)), 6325470725021214677)
    pinned("derive_seed", derive_seed(1, "subset-order", "digits"), 2737169368285227064)


def test_subset_order(digits):
    from study.data.datasets import subset_indices

    pinned("digits dataset key", digits.key, DIGITS_KEY)
    for seed in (0, 1):
        idx = subset_indices(digits.train.labels, 10, seed=seed, start=0, count=2, dataset_key=digits.key)
        pinned(f"seed {seed}: the first 2 training images per class", idx.tolist(), SUBSET[seed])
        bigger = subset_indices(digits.train.labels, 10, seed=seed, start=0, count=5, dataset_key=digits.key)
        assert bigger.reshape(10, 5)[:, :2].ravel().tolist() == idx.tolist()  # nested: a prefix per class


def cells(tiny_run) -> pd.DataFrame:
    _, results = tiny_run
    return pd.read_csv(results / "tiny" / "cells.csv").set_index("cell").sort_index()


def test_tiny_grid_accuracies(tiny_run):
    df = cells(tiny_run)
    assert (df["status"] == "done").all() and (df["n_test"] == N_TEST).all()
    correct = (df["test_acc"] * df["n_test"]).round().astype(int).to_dict()
    pinned("the tiny grid's cells", sorted(correct), sorted(CORRECT))
    off = {
        cell: {"got": n, "pinned": CORRECT[cell], "tolerance": TOLERANCE[df.loc[cell, "arm_kind"]]}
        for cell, n in correct.items()
        if abs(n - CORRECT[cell]) > TOLERANCE[df.loc[cell, "arm_kind"]]
    }
    assert not off, (
        f"test images classified correctly moved beyond the tolerance: {off}; every cell now: {correct}. Training, "
        "sampling, seeding or data order changed. If that is on purpose, bump SCHEMA_VERSION in "
        "study/grid/schema.py and re-pin CORRECT in tests/test_golden.py."
    )


def test_tiny_grid_keys(tiny_run):
    df = cells(tiny_run)
    keys = {cell: [v[:16] for v in row if isinstance(v, str)] for cell, row in
            df[["cell_key", "generator_key", "samples_key"]].iterrows()}  # fmt: skip
    pinned("the tiny grid's artifact keys", keys, KEYS)


# --- the analysis and the report on the tiny grid's table ----------------------------------------------------

NUMBER = re.compile(r"−?-?(?:∞|\d[\d,]*(?:\.\d*)?(?:e[+-]?\d+)?)")


def shown(text: str) -> list[float]:
    """The numbers a report cell shows, e.g. "-0.703 [-0.884, -0.239]" -> [-0.703, -0.884, -0.239]."""
    return [float(t.replace("−", "-").replace(",", "").replace("∞", "inf")) for t in NUMBER.findall(text)]


def ci(value: float, lo: float = np.nan, hi: float = np.nan) -> list[float]:
    """The numbers a report cell shows for value [lo, hi]: none when the value is missing, no interval when
    neither end is finite."""
    if not np.isfinite(value):
        return []
    return [value, lo, hi] if np.isfinite(lo) or np.isfinite(hi) else [value]


def k_shown(r) -> list[float]:
    """The numbers the report's k column shows: k [lo, hi] for a gain, the bound k >= 1/beta_hi (k_lo) where
    there is no measurable gain but beta_hi > 0, else none."""
    if r.verdict == "gain":
        return ci(r.k, r.k_lo, r.k_hi)
    if r.verdict == "no measurable gain" and np.isfinite(r.k_lo) and r.k_lo > 0:
        return [r.k_lo]
    return []


def shows(text: str, expected: list[float]) -> bool:
    """`text` shows the `expected` numbers to 3 significant digits (or — when there are none)."""
    if not expected:
        return text.strip() == "—"
    got = shown(text)
    return len(got) == len(expected) and all(
        g == e if np.isinf(e) else math.isclose(g, e, rel_tol=6e-3, abs_tol=1e-12)
        for g, e in zip(got, expected, strict=True)
    )


def md_rows(md: str, first_columns: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with `first_columns`, as {header: cell text}."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_columns))
    header = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


@pytest.fixture(scope="module")
def reported(tiny_run, tmp_path_factory):
    """study.report on a copy of the tiny grid's results: (results dir, report.md text)."""
    from study.report.build import main as report

    root = tmp_path_factory.mktemp("reported")
    results = shutil.copytree(tiny_run[1] / "tiny", root / "tiny")
    assert report([str(results), "--out", str(root / "report"), "--n-boot", "50"]) == 0
    return results, (root / "report" / "report.md").read_text()


def test_report_shows_the_numbers_of_equivalence_csv(reported):
    results, md = reported
    eq = pd.read_csv(results / "equivalence.csv")
    assert len(eq) == 4 and eq["beta"].notna().all()  # one row per synthetic (arm, base, volume)
    rows = {(r["arm"], int(r["base/class"]), int(r["synthetic/class"])): r
            for r in md_rows(md, "| arm | base/class | synthetic/class |")}  # fmt: skip
    for r in eq.itertuples():
        shown_row = rows[(r.arm, r.base_per_class, r.volume_per_class)]
        assert shows(shown_row["β"], ci(r.beta, r.beta_lo, r.beta_hi)), (shown_row, r)
        boot = [r.beta_lo_boot, r.beta_hi_boot]
        assert shows(shown_row["β bootstrap"], boot if np.isfinite(boot).all() else []), (shown_row, r)
        assert shows(shown_row["n_eff (images)"], ci(r.n_eff, r.n_eff_lo, r.n_eff_hi)), (shown_row, r)
        assert shows(shown_row["k"], k_shown(r)), (shown_row, r)
        assert shown_row["verdict"].startswith(r.verdict)


def test_report_headline_shows_the_numbers_of_equivalence_fit_csv(reported):
    results, md = reported
    fit = pd.read_csv(results / "equivalence_fit.csv")
    headline = md.split("## Headline")[1].split("\n## ")[0]
    for r in fit.itertuples():
        line = next(line for line in headline.splitlines() if line.startswith(f"- **{r.arm}**"))
        if r.verdict == "gain":
            assert shows(re.search(r"k = (.*?) synthetic images", line)[1], ci(r.k, r.k_lo, r.k_hi)), (line, r)
        if r.verdict in ("gain", "hurts", "no measurable gain"):
            assert shows(re.search(r"β = (.*?) real images", line)[1], ci(r.beta, r.beta_lo, r.beta_hi)), (line, r)
        else:
            assert "not estimable" in line and not np.isfinite(r.beta), (line, r)


def analyse(cells: pd.DataFrame, directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`python -m study.equivalence DIR --write` (no bootstrap: deterministic) on `cells`."""
    from study.equivalence import main as equivalence

    directory.mkdir(parents=True)
    cells.to_csv(directory / "cells.csv", index=False)
    assert equivalence([str(directory), "--write", "--n-boot", "0"]) == 0
    return pd.read_csv(directory / "equivalence.csv"), pd.read_csv(directory / "equivalence_fit.csv")


def test_two_dataset_classifier_groups_are_analysed_apart(tiny_run, tmp_path):
    """One table holding two (dataset, classifier) groups: the tiny grid's cells, and the same cells as another
    classifier with other accuracies. Each group's rows equal what its table alone gives."""
    a = pd.read_csv(tiny_run[1] / "tiny" / "cells.csv")
    b = a.assign(cell=a["cell"] + "-b", classifier="study_cnn-b", test_acc=a["test_acc"] ** 1.5)
    both = analyse(pd.concat([a, b], ignore_index=True), tmp_path / "both")
    for name, group in (("study_cnn", a), ("study_cnn-b", b)):
        alone = analyse(group, tmp_path / name)
        for joint, single in zip(both, alone, strict=True):
            assert set(joint["classifier"]) == {"study_cnn", "study_cnn-b"}
            mine = joint[joint["classifier"] == name].reset_index(drop=True)
            pd.testing.assert_frame_equal(mine, single, check_exact=False, rtol=1e-9)
