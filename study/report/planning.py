"""The report's planning section: forward answers from the fitted surfaces (study.analysis.surface) at the study's
own base sizes, the questions `python -m study.advise` answers for any base. Never imports torch.
"""

from __future__ import annotations

import pandas as pd

from study.report.markdown import fmt, fmt_ci, in_arm_order, md_table

VOLUME_RATIO = 4  # "accuracy at 4x the base in synthetic images"


def planning_section(eq, results_dir, level: float) -> list[str]:
    if eq is None or not eq.surfaces:
        return ["Not available: no arm has a joint-model fit to plan from."]
    rows = []
    for s in eq.surfaces.values():
        for base in s.bases:
            match, at = s.match_real(base, base), s.at_volume(base, VOLUME_RATIO * base)
            acc_real = s.real_acc(base)
            rows.append({"arm": s.arm, "base/class": f"{base:g}", "surface (ΔQAIC of the others)": _surface(s),
                         "synthetic/class worth +base real/class": _answer(match),
                         f"accuracy at {VOLUME_RATIO}× base synthetic": _answer(at, digits=3),
                         "real-only (fitted)": fmt(acc_real, 3),
                         "n_eff/class there": fmt_ci(at.n_eff, at.n_eff_lo, at.n_eff_hi, sig=True)})  # fmt: skip
    table = in_arm_order(pd.DataFrame(rows), [s.arm for s in eq.surfaces.values()])
    return [
        f"Answers from the fitted surfaces at the study's own base sizes ({level:.0%} intervals over the parameters "
        "and a new generator's spread τ; † outside what was measured: a volume beyond the tested ones or an "
        "effective size beyond the real curve's, with the interval widened to every surface's). The surface is the "
        "one of three (one rate, a rate per base, the paper's closed form) with the lowest QAIC on the arm's cells."
        + _method_text(eq.surfaces.values()),
        md_table(table),
        f"Any base, volume or target: `python -m study.advise {results_dir} --base B --match-real N` (or "
        "`--target-acc A`, `--volume V`; `--json` for scripts).",
    ]


def _surface(s) -> str:
    others = ", ".join(f"{name} +{d:.1f}" for name, d in s.qaic_table().items() if name != s.chosen)
    return f"{s.chosen} ({others})" if others else s.chosen


def _answer(a, digits: int = 3) -> str:
    mark = "†" if a.extrapolated else ""
    if a.value == float("inf"):
        return "not reachable" + mark
    return fmt_ci(a.value, a.lo, a.hi, digits=digits, sig=a.unit != "accuracy", mark=mark)


def _method_text(surfaces) -> str:
    """How the answers widen on arms whose beta interval is a two-stage one (study.analysis.surface)."""
    widened = [s for s in surfaces if s.widening is not None]
    if not widened:
        return ""
    ratios = "; ".join(f"{s.arm} ×{fmt(s.widening.arm[0], sig=True)} below, ×{fmt(s.widening.arm[1], sig=True)} above"
                       for s in widened)  # fmt: skip
    return (" Where an arm's β interval is a two-stage one (few generators, or generators whose rates differ), the "
            "random-effect fit behind these draws undercovered (reports/coverage.md), so its answers are widened to "
            "reach the two-stage interval: each draw's distance from the estimate, in the surface's own parameters "
            "and the generator effect, is multiplied, per side, by how many times farther the two-stage interval "
            "reaches from the random-effect estimate than the random-effect interval does (at least 1), and the "
            f"answer follows from the widened draws ({ratios}; a rate per base takes its base's).")  # fmt: skip
