"""The source paper's closed form (Wang et al. 2025; SCIENCE.md 1), per arm.

For each base and each real-extra size n_real+, n_syn* is the synthetic amount whose pooled accuracy matches the
pooled real-extra accuracy, by monotone interpolation in log n_syn (isotonic fit of the arm's accuracies over
volumes, then linear in log n_syn; no extrapolation). Then, by nonlinear least squares on the log scale,

    log(n_syn* / n_base) = (n_base / K) ln c1 + ln(c2^(n_real+ / n_base) - 1).

Only ln(c1)/K is identifiable, so K is fixed to the number of classes; with one base size, or c2 < 1.01 (almost
linear in n_real+), c1 is not identifiable. Intervals: bootstrap percentiles (study.analysis.bootstrap) or Wald
from the least-squares covariance. Costs milliseconds per fit; never imports torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.optimize import isotonic_regression

from study.analysis.bootstrap import percentiles
from study.analysis.cells import ARM_KEYS, CURVE_KEYS, Group, arm_mask, pool
from study.analysis.published import PublishedMatch

C2_LINEAR = 1.01  # below this c2^x - 1 is within 1% of linear for x <= 2: c1 is then not identifiable


def closed_form_log(base_over_k, x, ln_c1, lnln_c2):
    """log(n_syn / n_base) = (n_base/K) ln c1 + ln(c2^x - 1), x = n_real+ / n_base, ln c2 = exp(lnln_c2)."""
    with np.errstate(over="ignore"):  # trial c2 far too large: an infinite residual that the fit steps away from
        return base_over_k * ln_c1 + np.log(np.expm1(np.exp(lnln_c2) * x))


def _invert_monotone(log_v, fit, target) -> tuple[float, str]:
    """log n_syn where `fit` (isotonic accuracies over increasing log volumes `log_v`) first reaches `target`."""
    starts = np.r_[0, np.flatnonzero(np.diff(fit) > 0) + 1]  # blocks of equal fitted accuracy
    ends = np.r_[starts[1:] - 1, len(fit) - 1]
    levels = fit[starts]
    if target < levels[0]:
        return np.nan, "below range"
    if target > levels[-1]:
        return np.nan, "above range"
    i = int(np.searchsorted(levels, target, side="left"))
    if i == 0:
        return float(log_v[starts[0]]), "ok"
    # Linear in log n_syn from the end of the block below the target to the start of the block reaching it.
    frac = (target - levels[i - 1]) / (levels[i] - levels[i - 1])
    x0, x1 = log_v[ends[i - 1]], log_v[starts[i]]
    return float(x0 + frac * (x1 - x0)), "ok"


@dataclass(frozen=True, eq=False)
class PointLayout:
    """Which pooled groups of one arm feed each n_syn*(n_real+) point; built once, reused by every replicate."""

    frame: pd.DataFrame  # one row per point: base_per_class, n_base, extra_per_class, n_real_plus
    target: np.ndarray  # per point: its row in the pooled real-extra table (the accuracy to match)
    base: np.ndarray  # per point: its entry in `volumes`
    volumes: list[tuple[np.ndarray, np.ndarray]]  # per base: pooled synthetic rows by increasing n_syn, log n_syn
    weights: np.ndarray  # test images behind each pooled synthetic accuracy

    @classmethod
    def build(cls, real_extra: pd.DataFrame, synthetic: pd.DataFrame) -> PointLayout:
        rows, target, base, volumes = [], [], [], []
        for b, syn in synthetic.reset_index(drop=True).groupby("base_per_class", sort=True):
            syn = syn.sort_values("n_syn")
            extra = real_extra.reset_index(drop=True)
            extra = extra[extra["base_per_class"] == b]
            if extra.empty:
                continue
            for i, t in extra.iterrows():
                rows.append((b, t["n_base"], t["extra_per_class"], t["n_extra"]))
                target.append(i)
                base.append(len(volumes))
            volumes.append((syn.index.to_numpy(), np.log(syn["n_syn"].to_numpy(float))))
        frame = pd.DataFrame(rows, columns=["base_per_class", "n_base", "extra_per_class", "n_real_plus"])
        weights = synthetic["n_test"].to_numpy(float)
        return cls(frame, np.array(target, int), np.array(base, int), volumes, weights)

    def points(self, real_p, syn_p) -> tuple[np.ndarray, np.ndarray]:
        """n_syn* and status per point, from pooled real-extra and synthetic accuracies."""
        fits = [isotonic_regression(syn_p[rows], weights=self.weights[rows]).x for rows, _ in self.volumes]
        star, status = np.full(len(self.frame), np.nan), np.empty(len(self.frame), dtype=object)
        for j, (b, t) in enumerate(zip(self.base, self.target, strict=True)):
            log_star, status[j] = _invert_monotone(self.volumes[b][1], fits[b], real_p[t])
            star[j] = np.exp(log_star)
        return star, status

    def table(self, real_p, syn_p) -> pd.DataFrame:
        star, status = self.points(real_p, syn_p)
        return self.frame.assign(target_acc=np.asarray(real_p)[self.target], n_syn_star=star, status=status)


def fit_closed_form(n_base, n_real_plus, n_syn_star, n_classes: float, start=None):
    """Least squares of log(n_syn*/n_base) on the closed form with K = n_classes: ((ln c1, ln ln c2), cov), or
    None with fewer than 3 finite points or no convergence."""
    nb, plus, star = (np.asarray(v, float) for v in (n_base, n_real_plus, n_syn_star))
    ok = np.isfinite(star)
    if ok.sum() < 3:
        return None
    nb, plus, z = nb[ok], plus[ok], np.log(star[ok] / nb[ok])
    xdata = np.vstack([nb / n_classes, plus / nb])

    def model(xd, ln_c1, lnln_c2):
        return closed_form_log(xd[0], xd[1], ln_c1, lnln_c2)

    if start is None:
        # ln c1 enters linearly: profile it out over a grid of c2 to start near the global optimum.
        lnln = np.log(np.log(np.geomspace(1.01, 1e3, 60)))[:, None]
        shape = np.log(np.expm1(np.exp(lnln) * xdata[1]))
        g = ((z - shape) @ xdata[0]) / (xdata[0] @ xdata[0])
        sse = ((z - shape - g[:, None] * xdata[0]) ** 2).sum(axis=1)
        start = (g[np.argmin(sse)], lnln[np.argmin(sse), 0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, pcov = optimize.curve_fit(model, xdata, z, p0=start, maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    return popt, pcov


# --- one arm -----------------------------------------------------------------------------------------


@dataclass
class ClosedForm:
    """One arm's closed-form fit: where its points come from, the fit, and bootstrap replicates."""

    arm: pd.Series  # CURVE_KEYS + ARM_KEYS values
    n_classes: float
    reason: str = ""  # why there is no fit
    layout: PointLayout | None = None
    real_idx: np.ndarray | None = None  # per done cell of the group: its pooled real-extra row, or -1
    syn_idx: np.ndarray | None = None  # per done cell: its pooled synthetic row of this arm, or -1
    sizes: tuple[int, int] = (0, 0)  # pooled real-extra rows, pooled synthetic rows
    points: pd.DataFrame | None = None
    theta: np.ndarray | None = None  # (ln c1, ln ln c2)
    cov: np.ndarray | None = None
    reps: np.ndarray | None = None  # (n_boot, 2) bootstrap replicates of theta

    @property
    def key(self) -> tuple:
        return tuple(self.arm[CURVE_KEYS + ARM_KEYS])

    def points_from(self, y, m) -> tuple[np.ndarray, np.ndarray]:
        """n_syn* and status per point from correct counts y (one per done cell of the group)."""
        real_p = _pooled_from(y, m, self.real_idx, self.sizes[0])
        syn_p = _pooled_from(y, m, self.syn_idx, self.sizes[1])
        return self.layout.points(real_p, syn_p)

    def refit(self, y, m) -> np.ndarray | None:
        """(ln c1, ln ln c2) refitted to new correct counts (a bootstrap replicate), started at the fit."""
        star, _ = self.points_from(y, m)
        frame = self.layout.frame
        fitted = fit_closed_form(frame["n_base"], frame["n_real_plus"], star, self.n_classes, start=self.theta)
        return None if fitted is None else fitted[0]


