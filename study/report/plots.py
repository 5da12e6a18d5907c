"""The report's figures: pure functions of tidy tables that return matplotlib Figures (no pyplot state).

Every figure takes the colour map from `arm_palette`, so an arm has one colour in every figure; shades of
that colour distinguish base sizes or volumes inside an arm's panel. Sizes are chosen for a paper page
(7 in wide, 8-9 pt text, saved at 200 dpi). Never imports torch.

    palette = arm_palette(["real-only", "real-extra", "closed"], {"closed": "closed"})
    fig = accuracy_vs_size(cells, summary, palette)
    save(fig, "reports/quickstart/fig1_accuracy.png")
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

REAL_ARMS = ("real-only", "real-extra")
REAL_COLORS = {"real-only": "#1b1b1b", "real-extra": "#8a8a8a"}
KIND_MARKER = {"real-only": "o", "real-extra": "D", "closed": "o", "open": "s"}
PAGE_WIDTH = 7.0  # inches: a two-column paper's full text width
MAX_SAMPLE_ROWS = 16  # sample grids show at most this many classes (or mixed pairs)
DPI = 200


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Paper-sized text and a light grid, applied only while a figure is built (rcParams are read then)."""
    rc = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7.5,
          "xtick.labelsize": 7.5, "ytick.labelsize": 7.5, "axes.titleweight": "bold",
          "legend.frameon": False, "savefig.bbox": "tight", "savefig.pad_inches": 0.05}  # fmt: skip
    with mpl.rc_context(), sns.axes_style("whitegrid"):
        mpl.rcParams.update(rc)
        yield


def _legend_cols(fig: Figure, n: int) -> int:
    """As many legend columns as fit the figure's width (about 1.25 in per entry)."""
    return max(1, min(n, int(fig.get_figwidth() / 1.25)))


