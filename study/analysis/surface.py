"""The fitted accuracy surface of a study, acc(arm, base, synthetic volume), and the planner's questions on it.

    surfaces = analyse(cells).surfaces                      # one ArmSurface per synthetic arm
    s = surfaces["open"]
    s.match_real(base=50, extra=30)     # synthetic images per class worth 30 more real ones per class, at base 50
    s.target_acc(base=50, acc=0.9)      # synthetic images per class to reach 90% accuracy
    s.at_volume(base=50, volume=200)    # expected accuracy (and n_eff) with 200 synthetic images per class

Each arm has three candidate surfaces, fitted by the joint likelihood on the same cells with the same dispersion phi
and a random effect per generator (study.analysis.joint, study.analysis.closed_form), acc = acc_theta(K n_eff) with,
per class (b base, v volume, K classes),
    one rate        n_eff = b + beta v
    rate per base   n_eff = b + beta(b) v        beta interpolated linearly in log b between measured bases
    closed form     n_eff = b + b ln(1 + v / (b c1^b)) / ln c2      (Wang et al. 2025; n_base / K = b)
and the one with the lowest QAIC = -2 log L / phi + 2 p (p: the surface's own parameters; the curve and tau are
common) answers. Intervals: percentiles of the answer over draws of every parameter from its asymptotic normal law
on the fit's scale (the inverse observed information), each draw with a new generator's effect u ~ Normal(0, tau^2):
the spread a user's own generator would show, not only the uncertainty of the mean. A query outside what was
measured (a base outside the measured bases, a volume beyond the measured volumes, an n_eff outside the real
curve's sizes) is flagged `extrapolated`, and its interval widens to the envelope of all three surfaces' intervals,
since the data cannot tell them apart there.

Where the arm's beta interval in the equivalence analysis is a two-stage one (study.analysis.joint's rule: fewer
than 5 generators, or tau estimated > 0), the random-effect fit behind these draws undercovered (its profile
interval covered 81-83% on open-set arms at nominal 90%, reports/coverage.md), so the answers widen with it
(`WIDENED`): per side, r = how many times farther the two-stage interval [lo2, hi2] reaches from the random-effect
estimate b than the random-effect profile interval [lo, hi] does,
    r_below = max(1, (b - lo2) / (b - lo)),     r_above = max(1, (hi2 - b) / (hi - b)),
from the arm's one-rate fit for the one-rate and closed-form surfaces, and from each base's fit for the rate per
base (interpolated in log b as the rate is). Both are measured from b, the answers' own point, not from each
interval's centre, so a two-stage interval centred elsewhere still widens the side it shifts to. Each draw's distance from the optimum in the surface's own
parameters (the rate, or ln c1 and ln ln c2) and its generator effect u are multiplied by r_below where the draw's
gain at the query (the query's volume, or the answer's) is below the optimum's, by r_above where above; the
answer is then computed from the widened draws as before, and its interval is the union with the unwidened one.
So the widened draws of the rate reach about as far as the two-stage interval on each side, and every answer,
being monotone in the gain, carries that reach through its own (nonlinear) scale: where the two-stage interval
reaches beta <= 0, a one-rate surface's match-real upper end is inf ("never"), which scaling the answer's own
half-widths could not give (a closed form's gain stays > 0 by its form). Measured on 25 simulated studies per
scenario (coverage.py's design, 2 arms at beta 0.3 and 0.1, seeds 5000-5024; match-real of 40 beta at base 20
and n_eff at volume 40; a new generator's answer, beta exp(u) with u ~ N(0, sd^2), is what these intervals
predict), nominal 90%, unwidened -> widened: open-set arms with a generator effect sd 0.3, match-real 86% -> 98%,
n_eff 84% -> 96% (median width x1.48); closed-set arms, sd 0.3 (64% of arms two-stage), 84% -> 88% and
82% -> 86% (x1.27); open-set arms without an effect 96% -> 100% and 94% -> 98% (x1.42): conservative, as the
two-stage interval itself is. The Monte-Carlo standard error is ~4 points at 50 arms per scenario.
Costs ~0.1 s per arm (the draws); never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from study.analysis.mixed import Mixed

DRAWS = 4000
SURFACES = ("one rate", "rate per base", "closed form")
METHOD = "random effect per generator: draws of the fitted parameters and of a new generator's effect"
WIDENED = METHOD + ", widened per side to reach the arm's two-stage beta interval"


@dataclass(frozen=True)
class Answer:
    """One arm's answer to one query; `value`, `lo`, `hi` in `unit`."""

    arm: str
    query: str
    value: float
    lo: float
    hi: float
    extrapolated: bool
    unit: str
    model: str  # the surface that answered
    note: str = ""
    n_eff: float = math.nan  # real images per class worth the same (at_volume)
    n_eff_lo: float = math.nan
    n_eff_hi: float = math.nan
    interval_method: str = METHOD

    def as_json(self) -> dict:
        out = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else
                    ("inf" if v == math.inf else v) if isinstance(v, float) else v) for k, v in out.items()}  # fmt: skip