def closed_form(g: Group, arm: pd.Series, n_classes: float) -> ClosedForm:
    cf = ClosedForm(arm, n_classes)
    extra, mine = (g.done["arm_kind"] == "real-extra").to_numpy(), arm_mask(g.done, arm)
    if not extra.any():
        cf.reason = "no real-extra cells: the closed form needs real images added to a base"
        return cf
    if not mine.any():
        cf.reason = "no done synthetic cells"
        return cf
    real_extra = pool(g.done[extra], ["base_per_class", "extra_per_class"])
    synthetic = pool(g.done[mine], ["base_per_class", "volume_per_class"])
    cf.layout = PointLayout.build(real_extra, synthetic)
    cf.real_idx = _member_index(g.done, extra, ["base_per_class", "extra_per_class"], real_extra)
    cf.syn_idx = _member_index(g.done, mine, ["base_per_class", "volume_per_class"], synthetic)
    cf.sizes = (len(real_extra), len(synthetic))
    cf.points = cf.layout.table(_p(real_extra), _p(synthetic))
    fitted = fit_closed_form(cf.points["n_base"], cf.points["n_real_plus"], cf.points["n_syn_star"], n_classes)
    if fitted is None:
        ok = int((cf.points["status"] == "ok").sum())
        cf.reason = (f"{ok} usable n_syn* point(s) of {len(cf.points)}: need >= 3 (the synthetic volumes must "
                     "reach the real-extra accuracies at their base)")  # fmt: skip
    else:
        cf.theta, cf.cov = fitted
    return cf


