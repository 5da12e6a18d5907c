"""The report on simulated results directories (study.analysis.simulate tables + a tiny fake artifact store): every
section and figure, non-blank PNGs, the incomplete-grid and smoke banners, real-only and one-seed grids,
published constants, provenance sums, bad input, and no torch import anywhere on the way."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from study.analysis.equivalence import main as equivalence_main
from study.analysis.estimators import paired_gains, summarise
from study.analysis.simulate import PlantedArm, simulate_cells
from study.report import build as report
from study.report import plots
from study.report.inputs import _is_smoke
from study.report.markdown import fmt, fmt_ci, md_table

REPO = Path(__file__).resolve().parent.parent
N_BOOT = 20  # the bootstrap's cost dominates; the report only needs its columns
SECTIONS = [
    "## Headline", "## Accuracy vs training-set size", "## Exchange rate: synthetic images per real image",
    "## Equivalence curves and the closed form", "## Strategy comparison", "## Synthetic samples",
    "## Generator diagnostics vs downstream gain", "## Why did synthetic data help or not?", "## Per-cell results", "## Failed cells", "## Provenance",
    "## Methods",
]  # fmt: skip
BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "diffusers", "timm"):
            raise ImportError(f"{name} must not be imported by the report")
sys.meta_path.insert(0, Block())
from study.report import build as report
code = report.main(sys.argv[1:])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "diffusers", "timm"))
print("leaked:", leaked)
sys.exit(code)
"""