@dataclass(eq=False)
class Candidate:
    """One fitted surface: its model, optimum and draws of its parameters (natural scale, with generator effects)."""

    name: str
    model: Mixed
    x: np.ndarray
    ll: float
    params: int  # the surface's own parameters (rates or closed-form constants)
    draws: np.ndarray = field(repr=False, default=None)  # (DRAWS, len(x))
    u: np.ndarray = field(repr=False, default=None)  # a new generator's effect per draw
    bases: np.ndarray | None = None  # the rate per base: each rate's base (per class)

    @property
    def qaic(self) -> float:
        return -2.0 * self.ll + 2 * self.params

    def gain(self, base: float, volume, point: bool = False) -> np.ndarray:
        """(n_eff - base) per class at `volume` synthetic images per class, per draw (or at the optimum)."""
        x = self.x[None] if point else self.draws
        u = np.zeros(len(x)) if point else self.u
        k = self.model.k
        volume = np.asarray(volume, float)
        if self.name == "closed form":
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # far draws: no gain or unbounded
                ln_c1, ln_c2 = x[:, k], np.exp(x[:, k + 1])
                gain = np.exp(u) * base * np.log1p(volume / (base * np.exp(ln_c1 * base))) / ln_c2
            return np.nan_to_num(gain, nan=0.0, posinf=np.inf)
        return (self._rate(x, base) + u) * volume

    def volume_for(self, base: float, gain, point: bool = False) -> np.ndarray:
        """Synthetic images per class whose gain is `gain` real images per class, per draw (inf: never)."""
        x = self.x[None] if point else self.draws
        u = np.zeros(len(x)) if point else self.u
        k = self.model.k
        gain = np.asarray(gain, float)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            if self.name == "closed form":
                ln_c1, ln_c2 = x[:, k], np.exp(x[:, k + 1])
                v = base * np.exp(ln_c1 * base) * np.expm1(gain * ln_c2 / (base * np.exp(u)))
            else:
                rate = self._rate(x, base) + u
                v = np.where(rate > 0, gain / np.where(rate > 0, rate, 1.0), np.inf)
        return np.where(gain <= 0, 0.0, np.where(np.isfinite(v) & (v >= 0), v, np.inf))

    def widened(self, base: float, volume: float, below: float, above: float) -> Candidate:
        """A copy whose draws lie `below` (`above`) times as far from the optimum, in the surface's own parameters and
        the generator effect, where their gain at (`base`, `volume`) is below (above) the optimum's."""
        if below == above == 1.0:
            return self
        r = np.where(self.gain(base, volume) < self.gain(base, volume, point=True), below, above)
        own = slice(self.model.k, self.model.k + self.params)
        draws = self.draws.copy()
        draws[:, own] = self.x[own] + r[:, None] * (draws[:, own] - self.x[own])
        return replace(self, draws=draws, u=self.u * r)

    def _rate(self, x: np.ndarray, base: float) -> np.ndarray:
        k = self.model.k
        if self.bases is None:
            return x[:, k]
        rates = x[:, k : k + len(self.bases)]
        log_b = np.log(self.bases)
        w = np.interp(np.log(base), log_b, np.arange(len(log_b), dtype=float))  # fractional index, clamped
        i = min(int(np.floor(w)), len(log_b) - 1)
        j = min(i + 1, len(log_b) - 1)
        return (1 - (w - i)) * rates[:, i] + (w - i) * rates[:, j]


def reach(profile: tuple[float, float, float], lo2: float, hi2: float) -> tuple[float, float]:
    """(r_below, r_above): how many times farther the two-stage interval [lo2, hi2] reaches from the random-effect
    estimate b than the random-effect interval [lo, hi] of `profile` = (b, lo, hi) does, each at least 1; NaN where
    a two-stage end is not finite (no widening is then possible)."""
    b, lo, hi = (float(v) for v in profile)

    def one(far: float, near: float) -> float:
        if not np.isfinite(far):
            return math.nan
        return max(1.0, far / near) if np.isfinite(near) and near > 0 else 1.0

    return one(b - float(lo2), b - lo), one(float(hi2) - b, hi - b)