def _suptitle(fig: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (about 14 characters per inch at 9 pt)."""
    fig.suptitle(textwrap.fill(text, int(fig.get_figwidth() * 14)), fontsize=9)


def save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


# --- colours -----------------------------------------------------------------------------------------


def arm_palette(arms: list[str]) -> dict[str, tuple]:
    """One colour per arm, fixed by the arm order: near-black real-only, grey real-extra, then the
    colour-blind-safe palette (its grey left out) for generator arms."""
    cb = sns.color_palette("colorblind", 10)
    cycle = [c for i, c in enumerate(cb) if i != 7]  # index 7 is grey: reserved for real-extra
    synthetic = [a for a in arms if a not in REAL_COLORS]
    if len(synthetic) > len(cycle):
        cycle = sns.color_palette("husl", len(synthetic))
    out = {a: mcolors.to_rgb(c) for a, c in REAL_COLORS.items() if a in arms}
    return out | {a: tuple(cycle[i]) for i, a in enumerate(synthetic)}


def shades(color, n: int) -> list[tuple]:
    """`n` shades of one colour from light to dark (small to large base or volume)."""
    rgb = np.array(mcolors.to_rgb(color))
    if n == 1:
        return [tuple(rgb)]
    out = []
    for t in np.linspace(-0.55, 0.35, n):
        target = np.ones(3) if t < 0 else np.zeros(3)
        out.append(tuple(rgb + abs(t) * (target - rgb)))
    return out


def _grid(n: int, ncols: int = 3, height: float = 2.4, width: float = PAGE_WIDTH, sharey=True):
    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(width if ncols > 1 else width * 0.6, height * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=sharey, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _jitter(x: np.ndarray, width: float, seed: int = 0) -> np.ndarray:
    """Multiplicative jitter for log axes, fixed by `seed` so figures are reproducible."""
    return x * np.exp(np.random.default_rng(seed).uniform(-width, width, len(x)))


def _errorbar(ax, x, mean, lo, hi, color, marker="o", label=None, ms=4.5, lw=1.2, **kw):
    x, mean, lo, hi = (np.asarray(v, dtype=float) for v in (x, mean, lo, hi))
    yerr = np.vstack([mean - lo, hi - mean])
    yerr = np.where(np.isfinite(yerr), yerr, 0.0)
    ax.errorbar(x, mean, yerr=yerr, color=color, marker=marker, ms=ms, capsize=2, lw=lw, elinewidth=0.9,
                label=label, zorder=3, **kw)  # fmt: skip


class _Log125(mpl.ticker.LogLocator):
    """Ticks at 1-2-(3-)5 steps over a short range (up to ~2 decades), at decades otherwise."""

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((max(vmin, 1e-300), max(vmax, 1e-300)))
        decades = np.log10(hi / lo)
        self._subs = np.array([1.0, 2.0, 3.0, 5.0] if decades < 1.2 else [1.0, 2.0, 5.0] if decades < 2.1 else [1.0])
        return super().tick_values(vmin, vmax)


def _log_axis(ax, which: str = "x", ticks=None) -> None:
    """Log scale labelled in plain numbers: at `ticks` (the sizes the grid used) or at 1-2-5 steps."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    if ticks is not None and len(ticks):
        axis.set_major_locator(mpl.ticker.FixedLocator(sorted({float(t) for t in ticks})))
    else:
        axis.set_major_locator(_Log125())
    axis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(mpl.ticker.NullFormatter())


def _shade_legend(fig, labels: list[str], title: str, extra: list | None = None) -> None:
    """One figure-level legend for the shade scale, drawn in grey since the hue belongs to the arm."""
    handles = [Line2D([], [], color=c, marker="o", ls="", ms=4.5, label=lab)
               for c, lab in zip(shades("#555555", len(labels)), labels, strict=True)]  # fmt: skip
    fig.legend(handles=handles + (extra or []), title=title, loc="outside lower center",
               ncols=_legend_cols(fig, len(handles) + len(extra or [])), title_fontsize=7.5)  # fmt: skip


# --- (1) accuracy vs training-set size ---------------------------------------------------------------


def accuracy_vs_size(
    cells: pd.DataFrame,
    summary: pd.DataFrame,
    palette: dict[str, tuple],
    n_classes: int,
    curve: Callable[[np.ndarray], np.ndarray] | None = None,
    level: float = 0.9,
    label: str = "test accuracy",
) -> Figure:
    """Test accuracy (or the grid's analysed metric, named by `label`) against training images per class (real +
    synthetic): one panel per generator arm,
    each over the real learning curve (real-only and real-extra). Small points are seeds; large points are
    means with their interval; a synthetic arm's line starts at the real-only mean of its base.

    `cells` (done cells) needs arm, arm_kind, seed, base_per_class, extra_per_class, volume_per_class,
    test_acc; `summary` the same keys plus mean, lo, hi (from the report's summarise).
    `curve(n_total_real)` (n = images per class x n_classes) draws the fitted real learning curve."""
    synthetic = [a for a in palette if a not in REAL_ARMS and a in set(cells["arm"])]
    with style():
        fig, axes = _grid(max(1, len(synthetic)))
        for ax, arm in zip(axes, synthetic or [None], strict=True):
            _real_curve(ax, cells, summary, palette, curve, n_classes)
            if arm is not None:
                _synthetic_lines(ax, cells, summary, arm, palette[arm])
                ax.set_title(f"{arm} ({_kind(cells, arm)}-set)")
            else:
                ax.set_title("real data")
            _log_axis(ax, "x")
            ax.set_xlabel("training images per class")
        axes[0].set_ylabel(label)
        handles = [Line2D([], [], color=palette[a], marker=KIND_MARKER.get(_kind(cells, a), "o"), ms=4, label=a)
                   for a in palette if a in set(cells["arm"])]  # fmt: skip
        if curve is not None:
            handles.append(Line2D([], [], color="#555555", ls="--", lw=1, label="fitted real curve"))
        handles.append(Line2D([], [], color="#555555", marker="o", ls="", ms=2.5, alpha=0.5, label="one seed"))
        fig.legend(handles=handles, loc="outside lower center", ncols=_legend_cols(fig, len(handles)))
        _suptitle(fig, f"{label[:1].upper() + label[1:]} vs training-set size ({level:.0%} intervals)")
    return fig


def _kind(cells: pd.DataFrame, arm: str) -> str:
    kinds = cells.loc[cells["arm"] == arm, "arm_kind"]
    return str(kinds.iloc[0]) if len(kinds) else "closed"


def _real_curve(ax, cells, summary, palette, curve, n_classes) -> None:
    for arm in REAL_ARMS:
        if arm not in palette:
            continue
        c = cells[cells["arm"] == arm]
        x = (c["base_per_class"] + c["extra_per_class"]).to_numpy(float)
        ax.plot(_jitter(x, 0.04), c["test_acc"], ls="", marker="o", ms=2.5, alpha=0.45, color=palette[arm], zorder=2)
    s = summary[summary["arm"].isin(REAL_ARMS)].copy()
    s["x"] = s["base_per_class"] + s["extra_per_class"]
    # real-only at base b+e and real-extra at base b with e extra train the same classifier: one curve
    real = s.sort_values(["x", "arm"], ascending=[True, False]).drop_duplicates("x")
    for arm, part in real.groupby("arm", sort=False):
        _errorbar(ax, part["x"], part["mean"], part["lo"], part["hi"], palette[arm], KIND_MARKER[arm], ls="")
    ax.plot(real["x"], real["mean"], color=palette.get("real-only", "#1b1b1b"), lw=1, alpha=0.6, zorder=2)
    if curve is not None and n_classes and len(real):
        grid = np.geomspace(real["x"].min() / 1.5, real["x"].max() * 1.5, 100)
        with np.errstate(all="ignore"):
            ax.plot(grid, curve(grid * n_classes), ls="--", lw=1, color="#555555", zorder=1)


def _synthetic_lines(ax, cells, summary, arm, color) -> None:
    """One line per base size in a shade of the arm's colour (light = small base), from the real-only mean
    at that base through the means at each synthetic volume."""
    s = summary[summary["arm"] == arm]
    start = summary[summary["arm"] == "real-only"].set_index("base_per_class")["mean"]
    bases = sorted(s["base_per_class"].unique())
    marker = KIND_MARKER.get(_kind(cells, arm), "o")
    for base, shade in zip(bases, shades(color, len(bases)), strict=True):
        c = cells[(cells["arm"] == arm) & (cells["base_per_class"] == base)]
        x = (c["base_per_class"] + c["volume_per_class"]).to_numpy(float)
        ax.plot(_jitter(x, 0.04, 1), c["test_acc"], ls="", marker="o", ms=2.5, alpha=0.45, color=shade, zorder=2)
        part = s[s["base_per_class"] == base].sort_values("volume_per_class")
        x = (part["base_per_class"] + part["volume_per_class"]).to_numpy(float)
        if base in start.index:  # the line leaves the real curve where this base sits
            ax.plot([base, x[0]], [start[base], part["mean"].iloc[0]], color=shade, lw=1, ls=":", zorder=2)
        _errorbar(ax, x, part["mean"], part["lo"], part["hi"], shade, marker)


# --- (2) equivalence curves: synthetic needed vs real added ------------------------------------------


def equivalence_curves(
    points: pd.DataFrame,
    palette: dict[str, tuple],
    curve: Callable[[str, int, np.ndarray], np.ndarray] | None = None,
) -> Figure:
    """Synthetic images per class needed to match adding `n` real images per class, one panel per arm,
    one shade per base size (light = small base); lines are the fitted closed form `curve(arm, base, x)`
    (x and y in images per class). `points` needs arm, base_per_class, real_plus_per_class,
    syn_per_class; points where no tested volume reached the target are left out by the caller."""
    arms = [a for a in palette if a in set(points["arm"])]
    bases = sorted(points["base_per_class"].unique())
    with style():
        fig, axes = _grid(len(arms))
        for ax, arm in zip(axes, arms, strict=True):
            p = points[points["arm"] == arm]
            for base, color in zip(bases, shades(palette[arm], len(bases)), strict=True):
                q = p[p["base_per_class"] == base].sort_values("real_plus_per_class")
                if q.empty:
                    continue
                ax.plot(q["real_plus_per_class"], q["syn_per_class"], ls="", marker="o", ms=4, color=color, zorder=3)
                if curve is not None:
                    x = np.geomspace(q["real_plus_per_class"].min() / 1.3, q["real_plus_per_class"].max() * 1.3, 60)
                    with np.errstate(all="ignore"):
                        ax.plot(x, curve(arm, int(base), x), color=color, lw=1.1, zorder=2)
            x = np.array([points["real_plus_per_class"].min() / 1.3, points["real_plus_per_class"].max() * 1.3])
            ax.plot(x, x, color="#999999", ls=":", lw=1, zorder=1)
            ymin, ymax = p["syn_per_class"].min(), p["syn_per_class"].max()
            ax.set_ylim(min(ymin, x[0]) / 2, ymax * 3)  # the fitted lines may run far beyond the points
            _log_axis(ax, "x", sorted(points["real_plus_per_class"].unique()))
            _log_axis(ax, "y")
            ax.set_title(arm)
            ax.set_xlabel("real images added per class")
        axes[0].set_ylabel("synthetic images per class\nwith the same accuracy")
        diagonal = Line2D([], [], color="#999999", ls=":", lw=1, label="1 synthetic = 1 real")
        _shade_legend(fig, [f"{b:g}/class" for b in bases], "base (points: interpolated; lines: fitted closed form)",
                      [diagonal])  # fmt: skip
        _suptitle(fig, "Equivalence curves: synthetic images needed vs real images added")
    return fig


# --- (3) exchange rate vs base size ------------------------------------------------------------------


def exchange_rate(
    by_base: pd.DataFrame,
    per_volume: pd.DataFrame,
    palette: dict[str, tuple],
    kinds: dict[str, str],
    joint: pd.DataFrame | None = None,
    level: float = 0.9,
) -> Figure:
    """Left: the signed rate beta (real images gained per synthetic image) against base size, one series per
    arm (closed solid, open dashed), with intervals; the arm's all-bases estimate at the right end ("all");
    the single volumes as faint points. Right: k = 1/beta where beta's interval excludes zero (log scale).
    `by_base` and `joint` need arm, beta, beta_lo, beta_hi, k, k_lo, k_hi, verdict (by_base also
    base_per_class); `per_volume` needs arm, base_per_class, beta."""
    arms = [a for a in palette if a in set(by_base["arm"])]
    bases = sorted(by_base["base_per_class"].unique())
    x_all = bases[-1] * (bases[-1] / bases[0]) ** 0.25 * 1.6 if len(bases) > 1 else bases[0] * 3
    with style():
        fig = Figure(figsize=(PAGE_WIDTH, 2.9), layout="constrained")
        ax_b, ax_k = fig.subplots(1, 2)
        any_gain = False
        for i, arm in enumerate(arms):
            color, kind = palette[arm], kinds.get(arm, "closed")
            marker, ls = KIND_MARKER.get(kind, "o"), "-" if kind == "closed" else "--"
            dodge = np.exp(0.08 * (i - (len(arms) - 1) / 2))
            b = by_base[by_base["arm"] == arm].sort_values("base_per_class")
            v = per_volume[per_volume["arm"] == arm]
            ax_b.plot(v["base_per_class"] * dodge, v["beta"], ls="", marker=marker, ms=2.5, alpha=0.35, color=color)
            _errorbar(ax_b, b["base_per_class"] * dodge, b["beta"], b["beta_lo"], b["beta_hi"], color, marker, ls=ls,
                      label=f"{arm} ({kind})")  # fmt: skip
            g = b[b["verdict"] == "gain"]
            if len(g):
                any_gain = True
                _errorbar(ax_k, g["base_per_class"] * dodge, g["k"], g["k_lo"], g["k_hi"].clip(upper=1e6), color,
                          marker, ls=ls)  # fmt: skip
            j = joint[joint["arm"] == arm] if joint is not None else pd.DataFrame()
            if len(j) and np.isfinite(j["beta"].iloc[0]):
                r = j.iloc[0]
                _errorbar(ax_b, [x_all * dodge], [r["beta"]], [r["beta_lo"]], [r["beta_hi"]], color, marker, ls="",
                          mfc="white")  # fmt: skip
                if r["verdict"] == "gain":
                    _errorbar(ax_k, [x_all * dodge], [r["k"]], [r["k_lo"]], [min(r["k_hi"], 1e6)], color, marker,
                              ls="", mfc="white")  # fmt: skip
        ax_b.axhline(0, color="#555555", lw=0.8)
        ax_b.axhline(1, color="#999999", lw=0.8, ls=":")
        ax_b.set_ylabel("β: real images gained\nper synthetic image")
        ax_k.set_ylabel("k: synthetic images\nper real image")
        if not any_gain:
            ax_k.text(0.5, 0.5, "no measurable gain\nat any base size", ha="center", va="center",
                      transform=ax_k.transAxes, color="#555555")  # fmt: skip
        for ax in (ax_b, ax_k):
            _log_axis(ax, "x", [*bases, x_all])
            ax.set_xlim(bases[0] / 1.5, x_all * 1.5)  # positive limits even when nothing is drawn
            ax.set_xticklabels([*(f"{b:g}" for b in bases), "all"])
            ax.set_xlabel("base images per class")
        if any_gain:  # a log axis needs positive data
            _log_axis(ax_k, "y")
        ax_b.set_title("exchange rate β")
        ax_k.set_title("synthetic per real k (where β > 0)")
        handles = [Line2D([], [], color=palette[a], marker=KIND_MARKER.get(kinds.get(a, ""), "o"), ms=4,
                          ls="-" if kinds.get(a) == "closed" else "--", label=f"{a} ({kinds.get(a, '?')}-set)")
                   for a in arms]  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncols=_legend_cols(fig, len(handles)))
        _suptitle(fig, f"Exchange rate vs base size ({level:.0%} intervals; open markers: all bases together)")
    return fig