def _key(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def simulated_cells(arms=None, fail_rate=0.03, **kw) -> pd.DataFrame:
    """A study.analysis.simulate table plus the columns the runner adds (classes, keys, diagnostic). closed and
    closed-30 share sample sets, as arms differing only in mixing do in a real plan."""
    arms = arms if arms is not None else [
        PlantedArm("closed", beta=0.3), PlantedArm("closed-30", beta=0.1, mix="fraction=0.3"),
        PlantedArm("open", beta=-0.05, kind="open"),
    ]  # fmt: skip
    opts = {"bases": (5, 10, 20), "extras": (5, 10, 20, 40), "volumes": (10, 20, 40, 80), "n_test": 540,
            "seed_sd": 0.1, "cell_sd": 0.05} | kw  # fmt: skip
    cells = simulate_cells(arms, fail_rate=fail_rate, **opts)
    rng = np.random.default_rng(1)
    syn = cells["arm_kind"].isin(["closed", "open"])
    share = cells["arm"].str.replace("-30", "")
    cells["n_classes"] = 10
    cells["test_ece"] = np.where(cells["status"] == "done", rng.uniform(0.02, 0.08, len(cells)), np.nan)
    cells["cell_key"] = [_key("classifier", c) for c in cells["cell"]]
    for col, stage in (("samples_key", "samples"), ("generator_key", "generator")):
        cells[col] = [_key(stage, a, b, s) if y else None
                      for a, b, s, y in zip(share, cells["base_per_class"], cells["seed"], syn, strict=True)]  # fmt: skip
    diag = {k: rng.uniform(0.5, 0.95) for k in cells["samples_key"].dropna().unique()}
    cells["cond_acc"] = cells["samples_key"].map(diag)
    # Sample-set diagnostics (one set per base and seed here): near-copies planted in the open arm's sets only.
    cells["diagnostics_key"] = cells["samples_key"]
    keys = cells[["samples_key"]].assign(share=share).dropna().drop_duplicates("samples_key")
    planted = dict(zip(keys["samples_key"], np.where(keys["share"] == "open", 0.8, 0.1), strict=True))
    for col in ("mem_frac", "mem_ratio", "mem_frac_feat", "fd", "kd", "precision", "recall", "density", "coverage",
                "domain_auc", "cas"):  # fmt: skip
        values = {k: rng.uniform(0.3, 0.7) + (planted[k] if col == "mem_frac" else 0) for k in planted}
        cells[col] = cells["diagnostics_key"].map(values)
    return cells


def _artifact(store: Path, stage: str, key: str, seconds: float, config: dict | None = None, done: bool = True) -> Path:
    d = store / stage / f"{stage}-x__{key[:12]}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config or {}))
    if done:
        (d / "provenance.json").write_text(json.dumps({
            "git_commit": "0123456789abcdef", "git_dirty": stage == "generator", "device": "cpu", "host": "testhost",
            "packages": {"torch": "2.14.1", "numpy": "2.4.6"}, "seconds": seconds,
        }))  # fmt: skip
        (d / "done.json").write_text(json.dumps({"key": key, "stage": stage, "seconds": seconds}))
    return d


def write_results(
    root: Path, cells: pd.DataFrame, name: str = "sim", missing: int = 0, grid: dict | None = None
) -> Path:
    """results/<name>/{cells.csv, plan.json} and results/store with config, provenance, done and previews."""
    store, rng = root / "store", np.random.default_rng(2)
    ref = _key("reference")
    _artifact(store, "reference", ref, 7.0)
    for key, status in zip(cells["cell_key"], cells["status"], strict=True):
        _artifact(store, "classifier", key, 2.0, done=status == "done")
    for key in cells["generator_key"].dropna().unique():
        _artifact(store, "generator", key, 5.0)
    for key in cells["samples_key"].dropna().unique():
        d = _artifact(store, "samples", key, 3.0, {"reference": ref})
        digits = (rng.random((10 * 8, 8 * 8)) * 255).astype(np.uint8)  # 10 classes x 8 samples of 8x8
        Image.fromarray(digits).resize((256, 320), Image.NEAREST).save(d / "preview.png")
    for key in cells["diagnostics_key"].dropna().unique() if "diagnostics_key" in cells else []:
        d = _artifact(store, "diagnostics", key, 1.0)
        pairs = (rng.random((10 * 8, 8 * 16)) * 255).astype(np.uint8)  # 10 classes x 8 (sample, nearest) pairs
        Image.fromarray(pairs).resize((512, 320), Image.NEAREST).save(d / "nearest.png")
    results = root / name
    results.mkdir(parents=True, exist_ok=True)
    cells.to_csv(results / "cells.csv", index=False)
    plan = {"name": name, "cells": len(cells) + missing, "done": int((cells["status"] == "done").sum()),
            "failed": int((cells["status"] == "failed").sum()), "store": str(store.resolve()),
            "grid": grid or {"name": name, "dataset": {"name": "digits"}, "generators": {}}}  # fmt: skip
    (results / "plan.json").write_text(json.dumps(plan))
    return results


def run_blocked(args: list[str]) -> subprocess.CompletedProcess:
    """`python -m study.report ARGS` in a fresh interpreter where importing torch (or its family) fails."""
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The main simulated study (3 arms, 3 bases, 3 seeds, a few failed cells, 6 cells not run yet), reported
    once in a subprocess with torch unimportable."""
    root = tmp_path_factory.mktemp("full")
    cells = simulated_cells()
    results = write_results(root / "results", cells, missing=6)
    out = root / "report"
    proc = run_blocked([str(results), "--out", str(out), "--n-boot", str(N_BOOT)])
    assert proc.returncode == 0, proc.stderr
    return cells, results, out, proc


def test_runs_without_torch(full):
    *_, proc = full
    assert "leaked: []" in proc.stdout
    assert "report:" in proc.stdout


def test_every_section_and_figure(full):
    cells, results, out, _ = full
    md = (out / "report.md").read_text()
    for heading in SECTIONS:
        assert heading in md, heading
    for name in report.FIGURES.values():
        assert (out / name).exists(), name
        assert f"]({name})" in md, name
    assert (results / "equivalence.csv").exists() and (results / "equivalence_fit.csv").exists()
    fit = pd.read_csv(results / "equivalence_fit.csv")
    assert set(fit["arm"]) == {"closed", "closed-30", "open"}


def test_figures_open_and_are_not_blank(full):
    *_, out, _ = full
    for name in report.FIGURES.values():
        with Image.open(out / name) as im:
            assert min(im.size) > 300, (name, im.size)
            pixels = np.asarray(im.convert("L"), dtype=float)
        assert pixels.std() > 15, (name, pixels.std())  # a blank or single-colour canvas has std ~ 0
        assert (pixels < 100).mean() > 0.005, name  # some dark ink: text, axes, markers


def test_incomplete_grid_banner_and_failed_cells(full):
    cells, _, out, _ = full
    md = (out / "report.md").read_text()
    n_done, n_failed = int((cells["status"] == "done").sum()), int((cells["status"] == "failed").sum())
    assert n_failed > 0  # the fixture's fail_rate must produce failures for this test to mean anything
    assert f"**Incomplete grid:** 6 of {len(cells) + 6} cells are missing" in md
    assert f"{n_done} done, {n_failed} failed" in md
    failed_section = md.split("## Failed cells")[1].split("## Provenance")[0]
    for cell in cells.loc[cells["status"] == "failed", "cell"]:
        assert cell in failed_section
    assert "simulated failure" in failed_section


def test_headline_recovers_the_planted_rates(full):
    *_, out, _ = full
    headline = (out / "report.md").read_text().split("## Headline")[1].split("##")[0]
    assert "**closed**: **k = " in headline and "synthetic images per real image" in headline
    assert "**open**: **hurts**" in headline  # planted beta = -0.05


def test_per_cell_table_has_n_and_intervals(full):
    cells, _, out, _ = full
    table = (out / "report.md").read_text().split("## Per-cell results")[1].split("## Failed cells")[0]
    done = cells[cells["status"] == "done"]
    first = done[(done["arm"] == "real-only") & (done["base_per_class"] == 20)]
    row = next(line for line in table.splitlines() if line.startswith("| real-only | 20 |"))
    assert f"| {len(first)} |" in row
    assert f"{first['test_acc'].mean():.3f} [" in row  # mean with its interval


def test_provenance_counts_each_artifact_once(full):
    cells, _, out, _ = full
    section = (out / "report.md").read_text().split("## Provenance")[1].split("## Methods")[0]
    n_samples = cells["samples_key"].nunique()
    n_gen = cells["generator_key"].nunique()
    n_clf = cells["cell_key"].nunique()
    n_clf_done = cells.loc[cells["status"] == "done", "cell_key"].nunique()
    assert f"| samples | {n_samples} | {n_samples} | {3.0 * n_samples:,.1f} |" in section
    assert f"| generator | {n_gen} | {n_gen} | {5.0 * n_gen:,.1f} |" in section
    assert f"| classifier | {n_clf} | {n_clf_done} | {2.0 * n_clf_done:,.1f} |" in section
    assert "| reference | 1 | 1 | 7.0 |" in section
    n_diag = cells["diagnostics_key"].nunique()
    assert f"| diagnostics | {n_diag} | {n_diag} | {1.0 * n_diag:,.1f} |" in section
    assert "`0123456789ab` (dirty tree)" in section and "| torch | 2.14.1 |" in section


def test_diagnostics_section_names_the_planted_separator(full):
    cells, _, out, _ = full
    md = (out / "report.md").read_text()
    section = md.split("## Why did synthetic data help or not?")[1].split("## Per-cell results")[0]
    done = cells[(cells["status"] == "done") & cells["diagnostics_key"].notna()]
    n_sets = done["diagnostics_key"].nunique()  # one point per sample set, not one per cell
    assert f"over {n_sets} sample sets" in section and n_sets < len(done)
    open_line = next(line for line in section.splitlines() if line.startswith("- **open**"))
    assert "did not help" in open_line and "near-copy share (pixels)" in open_line  # from the planted numbers
    assert "rank separation 1.00" in open_line or "rank separation 0.00" in open_line
    closed_line = next(line for line in section.splitlines() if line.startswith("- **closed**"))
    assert "helped" in closed_line and "open" in closed_line
    assert "| closed = closed-30 | 5 |" in section  # the table per arm (arms sharing sets joined) and base
    assert "most-memorised arm (open" in md.split("## Synthetic samples")[1]  # fig5: its nearest-image row


def test_complete_grid_has_no_banner_and_a_grid_file_finds_its_results(tmp_path):
    cells = simulated_cells(fail_rate=0.0, bases=(5, 10), extras=(5,), volumes=(10, 20), seeds=(0, 1))
    write_results(tmp_path / "results", cells, name="tiny")
    grid = tmp_path / "tiny.yaml"
    grid.write_text("name: tiny\ndataset: {name: digits}\nreal: {base: [5, 10]}\nseeds: [0, 1]\n")
    assert report.main([str(grid), "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                        "--n-boot", "0"]) == 0  # fmt: skip
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Incomplete grid" not in md and "failed cell" not in md.split("## Headline")[0]
    assert "No cell failed." in md


def test_real_arms_only(tmp_path):
    cells = simulated_cells(arms=[], fail_rate=0.0, extras=(5, 10))
    results = write_results(tmp_path / "results", cells)
    path = report.write_report(report.locate(results), tmp_path / "out", n_boot=0)
    md = path.read_text()
    assert "real arms only" in md
    assert (tmp_path / "out" / report.FIGURES["accuracy"]).exists()
    for key in ("rate", "curves", "strategies", "samples", "diagnostics"):
        assert not (tmp_path / "out" / report.FIGURES[key]).exists()
    for heading in ("## Per-cell results", "## Failed cells", "## Provenance", "## Methods"):
        assert heading in md


def test_smoke_run_one_seed_one_base(tmp_path):
    """A --smoke table: one base, one seed, one volume. The report still writes every applicable part, says it
    is a smoke run, and gives test-set intervals flagged as such."""
    cells = simulated_cells(arms=[PlantedArm("closed", beta=0.3)], fail_rate=0.0, bases=(5,), extras=(5,),
                            volumes=(5,), seeds=(0,))  # fmt: skip
    smoke = {"real": {"base": [5], "extra": [5]}, "seeds": [0]}
    grid = {"name": "sim", "real": {"base": [5], "extra": [5]}, "seeds": [0], "smoke": smoke, "generators": {}}
    results = write_results(tmp_path / "results", cells, grid=grid)
    md = report.write_report(report.locate(results), tmp_path / "out", n_boot=N_BOOT).read_text()
    assert "**Smoke run:**" in md
    assert "†" in md  # one seed: the Wilson interval of the test set, flagged
    for key in ("accuracy", "strategies", "samples"):
        assert (tmp_path / "out" / report.FIGURES[key]).exists(), key


def test_not_smoke_when_the_grid_is_the_full_one():
    grid = {"real": {"base": [5, 10]}, "seeds": [0, 1], "smoke": {"real": {"base": [5]}, "seeds": [0]}}
    assert not _is_smoke({"grid": grid})
    assert _is_smoke({"grid": {**grid, "real": {"base": [5]}, "seeds": [0]}})


PUBLISHED_CASES = {  # grid name, dataset options, analysis block -> the published c2 of closed and open arms
    "cifar10-like npz": ("cifar10-equivalence", {"name": "npz", "path": "/data/cifar10_subset.npz"},
                         {"published": "cifar10"}, {"closed": 2.53, "open": 2.93}),
    "imagenet100-like image folder": ("imagenet100-equivalence", {"name": "imagefolder", "root": "/data/imagenet100"},
                                      {"published": "imagenet100"}, {"closed": 37.84, "open": 1.68}),
    "none (named like CIFAR-10, not said)": ("cifar10-equivalence", {"name": "npz", "path": "/data/cifar10.npz"},
                                             None, {"closed": np.nan, "open": np.nan}),
}  # fmt: skip


@pytest.mark.parametrize("case", PUBLISHED_CASES)
def test_analysis_and_report_agree_on_the_published_constants(tmp_path, case):
    """`python -m study.equivalence` and `python -m study.report` on one results directory report the same
    published c2 (from the grid's analysis.published, one matcher): a CIFAR-10 npz, an ImageNet-100 image
    folder, and a study that names no published setting (whatever its name says)."""
    name, dataset, analysis, expected = PUBLISHED_CASES[case]
    arms = [PlantedArm("closed", beta=0.3), PlantedArm("open", beta=0.1, kind="open")]
    cells = simulated_cells(arms=arms, fail_rate=0.0, bases=(5, 10), extras=(5, 10), volumes=(5, 10), seeds=(0, 1),
                            dataset=dataset["name"])  # fmt: skip
    grid = {"name": name, "dataset": dataset, "generators": {}} | ({"analysis": analysis} if analysis else {})
    results = write_results(tmp_path / "results", cells, name=name, grid=grid)

    assert equivalence_main([str(results), "--n-boot", "0", "--write"]) == 0
    from_analysis = pd.read_csv(results / "equivalence_fit.csv").set_index("arm")
    md = report.write_report(report.locate(results), tmp_path / "out", n_boot=0).read_text()
    from_report = pd.read_csv(results / "equivalence_fit.csv").set_index("arm")
    table = md.split("Fitted closed-form constants")[1].split("\n\n")[1]
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    for arm, c2 in expected.items():
        np.testing.assert_equal(from_analysis.loc[arm, "c2_published"], c2)
        np.testing.assert_equal(from_report.loc[arm, "c2_published"], c2)
        published = rows[arm].split(" | ")[-2]
        assert published == "—" if np.isnan(c2) else published.startswith(f"{c2:g} ("), (arm, rows[arm])
    if analysis:
        paper = {"cifar10": "CIFAR-10", "imagenet100": "ImageNet-100"}[analysis["published"]]
        assert f"published c2 ({paper})" in table and f"matched to {paper} by the grid's analysis.published" in md
        assert (from_analysis["published"] == paper).all()
    else:
        assert "No published constants for this dataset" in md


def test_equivalence_cli_analyses_the_grids_metric(tmp_path, capsys):
    """`python -m study.equivalence` reads plan.json's analysis.metric as the report does: with test_auc, a
    group's acc is its pooled AUC over test_auc_n trials; cells without test_auc_n are named, exit 2."""
    cells = simulated_cells(arms=[PlantedArm("closed", beta=0.3)], fail_rate=0.0, bases=(5, 10), extras=(5, 10),
                            volumes=(5, 10), seeds=(0, 1))  # fmt: skip
    cells = cells.assign(test_auc=0.5 + cells["test_acc"] / 2, test_auc_n=400.0)
    grid = {"name": "sim", "dataset": {"name": "digits"}, "generators": {}, "analysis": {"metric": "test_auc"}}
    results = write_results(tmp_path / "results", cells, grid=grid)
    assert equivalence_main([str(results), "--n-boot", "0", "--write"]) == 0
    assert "Measured on test AUC (analysis.metric: test_auc)" in capsys.readouterr().out
    eq = pd.read_csv(results / "equivalence.csv")
    keys = ["arm", "base_per_class", "volume_per_class"]
    auc = cells[cells["arm"] == "closed"].groupby(keys)["test_auc"].mean()
    np.testing.assert_allclose(eq.set_index(keys)["acc"].loc[auc.index], auc, atol=1 / 800)  # y = round(400 A)
    assert (eq["n_test"] == 400 * eq["n_seeds"]).all()
    md = report.write_report(report.locate(results), tmp_path / "out", n_boot=0).read_text()
    assert "Measured on test AUC (`analysis.metric: test_auc`)" in md and "## Test AUC vs training-set size" in md
    per_cell = md.split("## Per-cell results")[1].split("\n## ")[0]
    assert "| accuracy | balanced acc. | AUC |" in per_cell  # the cells as measured, accuracy included

    cells.loc[cells.index[:3], "test_auc_n"] = np.nan  # cached cells computed before the column existed
    results = write_results(tmp_path / "mixed", cells, grid=grid)
    assert equivalence_main([str(results), "--n-boot", "0"]) == 2
    assert "3 (e.g. " in (err := capsys.readouterr().err) and "computed before the column test_auc_n existed" in err


def test_a_grid_file_names_the_published_setting_of_its_results(tmp_path):
    """A report from a grid file reads the file's own `analysis:` block (plan.json may predate it)."""
    cells = simulated_cells(arms=[PlantedArm("closed", c2=2.5)], fail_rate=0.0, bases=(5, 10), extras=(5, 10),
                            volumes=(5, 10, 20), seeds=(0,), dataset="npz")  # fmt: skip
    write_results(tmp_path / "results", cells, name="tiny", grid={"name": "tiny", "generators": {}})
    grid = tmp_path / "tiny.yaml"
    grid.write_text("name: tiny\ndataset: {name: npz, path: x.npz}\nreal: {base: [5, 10]}\nseeds: [0]\n"
                    "analysis: {published: cifar10}\n")  # fmt: skip
    res = report.locate(grid, tmp_path / "results")
    assert res.published == "cifar10" and report.locate(tmp_path / "results" / "tiny").published is None


def test_paired_gains_pair_by_base_and_seed():
    rows = []
    for seed, real, syn in ((0, 0.50, 0.60), (1, 0.70, 0.75)):
        rows.append({"arm": "real-only", "arm_kind": "real-only", "seed": seed, "base_per_class": 5,
                     "extra_per_class": 0, "volume_per_class": 0, "test_acc": real, "n_test": 100})  # fmt: skip
        rows.append({"arm": "closed", "arm_kind": "closed", "seed": seed, "base_per_class": 5,
                     "extra_per_class": 0, "volume_per_class": 10, "test_acc": syn, "n_test": 100})  # fmt: skip
    per_seed, gains = paired_gains(pd.DataFrame(rows), level=0.9)
    assert sorted(per_seed["gain"].round(6)) == [0.05, 0.1]
    g = gains.iloc[0]
    assert g["n"] == 2 and g["mean"] == pytest.approx(0.075)
    assert g["lo"] < 0.05 and g["hi"] > 0.1  # t with 1 df: wide, as it should be


def test_summary_of_one_seed_uses_the_test_set_interval():
    done = pd.DataFrame([{"arm": "real-only", "arm_kind": "real-only", "seed": 0, "base_per_class": 5,
                          "extra_per_class": 0, "volume_per_class": 0, "test_acc": 0.8, "n_test": 500}])  # fmt: skip
    row = summarise(done, level=0.9).iloc[0]
    assert row["n"] == 1 and row["binomial"]
    assert 0.76 < row["lo"] < 0.8 < row["hi"] < 0.84  # Wilson 90% at n = 500


def test_formatting():
    assert fmt(0.91234) == "0.912"
    assert fmt(float("nan")) == "—" and fmt(float("inf")) == "∞"
    assert fmt(7) == "7"
    assert fmt(3.14159, sig=True) == "3.14" and fmt(1.0, sig=True) == "1.00"
    assert fmt(12345.6, sig=True) == "12,346"
    assert fmt_ci(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]"
    assert fmt_ci(0.5, np.nan, np.nan) == "0.500"
    assert md_table(pd.DataFrame({"a": ["x|y"]})).splitlines()[-1] == "| x\\|y |"


def test_arm_colours_are_fixed_by_arm():
    a = plots.arm_palette(["real-only", "real-extra", "closed", "open"])
    b = plots.arm_palette(["real-only", "real-extra", "closed", "open"])
    assert a == b and len(set(a.values())) == 4
    assert a["real-only"] == plots.arm_palette(["real-only"])["real-only"]
    many = plots.arm_palette([f"arm{i}" for i in range(12)])
    assert len(set(many.values())) == 12


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    assert report.main([str(tmp_path / "nowhere")]) == 2
    assert "expected a grid file (.yaml) or a results directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 2
    assert "cells.csv" in capsys.readouterr().err
    (empty / "cells.csv").write_text("cell,seed\nx,0\n")
    with pytest.raises(report.ReportError, match=r"missing columns \['dataset'"):
        report.locate(empty)
    cells = simulated_cells(arms=[], fail_rate=0.0, bases=(5,), extras=(), seeds=(0,)).assign(status="running")
    cells.to_csv(empty / "cells.csv", index=False)
    with pytest.raises(report.ReportError, match="status: unexpected values \\['running'\\]"):
        report.locate(empty)
    grid = tmp_path / "bad.yaml"
    grid.write_text("name: bad\n")
    assert report.main([str(grid)]) == 2
    assert "required key is missing" in capsys.readouterr().err


def test_no_done_cells_still_writes_a_report(tmp_path):
    cells = simulated_cells(arms=[], fail_rate=1.0, bases=(5,), extras=(5,), seeds=(0,))
    results = write_results(tmp_path / "results", cells, missing=3)
    md = report.write_report(report.locate(results), tmp_path / "out", n_boot=0).read_text()
    assert "No cell is done yet" in md and "## Failed cells" in md and "Incomplete grid" in md


def test_a_flat_real_curve_is_reported_as_not_estimable(tmp_path):
    # Test accuracy that does not rise with real data (as on PneumoniaMNIST's shifted test split): no beta, and
    # the report says why instead of failing on an empty log-scale panel.
    cells = simulated_cells(fail_rate=0.0)
    n_real = cells["n_base"] + cells["n_extra"]
    cells["test_acc"] = np.round((0.9 - 0.01 * np.log(n_real)) * cells["n_test"]) / cells["n_test"]
    results = write_results(tmp_path / "results", cells)
    md = report.write_report(report.locate(results), tmp_path / "out", n_boot=0).read_text()
    assert md.count("**not estimable**: the real learning curve does not rise") == 3
    assert "β is not estimable at any base size (the real learning curve does not rise" in md
    assert not (tmp_path / "out" / report.FIGURES["rate"]).exists()