@dataclass(frozen=True)
class Widening:
    """Per side, how far an arm's two-stage beta intervals reach beyond its random-effect ones (`reach`): `arm` from
    the one-rate fit (the one-rate and closed-form surfaces), `by_base` per measured base (the rate per base)."""

    arm: tuple[float, float] = (1.0, 1.0)
    by_base: dict[float, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, row: dict, per_base: list[dict], profile: dict) -> Widening | None:
        """From a joint fit's arm row and base rows (their two-stage intervals) and the random-effect (beta, lo, hi)
        they replaced, by "arm" and base size (study.analysis.joint.ArmFit.profile); None where none was replaced."""
        if not profile:
            return None
        arm = reach(profile["arm"], row["beta_lo"], row["beta_hi"]) if "arm" in profile else (1.0, 1.0)
        by_base = {float(r["base_per_class"]): reach(profile[r["base_per_class"]], r["beta_lo"], r["beta_hi"])
                   for r in per_base if r["base_per_class"] in profile}  # fmt: skip
        return cls(arm, by_base)

    def ratios(self, c: Candidate, base: float) -> tuple[float, float]:
        """(r_below, r_above) for surface `c` at `base`: a rate per base interpolates its bases' in log b, clamped."""
        if c.bases is None:
            return self.arm
        log_b = np.log(c.bases)
        pairs = np.array([self.by_base.get(float(b), (1.0, 1.0)) for b in c.bases], float)
        below, above = (float(np.interp(np.log(base), log_b, pairs[:, i])) for i in (0, 1))
        return below, above


