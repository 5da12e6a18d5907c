"""The findings page's search table (study.report.search) on simulated searched grids: one row per arm and
base from the study's own analysis, the setting column computed from the grids' specs against the baseline
(generator and classifier changes, a larger base), the compute of each row from the store, and bad input named."""

from __future__ import annotations

import copy

import pytest
from test_findings import _interval
from test_report import N_BOOT, simulated_cells, write_results

from study.analysis.simulate import PlantedArm
from study.report import findings, search
from study.report.inputs import ReportError, locate

GEN = {"train_on": "base", "model": {"preset": "xs", "prediction": "edm"},
       "train": {"steps": 800, "ema_decay": 0.999}, "sample": {"sampler": "dpmpp", "steps": 10, "guidance": 2.0}}  # fmt: skip
CLF = {"arch": "study_cnn", "steps": 300, "augment": True, "mix": "uniform"}


def _grid(name: str, generators: dict, classifier: dict = CLF) -> dict:
    return {"name": name, "dataset": {"name": "digits"}, "generators": generators, "classifier": classifier}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A generator search (baseline `closed` at beta 0.3, `steps-2400` at 0.1, one base) and a classifier search
    (augmentation off, base 40): the settings a user searches before calling synthetic data worthless."""
    root = tmp_path_factory.mktemp("search")
    longer = copy.deepcopy(GEN) | {"train": {"steps": 2400, "ema_decay": 0.999}}
    gen_cells = simulated_cells([PlantedArm("closed", beta=0.3), PlantedArm("steps-2400", beta=0.1)],
                                fail_rate=0.0, bases=(20,))  # fmt: skip
    gen = write_results(root, gen_cells, "search-gen", grid=_grid("search-gen", {"closed": GEN, "steps-2400": longer}))
    clf_cells = simulated_cells([PlantedArm("closed", beta=0.2)], fail_rate=0.0, bases=(40,))
    clf = write_results(
        root,
        clf_cells,
        "search-clf",
        grid=_grid("search-clf", {"closed": GEN}, CLF | {"augment": False, "mix": {"fraction": 0.25}}),
    )
    return gen, clf


def test_rows_name_what_each_setting_changes_and_keep_the_planted_rates(searched):
    table = search.table_markdown([str(p) for p in searched], n_boot=N_BOOT)
    header = next(line for line in table.splitlines() if line.startswith("| study"))
    assert header.split(" | ")[2] == "setting" and "build (min)" in header
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| search-")]
    by = {(r[0].strip("| "), r[1]): r for r in rows}
    assert by[("search-gen", "closed")][2] == "baseline"
    assert by[("search-gen", "steps-2400")][2] == "train.steps 800 → 2400"
    assert by[("search-clf", "closed")][2] == (
        "classifier.augment True → False; classifier.mix uniform → {fraction: 0.25}; base 20 → 40/class"
    )
    for key, planted in ((("search-gen", "closed"), 0.3), (("search-gen", "steps-2400"), 0.1),
                         (("search-clf", "closed"), 0.2)):  # fmt: skip
        lo, hi = _interval(by[key][4])
        assert lo < planted < hi, (key, by[key][4])
    # Compute: the simulated store's build times (generator 5 s, sample set 3 s, diagnostics 1 s, classifier 2 s)
    # of the row's distinct artifacts, 3 seeds x one base, 4 synthetic cells per seed.
    assert float(by[("search-gen", "closed")][-2]) == pytest.approx(3 * (5 + 3 + 1 + 4 * 2) / 60, abs=0.05)
    assert by[("search-gen", "closed")][-1].strip(" |") == "—"  # the simulated store records no CPU time


def test_baseline_option_and_bad_input(searched, tmp_path, capsys):
    gen, clf = searched
    setting, base = search.parse_baseline(f"{clf}:closed", [locate(gen)])
    assert base == 40 and setting["classifier"]["augment"] is False
    assert search.parse_baseline(f"{gen}:closed:20", [locate(clf)])[1] == 20
    with pytest.raises(ReportError, match="no cells at base 40 per class; it has \\[20\\]"):
        search.parse_baseline(f"{gen}:closed:40", [locate(clf)])
    with pytest.raises(ReportError, match="no cells of arm 'open'"):
        search.parse_baseline(f"{gen}:open", [locate(gen)])
    with pytest.raises(ReportError, match="expected RESULTS_DIR:ARM or"):
        search.parse_baseline("closed", [locate(gen)])
    page = tmp_path / "FINDINGS.md"
    page.write_text(f"# Findings\n\n{findings.FINDINGS_START}\nkept\n{findings.FINDINGS_END}\n")
    assert search.main([str(gen), "--out", str(page), "--n-boot", str(N_BOOT)]) == 0
    text = page.read_text()
    assert "\nkept\n" in text and text.count(search.SEARCH_START) == 1 and "| search-gen | steps-2400 |" in text
    assert search.main([str(tmp_path / "nowhere"), "--out", str(page)]) == 2
    assert "nowhere: not found" in capsys.readouterr().err