# --- (4) strategy comparison -------------------------------------------------------------------------


def strategy_gains(
    gains: pd.DataFrame, palette: dict[str, tuple], kinds: dict[str, str], level: float = 0.9, label: str = "accuracy"
) -> Figure:
    """Accuracy gain over real-only at the same base, paired by seed, against images added per class
    (synthetic volume, or real extra for the real-extra reference): one panel per base size, arms side by
    side. `gains` needs arm, base_per_class, added_per_class, mean, lo, hi."""
    bases = sorted(gains["base_per_class"].unique())
    arms = [a for a in palette if a in set(gains["arm"])]
    with style():
        fig, axes = _grid(len(bases), ncols=4, height=2.3)
        for ax, base in zip(axes, bases, strict=True):
            g = gains[gains["base_per_class"] == base]
            for i, arm in enumerate(arms):
                q = g[g["arm"] == arm].sort_values("added_per_class")
                if q.empty:
                    continue
                x = q["added_per_class"].to_numpy(float) * np.exp(0.07 * (i - (len(arms) - 1) / 2))
                _errorbar(ax, x, q["mean"], q["lo"], q["hi"], palette[arm], KIND_MARKER.get(kinds.get(arm, ""), "o"),
                          ls="-" if arm == "real-extra" else "", lw=0.8)  # fmt: skip
            ax.axhline(0, color="#555555", lw=0.8)
            ax.set_xlim(g["added_per_class"].min() / 1.6, g["added_per_class"].max() * 1.6)
            ax.set_title(f"base {base:g}/class")
            _log_axis(ax, "x", sorted(g["added_per_class"].unique()))
            ax.set_xlabel("images added per class")
        axes[0].set_ylabel(f"{label} gain over real-only")
        handles = [Line2D([], [], color=palette[a], marker=KIND_MARKER.get(kinds.get(a, ""), "o"), ms=4, label=a)
                   for a in arms]  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncols=_legend_cols(fig, len(handles)))
        _suptitle(fig, f"Gain over real-only at equal added volume (paired by seed, {level:.0%} intervals)")
    return fig