@dataclass(eq=False)
class ArmSurface:
    """The candidate surfaces of one arm and what was measured, with the planner's queries."""

    arm: str
    arm_kind: str
    n_classes: float
    bases: np.ndarray  # measured base sizes (per class)
    volumes: tuple[float, float]  # measured synthetic volumes (per class)
    real_sizes: tuple[float, float]  # the real curve's measured sizes (per class)
    candidates: dict[str, Candidate]
    level: float = 0.9
    widening: Widening | None = None  # where that interval is two-stage: how far the answers widen (docstring)

    def ratios(self, c: Candidate, base: float) -> tuple[float, float] | None:
        """(r_below, r_above) widening surface `c`'s draws at `base`; None where nothing widens (or cannot)."""
        if self.widening is None:
            return None
        ratios = self.widening.ratios(c, base)
        return ratios if all(np.isfinite(ratios)) else None

    def interval_method(self, base: float) -> str:
        """What the answers' intervals at `base` are: `WIDENED` where the arm's two-stage interval widens them."""
        return WIDENED if self.ratios(self.candidates[self.chosen], base) is not None else METHOD

    def method_note(self, base: float) -> str:
        """Empty where the arm's beta interval is the random-effect one too; else how the answers at `base` widen."""
        if self.widening is None:
            return ""
        ratios = self.ratios(self.candidates[self.chosen], base)
        if ratios is None:
            return ("not widened: the arm's two-stage beta interval is not finite, and the random-effect interval is "
                    "likely too narrow here (reports/coverage.md)")  # fmt: skip
        if ratios == (1.0, 1.0):
            return "the arm's two-stage beta interval lies within the random-effect one: not widened"
        return (f"interval widened to the arm's two-stage beta interval: draws x{ratios[0]:.3g} as far below the "
                f"estimate, x{ratios[1]:.3g} above (the random-effect interval undercovered on such arms, "
                "reports/coverage.md)")  # fmt: skip

    @property
    def chosen(self) -> str:
        return min(self.candidates.values(), key=lambda c: c.qaic).name

    def qaic_table(self) -> dict[str, float]:
        best = min(c.qaic for c in self.candidates.values())
        return {name: c.qaic - best for name, c in self.candidates.items()}

    # --- the queries ----------------------------------------------------------------------------------

    def match_real(self, base: float, extra: float) -> Answer:
        """Synthetic images per class giving the accuracy of `extra` more real images per class at `base`."""
        return self._volume_answer(f"match-real {extra:g} at base {base:g}", base,
                                   lambda c, point: np.full(1 if point else DRAWS, float(extra)))  # fmt: skip

    def target_acc(self, base: float, acc: float) -> Answer:
        """Synthetic images per class for accuracy `acc` at `base` (0 when the base alone reaches it)."""

        def gain(c: Candidate, point: bool) -> np.ndarray:
            theta = c.x[None, : c.model.k] if point else c.draws[:, : c.model.k]
            curve = c.model.curve
            natural = curve.family.natural(theta, curve.floor)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                n_total = np.exp(curve.log_n(np.log(acc / (1 - acc)), natural))
            return n_total / self.n_classes - base

        return self._volume_answer(f"target-acc {acc:g} at base {base:g}", base, gain)

    def at_volume(self, base: float, volume: float) -> Answer:
        """Expected accuracy and n_eff (real images per class) with `volume` synthetic images per class."""
        values = {}
        for name, c in self.candidates.items():
            point = base + c.gain(base, volume, point=True)[0]
            wide = self._widened(c, base, volume)
            n_eff, n_plain = base + wide.gain(base, volume), base + c.gain(base, volume)
            values[name] = (self._acc(wide, n_eff), self._acc(c, np.array([point]), point=True)[0], n_eff, point,
                            self._acc(c, n_plain), n_plain)  # fmt: skip
        acc_hat, n_hat = values[self.chosen][1], values[self.chosen][3]
        why = self._outside(base, volume=volume, n_eff=n_hat)
        lo, hi = self._interval(values, (0, 4), why)
        n_lo, n_hi = self._interval(values, (2, 5), why)
        note = "; ".join(filter(None, [*why, self.method_note(base)]))
        return Answer(self.arm, f"volume {volume:g} at base {base:g}", float(acc_hat), lo, hi, bool(why), "accuracy",
                      self.chosen, note, float(n_hat), n_lo, n_hi, self.interval_method(base))  # fmt: skip

    def real_acc(self, base: float) -> float:
        """The fitted accuracy of `base` real images per class alone (the chosen surface's curve)."""
        return float(self._acc(self.candidates[self.chosen], np.array([float(base)]), point=True)[0])

    # --- helpers --------------------------------------------------------------------------------------

    def _acc(self, c: Candidate, n_eff_per_class, point: bool = False) -> np.ndarray:
        theta = c.x[None, : c.model.k] if point else c.draws[:, : c.model.k]
        curve = c.model.curve
        with np.errstate(over="ignore", invalid="ignore"):
            n_total = np.minimum(np.maximum(n_eff_per_class, 1e-3), 1e12) * self.n_classes
            return curve.acc(n_total, curve.family.natural(theta, curve.floor))

    def _volume_answer(self, query: str, base: float, gain_of) -> Answer:
        values = {}
        for name, c in self.candidates.items():
            v_point = c.volume_for(base, gain_of(c, True), point=True)[0]
            # the widening's side: each draw's gain at the answer (at the largest measured volume if there is none)
            wide = self._widened(c, base, v_point if np.isfinite(v_point) and v_point > 0 else self.volumes[1])
            values[name] = (wide.volume_for(base, gain_of(wide, False)), v_point,
                            c.volume_for(base, gain_of(c, False)))  # fmt: skip
        v_hat = values[self.chosen][1]
        need = base + gain_of(self.candidates[self.chosen], True)[0]
        why = self._outside(base, volume=v_hat if np.isfinite(v_hat) and v_hat > 0 else None, n_eff=need)
        lo, hi = self._interval(values, (0, 2), why)
        note = list(why)
        if not np.isfinite(v_hat):
            note.insert(
                0, "not reachable: the fitted surface never gets there (no gain, or beyond the curve's ceiling)"
            )
        elif v_hat == 0:
            note.insert(0, "the base alone reaches it")
        elif v_hat > self.volumes[1]:
            note.insert(0, f"not reachable within the measured volumes (up to {self.volumes[1]:g} per class)")
        note.append(self.method_note(base))
        return Answer(self.arm, query, float(v_hat), lo, hi, bool(why) or not np.isfinite(v_hat),
                      "synthetic images per class", self.chosen, "; ".join(filter(None, note)),
                      interval_method=self.interval_method(base))  # fmt: skip

    def _widened(self, c: Candidate, base: float, volume: float) -> Candidate:
        """Surface `c` with its draws widened at (`base`, `volume`) where the arm's two-stage interval asks for it."""
        ratios = self.ratios(c, base)
        return c if ratios is None else c.widened(base, volume, *ratios)

    def _interval(self, values: dict, index, extrapolated: list[str]) -> tuple[float, float]:
        """Percentile interval of the chosen surface's draws (at each of `index`: widened and not, their union);
        when extrapolating, the envelope over every surface."""
        tail = (1 - self.level) / 2
        names = list(values) if extrapolated else [self.chosen]
        ends = [np.quantile(values[n][i], [tail, 1 - tail], method="inverted_cdf")
                for n in names for i in np.atleast_1d(index)]  # fmt: skip
        return float(min(e[0] for e in ends)), float(max(e[1] for e in ends))

    def _outside(self, base: float, volume: float | None = None, n_eff: float | None = None) -> list[str]:
        why = []
        if not self.bases.min() <= base <= self.bases.max():
            why.append(
                f"base {base:g} outside the measured bases ({self.bases.min():g}-{self.bases.max():g} per class)"
            )
        if volume is not None and not self.volumes[0] <= volume <= self.volumes[1]:
            why.append(f"volume {volume:.3g} outside the measured volumes ({self.volumes[0]:g}-{self.volumes[1]:g} "
                       "per class)")  # fmt: skip
        if n_eff is not None and np.isfinite(n_eff) and not self.real_sizes[0] <= n_eff <= self.real_sizes[1]:
            why.append(f"n_eff {n_eff:.3g} per class outside the real sizes measured ({self.real_sizes[0]:g}-"
                       f"{self.real_sizes[1]:g}): the real curve is extrapolated")  # fmt: skip
        return why


