"""The findings page's table (study.report.findings) on simulated studies with planted rates: one row per arm,
the numbers of the study's own analysis, the planted rate inside the interval, failed cells counted, the
sample-set diagnostics averaged per arm, and the hand-written prose around the markers kept on a rewrite."""

from __future__ import annotations

import pytest
from test_report import N_BOOT, simulated_cells, write_results

from study.analysis import equivalence
from study.report import findings
from study.report.inputs import ReportError, locate


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cells = simulated_cells()
    first_closed = cells.index[(cells["arm"] == "closed") & (cells["status"] == "done")][0]
    cells.loc[first_closed, ["status", "error"]] = ["failed", "RuntimeError: a failed cell is counted, not dropped"]
    return write_results(tmp_path_factory.mktemp("findings"), cells, name="sim")


def _interval(text: str) -> tuple[float, float]:
    lo, hi = text.split("[", 1)[1].split("]")[0].split(", ")
    return float(lo.replace("−", "-")), float(hi.replace("−", "-"))


def test_rows_are_the_studys_own_analysis_and_cover_the_planted_rates(study):
    rows = findings.study_rows(locate(study), n_boot=N_BOOT).set_index("arm")
    assert list(rows.index) == ["closed", "closed-30", "open"]
    fit = equivalence.analyse(locate(study).cells, n_boot=N_BOOT, seed=0).fit.set_index("arm")
    for arm, planted in (("closed", 0.3), ("closed-30", 0.1)):
        beta = rows.loc[arm, "β"].split("pooled ")[-1]
        lo, hi = _interval(beta)
        assert lo == pytest.approx(fit.loc[arm, "beta_lo"], rel=0.01) and lo < planted < hi
    assert rows.loc["closed", "verdict"] == "gain" and rows.loc["open", "verdict"] in ("hurts", "no measurable gain")
    k_lo, k_hi = _interval(rows.loc["closed", "k"])
    assert k_lo < 1 / 0.3 < k_hi  # k = 1/beta
    cells = locate(study).cells
    failed = int((cells[cells["arm"] == "closed"]["status"] != "done").sum())
    assert rows.loc["closed", "cells (failed)"] == f"{(cells['arm'] == 'closed').sum()} ({failed})" and failed > 0
    # The planted memorisation: 0.8 more near-copies in the open arm's sample sets than in the closed arm's.
    assert float(rows.loc["open", "near-copy"]) - float(rows.loc["closed", "near-copy"]) == pytest.approx(0.8, abs=0.25)


def test_rewrite_keeps_the_prose_around_the_markers(study, tmp_path):
    page = tmp_path / "FINDINGS.md"
    page.write_text("# Findings\n\nProse before.\n")
    assert findings.main([str(study), "--out", str(page), "--n-boot", str(N_BOOT)]) == 0
    first = page.read_text()
    assert first.startswith("# Findings\n\nProse before.\n") and "| sim (test accuracy) | closed |" in first
    # Head to head: closed-30 mixes the same generators' samples as closed, planted at beta 0.1 against 0.3.
    pair = findings.head_to_head_rows(locate(study)).iloc[0]
    assert pair["a − b"] == "closed-30 − closed" and pair["generators"] == 9
    assert _interval(pair["difference"])[1] < 0 and "| sim (test accuracy) | closed-30 − closed | 9 |" in first
    edited = first.replace(findings.FINDINGS_END, findings.FINDINGS_END + "\n\nProse after.")
    second = findings.replace_between_markers(edited, "| a new table |")
    assert second.count(findings.FINDINGS_START) == 1 and second.rstrip().endswith("Prose after.")
    assert second.startswith("# Findings\n\nProse before.\n") and "| a new table |" in second
    assert "| sim (test accuracy) |" not in second


def test_bad_inputs_name_what_is_wrong(study, tmp_path, capsys):
    assert findings.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "F.md")]) == 2
    assert "nowhere: not found" in capsys.readouterr().err
    with pytest.raises(ReportError, match="not '<!-- end"):
        findings.replace_between_markers(findings.FINDINGS_START + "\nno end", "table")
    real_only = simulated_cells(arms=[], fail_rate=0.0, extras=(5, 10))
    only = write_results(tmp_path, real_only, name="real-only")
    assert findings.main([str(only), "--out", str(tmp_path / "F.md"), "--n-boot", "0"]) == 2
    assert "real-only: no synthetic arm" in capsys.readouterr().err
