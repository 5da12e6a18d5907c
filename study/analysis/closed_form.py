"""The source paper's closed form (Wang et al. 2025; SCIENCE.md 1), per arm, fitted by binomial likelihood on every
cell: the synthetic amount matching n_real+ added real images at a base of n_base,

    n_syn / n_base = c1^(n_base / K) (c2^(n_real+ / n_base) - 1),   inverted:
    n_eff = n_base + n_base ln(1 + n_syn / (n_base c1^(n_base/K))) / ln c2,

sits inside the real learning curve, acc = acc_theta(n_eff), with the generator random effect of
study.analysis.mixed (the generator multiplies its gain n_eff - n_base by exp(u_g)). (ln c1, ln ln c2) and the curve
are fitted jointly on the real cells and the arm's synthetic cells, as study.analysis.simulate plants the form;
intervals by profile likelihood. Only ln(c1)/K is identifiable, so K is fixed to the number of classes; with one
base size, or c2 < 1.01 (almost linear in n_real+), c1 is not identifiable.

For the figure only, each base's n_syn*(n_real+) points: the synthetic amount whose pooled accuracy matches the
pooled real-extra accuracy, by monotone interpolation in log n_syn (isotonic fit of the arm's accuracies over
volumes, then linear in log n_syn; no extrapolation, so targets beyond the volumes are marked, not drawn). The fit
does not use them. Costs ~1-2 s per arm (a fit and two profiles); never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import isotonic_regression

from study.analysis.cells import ARM_KEYS, CURVE_KEYS, Group, arm_mask, generator_of, pool
from study.analysis.joint import interval_df
from study.analysis.mixed import ClosedForm as CFGain
from study.analysis.mixed import Data, Mixed, cutoff, unpooled_dispersion
from study.analysis.published import PublishedMatch

C2_NO_GAIN = 1e6  # beyond this ln c2 ~ 14: the gain n_base ln(...) / ln c2 is nil at any tested volume
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


# --- one arm -----------------------------------------------------------------------------------------


@dataclass
class ClosedFormFit:
    """One arm's closed-form fit: the figure's points, the fitted (ln c1, ln ln c2) and their intervals."""

    arm: pd.Series  # CURVE_KEYS + ARM_KEYS values
    n_classes: float
    reason: str = ""  # why there is no fit
    points: pd.DataFrame | None = None
    theta: np.ndarray | None = None  # (ln c1, ln ln c2)
    lo: np.ndarray | None = None  # profile-interval ends of theta
    hi: np.ndarray | None = None
    generator_sd: float = np.nan
    n_cells: int = 0
    n_bases: int = 0  # base sizes of the arm's done cells
    fitted: tuple | None = None  # (Mixed model, its optimum, log-likelihood), for the planner

    @property
    def key(self) -> tuple:
        return tuple(self.arm[CURVE_KEYS + ARM_KEYS])


def closed_form(g: Group, arm: pd.Series, n_classes: float) -> ClosedFormFit:
    cf = ClosedFormFit(arm, n_classes)
    extra, mine = (g.done["arm_kind"] == "real-extra").to_numpy(), arm_mask(g.done, arm)
    if not mine.any():
        cf.reason = "no done synthetic cells"
        return cf
    if extra.any():
        real_extra = pool(g.done[extra], ["base_per_class", "extra_per_class"])
        synthetic = pool(g.done[mine], ["base_per_class", "volume_per_class"])
        cf.points = PointLayout.build(real_extra, synthetic).table(_p(real_extra), _p(synthetic))
    if not g.usable_curve:
        cf.reason = "no rising real learning curve: effective sizes are undefined"
        return cf
    if not np.isfinite(n_classes):
        cf.reason = "the class count K is unknown"
        return cf
    cf.n_bases = int(g.done.loc[mine, "base_per_class"].nunique())
    _fit(cf, g, g.done[mine])
    return cf


def _fit(cf: ClosedFormFit, g: Group, syn: pd.DataFrame) -> None:
    """The likelihood fit of (ln c1, ln ln c2) with the curve and tau, and profile intervals of both."""
    real = g.real_measurements
    data = Data.build(real, syn, generator_of(syn).to_numpy(), np.zeros(len(syn), int))
    phi, df_phi = unpooled_dispersion(g.curve, Data.build(real, syn, generator_of(syn).to_numpy(),
                                                          syn["base_per_class"]))  # fmt: skip
    model = Mixed(g.curve, data, CFGain(cf.n_classes), phi=phi)
    x, ll = model.fit()
    k = len(g.curve.params)
    if not np.isfinite(ll):
        cf.reason = "the likelihood fit failed"
        return
    model.information(x)

    def interval(j: int) -> tuple[float, float]:
        return model.profile(j, x, ll, cutoff(g.level, interval_df(model, j, x, df_phi)), t_max=20.0)

    cf.theta = x[k : k + 2]
    c2_lo, c2_hi = interval(k + 1)
    cf.lo, cf.hi = np.array([np.nan, c2_lo]), np.array([np.nan, c2_hi])
    cf.generator_sd, cf.n_cells = float(x[-1]), data.n_cells
    cf.fitted = (model, x, ll)
    if not _c2_reason(_c2_values(cf), cf.n_bases):  # c1 is reported: its interval too (a profile costs ~1 s)
        cf.lo[0], cf.hi[0] = interval(k)


def _c2_values(cf: ClosedFormFit) -> dict:
    with np.errstate(over="ignore"):
        return dict(zip(("c2", "c2_lo", "c2_hi"), np.exp(np.exp([cf.theta[1], cf.lo[1], cf.hi[1]])), strict=True))


def _c2_reason(c2: dict, n_bases: int) -> str:
    """Why c1 is not reported, from c2 and its interval ('' where it is)."""
    if c2["c2"] > C2_NO_GAIN:
        return ("c2 runs off with no upper bound: the arm shows no measurable gain, so no synthetic amount is known to "
                "match added real images, and c1 is not identifiable")  # fmt: skip
    at_one = c2["c2_lo"] <= 1.0 + 1e-6
    linear = ("c2 near its lower limit 1: n_syn is almost linear in n_real+ (beta gives the rate), and c1 is not "
              "identifiable")  # fmt: skip
    if c2["c2"] < C2_LINEAR or (at_one and not np.isfinite(c2["c2_hi"])):
        # c2^x - 1 -> x ln c2 as c2 -> 1: a straight line whose slope c1^(n_base/K) ln c2 the data fix, while
        # c1 runs off to make up for ln c2 -> 0.
        return linear
    if n_bases < 2:
        # With one base, c1^(n_base/K) is a free scale that trades off against c2 (which is why c2's lower end
        # may reach 1): c2 is reported with that interval, c1 is not.
        return "single base size: c1 (how the synthetic need grows with the base) not identifiable"
    if at_one:
        return linear
    if not np.isfinite(c2["c2_hi"]):
        return "c2 has no upper bound in these data, so c1 is not identifiable"
    return ""


def closed_form_columns(cf: ClosedFormFit, published: PublishedMatch | None) -> dict:
    """c1, c2 and K with profile-likelihood intervals, NaN where not fitted or identifiable; the published c2 of the
    matched setting beside them."""
    ok = cf.points is not None and (cf.points["status"] == "ok")
    out = {**cf.arm.to_dict(), "n_classes": cf.n_classes, "K": cf.n_classes, "K_lo": np.nan, "K_hi": np.nan,
           **_published_columns(published, cf.arm["arm_kind"]), "closed_form_reason": cf.reason,
           "closed_form_points": int(ok.sum()) if cf.points is not None else 0, "closed_form_cells": cf.n_cells,
           "closed_form_interval": "", "closed_form_generator_sd": cf.generator_sd,
           **dict.fromkeys(("c1", "c1_lo", "c1_hi", "c2", "c2_lo", "c2_hi"), np.nan)}  # fmt: skip
    if cf.theta is None:
        return out
    out["closed_form_interval"] = "profile likelihood, random effect per generator"
    out |= _c2_values(cf)
    reason = _c2_reason(out, cf.n_bases)
    if reason:
        out["closed_form_reason"] = reason
    else:
        out["c1"], out["c1_lo"], out["c1_hi"] = np.exp([cf.theta[0], cf.lo[0], cf.hi[0]])
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