def arm_surface(arm: dict, fits: dict, closed_form_fit, cells, curve, level: float, seed: int = 0,
                widening: Widening | None = None) -> ArmSurface:  # fmt: skip
    """The surfaces of one arm from its joint-model fits (`fits`: name -> (model, x, ll)), its closed-form fit (or
    None) and its done synthetic cells; `widening`, where the arm's beta interval is a two-stage one, how far it
    widens the answers (`Widening.of`)."""
    rng = np.random.default_rng(seed)
    n_classes = float(cells["n_base"].iloc[0] / cells["base_per_class"].iloc[0])
    found = {}
    if "one rate" in fits:
        found["one rate"] = candidate("one rate", *fits["one rate"], rng)
    if "rate per base" in fits:
        model = fits["rate per base"][0]
        found["rate per base"] = candidate("rate per base", *fits["rate per base"], rng, bases=model.data.levels)
    if closed_form_fit is not None:
        found["closed form"] = candidate("closed form", *closed_form_fit, rng)
    lo, hi = curve.n_range
    return ArmSurface(
        arm=str(arm["arm"]), arm_kind=str(arm["arm_kind"]), n_classes=n_classes,
        bases=np.sort(cells["base_per_class"].unique().astype(float)),
        volumes=(float(cells["volume_per_class"].min()), float(cells["volume_per_class"].max())),
        real_sizes=(lo / n_classes, hi / n_classes), candidates=found, level=level,
        widening=widening,
    )  # fmt: skip


def candidate(name: str, model: Mixed, x, ll: float, rng, bases=None) -> Candidate:
    """A fitted surface with DRAWS parameter draws from Normal(w_hat, inverse information) and generator effects."""
    x = np.asarray(x, float)
    w_hat = model.to_w(x)
    info = model._cache.get("information")
    if info is None:
        info = model.information(x)
    keep = [i for i in range(len(x)) if i != model.tau_index]  # tau enters the draws through u, not the surface
    sub = info[np.ix_(keep, keep)]
    vals, vecs = np.linalg.eigh((sub + sub.T) / 2)
    vals = np.maximum(vals, 1e-12 * max(vals.max(), 1e-300))  # a flat direction: wide, not singular
    cov = (vecs / vals) @ vecs.T
    w = np.repeat(w_hat[None], DRAWS, axis=0)
    w[:, keep] += rng.multivariate_normal(np.zeros(len(keep)), cov, size=DRAWS, method="eigh")
    draws = np.array([model.from_w(row) for row in w])
    tau = float(abs(x[model.tau_index]))
    params = model.gain.size
    return Candidate(name, model, x, ll, params, draws, rng.normal(0.0, tau, DRAWS) if tau > 0 else np.zeros(DRAWS),
                     None if bases is None else np.asarray(bases, float))  # fmt: skip