# --- (5) synthetic sample grids ----------------------------------------------------------------------


def sample_grids(previews: pd.DataFrame, palette: dict[str, tuple], n_classes: int | None = None) -> Figure:
    """The sample sets' preview images (one row per class): one row of panels per sample-set group, base
    sizes as columns, framed in the arm's colour. `previews` needs arm (for the colour), label (the row's
    name, e.g. the arms sharing these samples), base_per_class, path (a PNG)."""
    from PIL import Image

    labels = list(dict.fromkeys(previews.sort_values("arm", key=lambda a: a.map(list(palette).index))["label"]))
    colors = dict(zip(previews["label"], (palette[a] for a in previews["arm"]), strict=True))
    bases = sorted(previews["base_per_class"].unique())
    images = {(r.label, r.base_per_class): np.asarray(Image.open(r.path).convert("RGB")) for r in previews.itertuples()}
    shown = n_classes
    if n_classes and n_classes > MAX_SAMPLE_ROWS:  # e.g. hundreds of face identities: the first rows only
        shown = MAX_SAMPLE_ROWS
        images = {k: im[: im.shape[0] * shown // n_classes] if im.shape[0] % n_classes == 0 else im
                  for k, im in images.items()}  # fmt: skip
    arms = labels
    aspect = float(np.mean([im.shape[1] / im.shape[0] for im in images.values()]))
    # As wide as the page allows, but never taller than most of a page.
    panel_w = min((PAGE_WIDTH - 0.4) / len(bases), 8.0 / len(arms) * aspect)
    with style():
        fig = Figure(figsize=(panel_w * len(bases) + 0.4, panel_w / aspect * len(arms) + 0.45), layout="constrained")
        axes = fig.subplots(len(arms), len(bases), squeeze=False)
        for i, arm in enumerate(arms):
            for j, base in enumerate(bases):
                ax = axes[i, j]
                ax.grid(False)
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_edgecolor(colors[arm])
                    spine.set_linewidth(1.5)
                if i == 0:
                    ax.set_title(f"base {base:g}/class", fontsize=8)
                if j == 0:
                    ax.set_ylabel(arm, color=colors[arm], fontweight="bold")
                if (arm, base) not in images:
                    ax.text(0.5, 0.5, "no sample set", ha="center", va="center", transform=ax.transAxes)
                    continue
                im = images[arm, base]
                ax.imshow(im, interpolation="nearest")
                if shown and j == len(bases) - 1 and im.shape[0] % shown == 0:
                    ax.yaxis.tick_right()
                    ax.set_yticks((np.arange(shown) + 0.5) * im.shape[0] / shown, range(shown))
                    ax.tick_params(axis="y", length=0, labelsize=6)
        rows = "one row per class" if shown == n_classes else f"one row per class, the first {shown} of {n_classes}"
        _suptitle(fig, f"Synthetic samples ({rows})")
    return fig


# --- (6) generator diagnostics vs downstream gain ----------------------------------------------------


def diagnostics_vs_gain(points: pd.DataFrame, palette: dict[str, tuple], label: str = "conditional accuracy") -> Figure:
    """A generator diagnostic of each sample set against the downstream accuracy gain over real-only
    (same base and seed); colour = arm, marker = base size. `points` needs arm, base_per_class,
    diagnostic, gain (one row per sample set)."""
    arms = [a for a in palette if a in set(points["arm"])]
    bases = sorted(points["base_per_class"].unique())
    markers = dict(zip(bases, "os^Dvp*hX", strict=False))
    with style():
        fig = Figure(figsize=(PAGE_WIDTH * 0.62, 2.9), layout="constrained")
        ax = fig.subplots()
        for arm in arms:
            for base in bases:
                q = points[(points["arm"] == arm) & (points["base_per_class"] == base)]
                ax.plot(q["diagnostic"], q["gain"], ls="", marker=markers.get(base, "o"), ms=4.5, alpha=0.8,
                        color=palette[arm], mec="white", mew=0.4)  # fmt: skip
        ax.axhline(0, color="#555555", lw=0.8)
        ax.set_xlabel(f"{label} of the sample set")
        ax.set_ylabel("accuracy gain over real-only\n(mean over the set's volumes)")
        handles = [Line2D([], [], color=palette[a], marker="o", ls="", ms=4.5, label=a) for a in arms]
        handles += [Line2D([], [], color="#555555", marker=markers.get(b, "o"), ls="", ms=4.5,
                           label=f"base {b:g}/class") for b in bases]  # fmt: skip
        fig.legend(handles=handles, loc="outside right center")
        _suptitle(fig, "Generator diagnostic vs downstream gain")
    return fig