def closed_form_columns(cf: ClosedForm, published: PublishedMatch | None, level: float, z: float) -> dict:
    """c1, c2 and K with intervals from bootstrap replicates (or Wald), NaN where not fitted or identifiable;
    the published c2 of the matched setting beside them."""
    ok = cf.points is not None and (cf.points["status"] == "ok")
    out = {**cf.arm.to_dict(), "n_classes": cf.n_classes, "K": cf.n_classes, "K_lo": np.nan, "K_hi": np.nan,
           **_published_columns(published, cf.arm["arm_kind"]), "closed_form_reason": cf.reason,
           "closed_form_points": int(ok.sum()) if cf.points is not None else 0, "closed_form_interval": "",
           **dict.fromkeys(("c1", "c1_lo", "c1_hi", "c2", "c2_lo", "c2_hi"), np.nan)}  # fmt: skip
    if cf.theta is None:
        return out
    if cf.reps is not None and np.isfinite(cf.reps).all(axis=1).sum() >= 10:
        lo, hi = percentiles(cf.reps, level)
        out["closed_form_interval"] = "bootstrap"
    else:
        se = np.sqrt(np.diag(cf.cov))
        lo, hi = cf.theta - z * se, cf.theta + z * se
        out["closed_form_interval"] = "wald"
    out["c2"], out["c2_lo"], out["c2_hi"] = np.exp(np.exp([cf.theta[1], lo[1], hi[1]]))
    if out["c2"] < C2_LINEAR:
        # c2^x - 1 -> x ln c2 as c2 -> 1: a straight line whose slope c1^(n_base/K) ln c2 the data fix, while
        # c1 runs off to make up for ln c2 -> 0.
        out["closed_form_reason"] = ("c2 near its lower limit 1: n_syn* is almost linear in n_real+ (beta gives "
                                     "the rate), and c1 is not identifiable")  # fmt: skip
        return out
    if cf.points.loc[ok, "base_per_class"].nunique() < 2:
        out["closed_form_reason"] = "single base size: c1 (how the synthetic need grows with the base) not identifiable"
    else:
        out["c1"], out["c1_lo"], out["c1_hi"] = np.exp([cf.theta[0], lo[0], hi[0]])
    return out


def _published_columns(published: PublishedMatch | None, arm_kind: str) -> dict:
    """The published c2 beside ours: its value, the paper's dataset and generator ('' and NaN where none)."""
    if published is None:
        return {"c2_published": np.nan, "published": "", "published_generator": ""}
    return {"c2_published": published.c2(arm_kind), "published": published.dataset,
            "published_generator": published.generator(arm_kind) or ""}  # fmt: skip


def closed_form_curve(params: tuple[float, float, float], base: int, n_real_plus) -> np.ndarray:
    """n_syn (total synthetic images) matching `n_real_plus` added real images (totals) at a base of `base` images
    per class, for fitted (ln c1, ln ln c2, K): n_base c1^(n_base/K) (c2^(n_real+/n_base) - 1)."""
    ln_c1, lnln_c2, n_classes = params
    n_base = base * n_classes
    return n_base * np.exp(closed_form_log(n_base / n_classes, np.asarray(n_real_plus, float) / n_base, ln_c1, lnln_c2))


def _p(pooled: pd.DataFrame) -> np.ndarray:
    return (pooled["correct"] / pooled["n_test"]).to_numpy(float)


def _member_index(done: pd.DataFrame, mask, keys: list[str], pooled: pd.DataFrame) -> np.ndarray:
    """For each done cell, the row of `pooled` it belongs to (-1 outside `mask`)."""
    idx = np.full(len(done), -1)
    if mask.any():
        idx[mask] = pooled.set_index(keys).index.get_indexer(pd.MultiIndex.from_frame(done.loc[mask, keys]))
    return idx


def _pooled_from(y, m, idx, size) -> np.ndarray:
    inside = idx >= 0
    with np.errstate(invalid="ignore"):
        return np.bincount(idx[inside], y[inside], minlength=size) / np.bincount(idx[inside], m[inside], minlength=size)
