"""Markdown pieces of the report: numbers with their intervals, tables, figure references. Never imports torch.

fmt(0.91234)                   # "0.912"
fmt(3.14159, sig=True)         # "3.14"
fmt_ci(0.5, 0.4, 0.6)          # "0.500 [0.400, 0.600]"
md_table(pd.DataFrame({"arm": ["closed"], "k": ["3.2 [2.3, 4.7]"]}))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from study.report import plots

FIGURES = {  # in the order the report shows them
    "accuracy": "fig1_accuracy.png",
    "rate": "fig2_exchange_rate.png",
    "curves": "fig3_equivalence_curves.png",
    "strategies": "fig4_strategies.png",
    "samples": "fig5_samples.png",
    "diagnostics": "fig6_diagnostics.png",
    "why": "fig7_diagnostics_vs_beta.png",  # study.report.diagnostics
}


def fmt(x, digits: int = 3, sig: bool = False) -> str:
    """Metrics with fixed decimals; rates and sizes (`sig`) with significant digits; — for missing."""
    if x is None or (isinstance(x, (float, np.floating)) and np.isnan(x)) or x is pd.NA:
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if np.isinf(x):
        return "∞" if x > 0 else "−∞"
    if abs(x) >= 1e5:
        return f"{x:.{digits - 1}e}"
    if sig:
        return f"{x:,.0f}" if abs(x) >= 10**digits else f"{x:#.{digits}g}".rstrip(".")
    return f"{x:.{digits}f}"


def fmt_ci(mean, lo, hi, digits: int = 3, mark: str = "", sig: bool = False) -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    text = fmt(mean, digits, sig)
    if lo is not None and hi is not None and (np.isfinite(lo) or np.isfinite(hi)):
        text += f" [{fmt(lo, digits, sig)}, {fmt(hi, digits, sig)}]"
    return text + mark


def fmt_interval(lo, hi) -> str:
    """An interval alone, with significant digits; — unless both ends are finite."""
    return f"[{fmt(lo, sig=True)}, {fmt(hi, sig=True)}]" if np.isfinite(lo) and np.isfinite(hi) else "—"


def md_table(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        text = v if isinstance(v, str) else fmt(v)
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def in_arm_order(df: pd.DataFrame, arms: list[str], *then: str) -> pd.DataFrame:
    """Rows sorted by the arms' order (real arms first, then the grid's generator order), then by `then`."""
    if df.empty:
        return df
    rank = {a: i for i, a in enumerate(arms)}
    return df.sort_values(["arm", *then], key=lambda c: c.map(rank) if c.name == "arm" else c, kind="stable")


def capitalised(text: str) -> str:
    """The first letter upper case, the rest as it is (`TAR@FAR=1e-2` stays)."""
    return text[:1].upper() + text[1:]


def plural(n, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def with_reason(verdict: str, reason) -> str:
    return verdict + (f" ({reason})" if isinstance(reason, str) and reason else "")


def figure(fig, out: Path, key: str, caption: str) -> str:
    """Save figure `key` (a name in FIGURES) into `out` and return its markdown with a numbered caption."""
    plots.save(fig, out / FIGURES[key])
    number = list(FIGURES).index(key) + 1
    return f"![Figure {number}]({FIGURES[key]})\n\n**Figure {number}.** {caption}"
