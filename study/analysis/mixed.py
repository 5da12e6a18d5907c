"""The joint model with a random effect per generator: cells that share a generator (and its sample set) share its
quality, so they are not independent given the curve.

One arm's synthetic cells and the real cells (which pin the learning curve acc_theta of study.analysis.curve):

    real cell i:                    y_i ~ Binomial(m_i, acc_theta(n_i))
    synthetic cell i of generator g: y_i ~ Binomial(m_i, acc_theta(n_eff_i)),   u_g ~ Normal(0, tau^2)
        `Linear`:      n_eff = n_base + (beta_l(i) + u_g) n_syn            one rate, or one per level l(i): base size,
                                                                           volume (additive effect: beta may be <= 0)
        `ClosedForm`:  n_eff = n_base + exp(u_g) n_base ln(1 + n_syn / (n_base c1^(n_base/K))) / ln c2
                       (Wang et al. 2025's n_syn(n_real+) = n_base c1^(n_base/K) (c2^(n_real+/n_base) - 1), inverted;
                       the generator scales its gain)
With `seed_effect` (Mixed; SEED_EFFECTS) every cell of seed s also carries that seed's effect (S - 1 fixed
effects, summing to 0 over the real cells' seeds; a synthetic cell whose seed has no real cell gets none):
        "logit":  logit p = logit acc_theta(n_eff) + delta_s
        "size":   n_eff gains (e^{a_s} - 1) n_subset: the seed's real subset (n_base; n_real for a real cell) is
                  worth e^{a_s} images per nominal one
A generator is the unit the runner trains once: per seed and base for a closed-set arm, per seed (shared by every
base) for an open-set one; in the table, the cells' `samples_key` (one sample set per generator and seed; a
pretrained model's sample sets, one per seed, are its independent draws). Single cells are overdispersed beyond
their test set's binomial (classifier training noise): every log-likelihood term is divided by a fixed dispersion
phi (a quasi-likelihood; in the normal approximation, the Gaussian likelihood with variance phi times the
binomial's), phi = max(1, Pearson chi2 / df) of the unpooled fit, where every (generator, level) has its own rate
and the curve is held at its real-data fit, so generator effects do not enter it (`unpooled_dispersion`).

Marginal likelihood: each u_g integrated out by adaptive Gauss-Hermite quadrature (Pinheiro & Bates 1995, J. Comput.
Graph. Stat. 4: Q nodes centred on the mode of the generator's integrand and scaled by its curvature; Q = 1 is the
Laplace approximation). tau = 0 is the fixed-effect joint model exactly. Intervals by profile likelihood,
{v : 2 [l_hat - l_p(v)] <= q} with every other parameter (curve, other rates, tau) maximised at each v; q = chi2_1
(level), or F(1, df_phi)(level) when phi > 1 was estimated (Venzon & Moolgavkar 1988 for the profile), and with tau > 0 the F's
df by Satterthwaite's approximation for a variance made of a generator part (from few generators) and a cell part
(`satterthwaite_df`), so that an arm with 3 generators is not read as if tau were known. Nested models (one rate vs
one per base) by the likelihood ratio on chi2 (F with an estimated phi).

Cost: a likelihood evaluation is ~7 vectorised passes over (generators x nodes x cells); a fit ~0.05-0.2 s and a
profile interval ~0.3-1 s for a 3-seed, 3-base, 4-volume arm. Never imports torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from statsmodels.tools.numdiff import approx_hess3

from study.analysis.curve import Curve, Family, binomial_loglik, clip

NODES = 5  # adaptive Gauss-Hermite nodes per generator
_X, _W = np.polynomial.hermite.hermgauss(NODES)
_LOG_W = _X**2 + np.log(_W)  # e^{x^2} w: the weights of the integrand itself
_NEWTON = 12  # at most this many Newton steps to a generator's mode
_DZ = 1e-2  # finite-difference step on the standard-normal scale of u_g
SEED_EFFECTS = ("none", "logit", "size")  # how a seed's real subset shifts its cells (Mixed.prob)


def _saturated(y, m):
    """The binomial log-likelihood of the saturated model (0 log 0 = 0), so that log-likelihoods are -deviance/2."""
    p = np.where(m > 0, y / np.where(m > 0, m, 1), 0.0)
    return special.xlogy(y, p) + special.xlogy(m - y, 1 - p)


@dataclass(frozen=True, eq=False)
class Data:
    """The cells of one fit: real cells, and synthetic cells as (generators, 1, cells) arrays padded with m = 0."""

    n_real: np.ndarray
    y_real: np.ndarray
    m_real: np.ndarray
    n_base: np.ndarray
    n_syn: np.ndarray
    y: np.ndarray
    m: np.ndarray
    level: np.ndarray  # index into `levels`
    generators: tuple
    levels: tuple
    sat: float  # the saturated log-likelihood, subtracted
    # Each cell's seed (its real subset) as an index into `seeds`, the seeds of the real cells: real cells (n,) and
    # synthetic (generators, 1, cells); -1 for a synthetic cell whose seed has no real cell (no seed effect there).
    seed_real: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    seed: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), int))
    seeds: tuple = ()

    @classmethod
    def build(cls, real: pd.DataFrame, syn: pd.DataFrame, generator, level) -> Data:
        """Real cells (n_real, correct, n_test) and synthetic ones (n_base, n_syn, correct, n_test) with each
        synthetic cell's generator and level labels."""
        gen_codes, gens = pd.factorize(pd.Series(list(generator), index=syn.index), sort=True)
        lvl_codes, lvls = pd.factorize(pd.Series(list(level), index=syn.index), sort=True)
        size = max(np.bincount(gen_codes).max(), 1) if len(gen_codes) else 1
        shape = (len(gens), 1, size)
        arrays = {k: np.zeros(shape) for k in ("n_base", "n_syn", "y", "m")}
        arrays["n_base"][:], arrays["n_syn"][:] = 1.0, 1.0
        lvl = np.zeros(shape, int)
        seed_of = np.full(shape, -1)
        seeds = tuple(sorted(real["seed"].unique())) if "seed" in real else ()
        seed_index = {s: i for i, s in enumerate(seeds)}
        syn_seeds = syn["seed"].to_numpy() if "seed" in syn else np.full(len(syn), None)
        slot = np.zeros(len(gens), int)
        cols = syn[["n_base", "n_syn", "correct", "n_test"]].to_numpy(float)
        for i, g in enumerate(gen_codes):
            j = slot[g]
            arrays["n_base"][g, 0, j], arrays["n_syn"][g, 0, j], arrays["y"][g, 0, j], arrays["m"][g, 0, j] = cols[i]
            lvl[g, 0, j] = lvl_codes[i]
            seed_of[g, 0, j] = seed_index.get(syn_seeds[i], -1)
            slot[g] += 1
        y_real, m_real = real["correct"].to_numpy(float), real["n_test"].to_numpy(float)
        seed_real = np.array([seed_index[s] for s in real["seed"]], int) if seeds else np.zeros(len(real), int)
        sat = float(_saturated(y_real, m_real).sum() + _saturated(arrays["y"], arrays["m"]).sum())
        return cls(real["n_real"].to_numpy(float), y_real, m_real, arrays["n_base"], arrays["n_syn"], arrays["y"],
                   arrays["m"], lvl, tuple(gens), tuple(lvls), sat, seed_real, seed_of, seeds)  # fmt: skip

    @property
    def n_cells(self) -> int:
        return len(self.y_real) + int((self.m > 0).sum())


@dataclass(frozen=True)
class Linear:
    """n_eff = n_base + (beta_l + u) n_syn: one exchange rate per level (additive generator effect, beta units)."""

    n_levels: int = 1

    @property
    def size(self) -> int:
        return self.n_levels

    def n_eff(self, gamma, u, d: Data):
        return d.n_base + (gamma[d.level] + u) * d.n_syn

    def lower(self, d: Data) -> np.ndarray:
        """Per level: the rate below which some cell's effective size reaches 0 (beta > -min n_base / n_syn)."""
        ratio = np.where(d.m > 0, d.n_base / d.n_syn, np.inf)
        return np.array([-ratio[d.level == j].min() for j in range(self.n_levels)])

    def start(self, curve: Curve, d: Data) -> np.ndarray:
        """Per level, the best rate on a grid with the curve at its real fit and no generator effect."""
        lower = self.lower(d)
        out = np.zeros(self.n_levels)
        for j in range(self.n_levels):
            grid = lower[j] + np.geomspace(1e-3, 1e3, 120) * max(-lower[j], 1e-3)
            n_eff = np.maximum(d.n_base[None] + grid[:, None, None, None] * d.n_syn[None], 0.5)
            ll = d.y * np.log(clip(curve.acc(n_eff))) + (d.m - d.y) * np.log1p(-clip(curve.acc(n_eff)))
            ll = np.where(d.level[None] == j, ll, 0.0).sum(axis=(1, 2, 3))
            out[j] = grid[int(np.argmax(ll))]
        return out


@dataclass(frozen=True)
class ClosedForm:
    """n_eff = n_base + exp(u) n_base ln(1 + n_syn / (n_base c1^(n_base/K))) / ln c2, params (ln c1, ln ln c2); the
    generator's effect multiplies the gain (log units)."""

    n_classes: float
    size: int = 2

    def n_eff(self, gamma, u, d: Data):
        scale = d.n_base * np.exp(gamma[0] * d.n_base / self.n_classes)
        with np.errstate(over="ignore"):
            return d.n_base + np.exp(u) * d.n_base * np.log1p(d.n_syn / scale) / np.exp(gamma[1])

    def start(self, curve: Curve, d: Data) -> np.ndarray:
        best, arg = -np.inf, np.array([0.0, 0.0])
        for ln_c1 in np.linspace(-0.5, 0.5, 11):
            for ln_c2 in np.geomspace(0.05, 20, 25):
                gamma = np.array([ln_c1, np.log(ln_c2)])
                ll = float(binomial_loglik(d.y, d.m, curve.acc(np.maximum(self.n_eff(gamma, 0.0, d), 0.5))).sum())
                if ll > best:
                    best, arg = ll, gamma
        return arg


@dataclass(eq=False)
class Mixed:
    """The marginal likelihood of one arm's model; parameters x = [curve (free scale), gain params, tau, seed
    effects] (the seed effects, S - 1 for S seeds, only with `seed_effect` and >= 2 seeds: `SeedEffects`)."""

    curve: Curve  # the real-data fit: its family, floor and starting values
    data: Data
    gain: Linear | ClosedForm
    phi: float = 1.0
    random: bool = True  # False: tau fixed at 0 (the fixed-effect joint model)
    seed_effect: str = "none"  # "none" | "logit" | "size" (SEED_EFFECTS)
    _cache: dict = field(default_factory=dict)

    def __post_init__(self):
        # Fixed for the model's life; read on every likelihood evaluation.
        if self.seed_effect not in SEED_EFFECTS:
            raise ValueError(f"seed_effect: expected one of {list(SEED_EFFECTS)}, got {self.seed_effect!r}")
        self.family: Family = self.curve.family
        self.k = len(self.curve.params)
        self.tau_index = self.k + self.gain.size
        self.lower = self.gain.lower(self.data) if isinstance(self.gain, Linear) else None
        self.n_seed_params = len(self.data.seeds) - 1 if self.seed_effect != "none" and len(self.data.seeds) > 1 else 0

    def seed_shifts(self, x) -> np.ndarray:
        """Per seed its effect (sum to zero over the real cells' seeds), then a 0 for cells of other seeds (index -1)."""
        s = np.asarray(x[self.tau_index + 1 :], float)
        if not self.n_seed_params:
            return np.zeros(len(self.data.seeds) + 1)
        return np.concatenate([s, [-s.sum(), 0.0]])

    def prob(self, x, n, seed, n_subset) -> np.ndarray:
        """Accuracy at effective size n of cells of seed index `seed` whose real subset has n_subset images: the
        curve at x, with the seed's effect (a logit shift, or its subset counted exp(a_s) times)."""
        theta = x[: self.k]
        if not self.n_seed_params:
            return clip(self.family.at(np.maximum(n, 0.5), theta, self.curve.floor))
        shift = self.seed_shifts(x)[seed]
        if self.seed_effect == "size":
            n = n + np.expm1(shift) * n_subset
        p = clip(self.family.at(np.maximum(n, 0.5), theta, self.curve.floor))
        return clip(special.expit(special.logit(p) + shift)) if self.seed_effect == "logit" else p

    def _h(self, x, z):
        """Per generator and node z (G, Q): the conditional log-likelihood over phi, minus z^2 / 2."""
        gamma, tau = x[self.k : self.tau_index], x[self.tau_index]
        d = self.data
        n_eff = self.gain.n_eff(gamma, tau * z[..., None], d)
        p = self.prob(x, n_eff, d.seed, d.n_base)
        ll = (d.y * np.log(p) + (d.m - d.y) * np.log1p(-p)).sum(axis=-1)
        return ll / self.phi - 0.5 * z**2

    def real_loglik(self, x) -> float:
        """The real cells' binomial log-likelihood (not over phi, saturated part not subtracted)."""
        d = self.data
        return float(binomial_loglik(d.y_real, d.m_real, self.prob(np.asarray(x, float), d.n_real, d.seed_real,
                                                                   d.n_real)))  # fmt: skip

    def loglik(self, x) -> float:
        """log L(x) - log L(saturated), over phi (so -2 loglik is the scaled deviance at tau = 0)."""
        x = np.asarray(x, float)
        d = self.data
        real = self.real_loglik(x)
        if not len(d.generators):
            return (real - d.sat) / self.phi
        if x[self.tau_index] <= 0.0:
            syn = float(self._h(x, np.zeros((len(d.generators), 1))).sum())
            return (real - d.sat) / self.phi + syn
        return (real - d.sat) / self.phi + float(self._integrals(x).sum())

    def _integrals(self, x) -> np.ndarray:
        """log of each generator's integral of exp(h) over u_g, by adaptive Gauss-Hermite quadrature. Newton starts
        from the last call's modes (the optimiser's calls are close together) and runs to a tolerance, so the
        value does not depend on where it started beyond ~1e-12."""
        n_gen = len(self.data.generators)
        z = self._cache.get("modes", np.zeros(n_gen))
        step3 = np.array([-_DZ, 0.0, _DZ])
        for _ in range(_NEWTON):
            h = self._h(x, z[:, None] + step3)
            d1 = (h[:, 2] - h[:, 0]) / (2 * _DZ)
            d2 = np.minimum((h[:, 2] - 2 * h[:, 1] + h[:, 0]) / _DZ**2, -0.5)
            step = np.clip(-d1 / d2, -2.0, 2.0)
            z = z + step
            if np.max(np.abs(step)) < 1e-6:
                break
        self._cache["modes"] = z
        sigma = 1.0 / np.sqrt(-d2)
        nodes = z[:, None] + np.sqrt(2.0) * sigma[:, None] * _X
        h = self._h(x, nodes)
        h = h + _LOG_W
        top = h.max(axis=1)
        return top + np.log(np.exp(h - top[:, None]).sum(axis=1)) + np.log(sigma) - 0.5 * np.log(np.pi)

    # --- fits ---------------------------------------------------------------------------------------
    # The optimiser works on w, where every coordinate is unbounded: the curve's free params; a linear rate as
    # log(beta - lower) (its effective sizes stay > 0); tau as itself, since the likelihood depends on tau^2 only
    # (u = tau z, z symmetric), so tau = 0 is an ordinary stationary point and |tau| is reported.

    def start(self, refit: bool = True) -> np.ndarray:
        gamma = self.gain.start(self.curve, self.data)
        tau = 0.0 if not self.random else (0.3 * max(np.abs(gamma).max(), 0.05) if isinstance(self.gain, Linear)
                                           else 0.3)  # fmt: skip
        if not self.n_seed_params:
            return np.concatenate([self.curve.free, gamma, [tau]])
        seeds = self.seed_start()
        if not refit:
            return np.concatenate([self.curve.free, gamma, [tau], seeds])
        theta = self._cache["seed_start"][0]
        if isinstance(self.gain, Linear):  # the rates' start with the seeds' effects in: else a far, bad optimum
            gamma = self._rate_grid(np.concatenate([theta, gamma, [0.0], seeds]))
        return np.concatenate([theta, gamma, [tau], seeds])

    def _rate_grid(self, x) -> np.ndarray:
        """Per level, the best rate on Linear.start's grid, the curve and seed effects held at x, tau = 0. With the
        seeds' real fit as the curve's start this is the better start where a seed's effect is large (a simulated
        subset worth exp(N(0, 1))), the plain one (the pooled curve, no seed effect in the grid) where it is ~0
        and the curve is flat (CIFAR-10's augmented arm: binomial deviance 1894 from this start vs 1486):
        `fit` tries both."""
        d, out = self.data, np.array(x[self.k : self.tau_index], float)
        for j in range(self.gain.n_levels):
            grid = self.lower[j] + np.geomspace(1e-3, 1e3, 120) * max(-self.lower[j], 1e-3)
            n_eff = d.n_base[None] + grid[:, None, None, None] * d.n_syn[None]
            p = self.prob(x, n_eff, d.seed[None], d.n_base[None])
            ll = np.where(d.level[None] == j, d.y * np.log(p) + (d.m - d.y) * np.log1p(-p), 0.0).sum(axis=(1, 2, 3))
            out[j] = grid[int(np.argmax(ll))]
        return out

    def seed_start(self) -> np.ndarray:
        """The seed effects of the real cells alone (with the curve refitted): a start near the optimum, since
        from 0 a large effect (a base subset worth almost nothing) can leave the fit in a local optimum."""
        if not self.n_seed_params:
            return np.zeros(0)
        if "seed_start" not in self._cache:
            x = np.concatenate([self.curve.free, np.zeros(self.tau_index - self.k + 1 + self.n_seed_params)])
            own = list(range(self.k)) + list(range(self.tau_index + 1, len(x)))

            def nll(v):
                w = x.copy()
                w[own] = v
                return -self.real_loglik(w)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                x[own] = optimize.minimize(nll, x[own], method="BFGS").x
            self._cache["seed_start"] = (x[: self.k], x[self.tau_index + 1 :])
        return self._cache["seed_start"][1]

    def real_fit_x(self) -> np.ndarray:
        """x at the real cells' own fit with the seed effects (`seed_start`; the curve's real fit without them),
        rates and tau 0: where the seeds' test and the unpooled dispersion hold the curve."""
        x = np.concatenate([self.curve.free, np.zeros(self.tau_index - self.k + 1), self.seed_start()])
        if self.n_seed_params:
            x[: self.k] = self._cache["seed_start"][0]
        return x

    def to_w(self, x) -> np.ndarray:
        w = np.array(x, float)
        if self.lower is not None:
            w[self.k : self.tau_index] = np.log(np.maximum(w[self.k : self.tau_index] - self.lower, 1e-300))
        return w

    def from_w(self, w) -> np.ndarray:
        x = np.array(w, float)
        if self.lower is not None:
            x[self.k : self.tau_index] = self.lower + np.exp(x[self.k : self.tau_index])
        x[self.tau_index] = abs(x[self.tau_index]) if self.random else 0.0
        return x

    def fit(self, x0=None, fixed: dict[int, float] | None = None) -> tuple[np.ndarray, float]:
        """Maximum likelihood from x0 (default: `start`), the coordinates in `fixed` held at their values (given
        on the w scale); BFGS with central-difference gradients."""
        if x0 is None and self.n_seed_params:  # two starts (module docstring of joint): the better fit is kept
            fits = [self.fit(self.start(refit), fixed) for refit in (True, False)]
            return max(fits, key=lambda f: f[1] if np.isfinite(f[1]) else -np.inf)
        w0 = self.to_w(self.start() if x0 is None else x0)
        fixed = dict(fixed or {})
        if not self.random:
            fixed[self.tau_index] = 0.0
        for j, v in fixed.items():
            w0[j] = v
        free = [j for j in range(len(w0)) if j not in fixed]

        def nll(v):
            w = w0.copy()
            w[free] = v
            ll = self.loglik(self.from_w(w))
            return -ll if np.isfinite(ll) else 1e12

        options = {"gtol": 1e-4, "maxiter": 300, "finite_diff_rel_step": 1e-7}
        info = self._cache.get("information")
        if info is not None and len(info) == len(w0):  # the curvature at the optimum: profile fits converge fast
            sub = info[np.ix_(free, free)]
            sub = (sub + sub.T) / 2
            if np.all(np.isfinite(sub)):
                vals, vecs = np.linalg.eigh(sub)
                if vals.min() > 1e-8 * max(vals.max(), 1e-300):
                    inv = (vecs / vals) @ vecs.T
                    options["hess_inv0"] = (inv + inv.T) / 2  # exactly symmetric, as BFGS checks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = optimize.minimize(nll, w0[free], method="BFGS", jac="2-point", options=options)
            if not res.success and res.nit <= 3:
                # Stuck at its start: finite-difference gradients are noisy where the quadrature's modes move
                # (small tau) on a flat ridge of the curve's parameters, and BFGS can stop there with "precision
                # loss" (CIFAR-10's AugGen arm: the per-base fit stayed at the one-rate optimum, 10 log-likelihood
                # units short, and its heterogeneity test read p = 0.43 for 7e-5). A derivative-free simplex
                # steps off it, BFGS finishes; kept only if better.
                simplex = optimize.minimize(
                    nll, res.x, method="Nelder-Mead", options={"maxiter": 200 * len(free), "xatol": 1e-4, "fatol": 1e-6}
                )
                polish = optimize.minimize(nll, simplex.x, method="BFGS", jac="2-point", options=options)
                res = min((res, simplex, polish), key=lambda r: r.fun)
        w = w0.copy()
        w[free] = res.x
        return self.from_w(w), -float(res.fun)

    def profile(self, j: int, x_hat, ll_hat: float, q: float, t_max: float = 30.0) -> tuple[float, float]:
        """The profile-likelihood interval of coordinate j (in its own units): the ends of
        {v : 2 (ll_hat - l_p(v)) <= q}, searched on its w scale t; -inf / inf where the set reaches
        |t - t_hat| = t_max. Each end solves r(t) = +-sqrt(q) for the signed root
        r(t) = sign(t - t_hat) sqrt(2 (ll_hat - l_p(t))), nearly linear in t, by secant steps from the Wald end."""
        c = np.sqrt(q)
        w_hat = self.to_w(x_hat)
        t_hat = float(w_hat[j])
        se = self._wald_se(j, w_hat)
        first = c * (se if np.isfinite(se) and 0 < se < t_max else 0.5)
        ends = []
        for sign in (-1.0, 1.0):
            warm = np.array(x_hat, float)

            def root(t, warm=warm):
                x, ll = self.fit(warm, {j: t})
                warm[:] = x
                return np.sqrt(max(0.0, 2.0 * (ll_hat - ll)))

            dist_prev, r_prev, dist, end = 0.0, 0.0, first, None
            for _ in range(40):
                if dist > t_max:
                    break
                r = root(t_hat + sign * dist)
                if abs(r - c) < 2e-3 * c:
                    end = t_hat + sign * dist
                    break
                if r > r_prev + 1e-9:  # secant on r(dist), kept within [dist / 4, 4 dist]
                    new = dist + (c - r) * (dist - dist_prev) / (r - r_prev)
                    new = float(np.clip(new, dist / 4, 4 * dist))
                else:  # flat: step out
                    new = 2 * dist
                dist_prev, r_prev, dist = dist, r, new
            if end is None:
                ends.append(sign * np.inf)
            else:
                w = w_hat.copy()
                w[j] = end
                ends.append(float(self.from_w(w)[j]))
        return ends[0], ends[1]

    def information(self, x_hat) -> np.ndarray:
        """The observed information -d2 loglik / dw2 at x_hat on the w scale (every coordinate; tau's row and column
        are 0 when tau is fixed), kept for the profile fits that follow."""
        w_hat = self.to_w(x_hat)
        free = [i for i in range(len(w_hat)) if self.random or i != self.tau_index]

        def ll(v):
            w = w_hat.copy()
            w[free] = v
            return self.loglik(self.from_w(w))

        info = np.zeros((len(w_hat), len(w_hat)))
        info[np.ix_(free, free)] = -approx_hess3(w_hat[free], ll)
        self._cache["information"] = info
        return info

    def wald_var(self, j: int, x_hat) -> float:
        """The variance of w_j from the observed information (NaN where it is singular)."""
        info = self._cache.get("information")
        if info is None:
            info = self.information(x_hat)
        free = [i for i in range(len(info)) if self.random or i != self.tau_index]
        try:
            cov = np.linalg.inv(info[np.ix_(free, free)])
        except np.linalg.LinAlgError:
            return np.nan
        var = cov[free.index(j), free.index(j)]
        return float(var) if var > 0 else np.nan

    def _wald_se(self, j: int, w_hat) -> float:
        return float(np.sqrt(self.wald_var(j, self.from_w(w_hat))))


def cutoff(level: float, df: float = np.inf, n_params: int = 1) -> float:
    """The likelihood-ratio cut-off: chi2_n(level) with a known scale, n F(n, df)(level) with one estimated on df."""
    if np.isfinite(df) and df > 0:
        return n_params * float(stats.f.ppf(level, n_params, df))
    return float(stats.chi2.ppf(level, n_params))


def satterthwaite_df(var_random: float, var_fixed: float, df_generators: float, df_cells: float) -> float:
    """Degrees of freedom of Var(beta_hat) = V_g + V_c, a generator part V_g = var_random - var_fixed estimated from
    df_generators independent generators and a cell part V_c = var_fixed on df_cells (inf: a known scale), by
    Satterthwaite (1946): (V_g + V_c)^2 / (V_g^2 / df_g + V_c^2 / df_c). Without a generator part it is df_cells, so
    an arm without generator effects keeps its interval."""
    if not (np.isfinite(var_random) and np.isfinite(var_fixed)):
        return df_cells
    v_g, v_c = max(0.0, var_random - var_fixed), var_fixed
    denom = v_g**2 / max(df_generators, 1.0) + (v_c**2 / df_cells if np.isfinite(df_cells) else 0.0)
    return (v_g + v_c) ** 2 / denom if denom > 0 else df_cells


def generator_df(data: Data) -> int:
    """Independent generator contrasts left for tau: generators minus the rank of the generator-by-level design (a
    closed-set arm's bases each have their own generators: G - bases; an open-set arm's generators serve every
    base: G - 1)."""
    design = np.zeros((len(data.generators), len(data.levels)))
    for g in range(len(data.generators)):
        design[g, np.unique(data.level[g, 0][data.m[g, 0] > 0])] = 1.0
    return max(1, len(data.generators) - int(np.linalg.matrix_rank(design)))


def lr_test(ll_small: float, ll_big: float, n_params: int, df: float = np.inf) -> tuple[float, float]:
    """Likelihood ratio of nested fits (log-likelihoods already over phi) differing by n_params: statistic and
    p-value, chi2 with a known scale, F(n, df) with one estimated on df."""
    stat = max(0.0, 2.0 * (ll_big - ll_small))
    if np.isfinite(df) and df > 0:
        return stat, float(stats.f.sf(stat / n_params, n_params, df))
    return stat, float(stats.chi2.sf(stat, n_params))


def seed_test(curve: Curve, d: Data, seed_effect: str = "logit") -> tuple[float, float]:
    """(F, p) of the seeds' effects on the real cells alone: the real curve refitted with and without `seed_effect`
    (S - 1 fixed effects), F = (D_0 - D_1) / (S - 1) / phi_1 on F(S - 1, n - k - S + 1), D the binomial deviances
    and phi_1 = max(1, Pearson chi2 / df) of the fit with them (the cells' own scatter: classifier noise). NaN
    with fewer than 2 seeds or no residual df. Only real cells enter, so a generator's effect cannot pass for a
    seed's (study.analysis.joint: why that matters)."""
    model = Mixed(curve, d, Linear(1), random=False, seed_effect=seed_effect)
    n_seeds = model.n_seed_params
    df = len(d.y_real) - len(curve.theta) - n_seeds
    if not n_seeds or df <= 0:
        return np.nan, np.nan
    x = model.real_fit_x()
    plain = Mixed(curve, d, Linear(1), random=False)

    def nll(theta):
        return -plain.real_loglik(np.concatenate([theta, x[model.k : model.tau_index + 1]]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theta0 = optimize.minimize(nll, curve.free, method="BFGS").x
    ll_0 = max(-nll(theta0), -nll(curve.free))  # the real fit itself, in case BFGS did worse
    ll_1 = model.real_loglik(x)
    mu = model.prob(x, d.n_real, d.seed_real, d.n_real)
    phi = max(1.0, float(np.sum((d.y_real - d.m_real * mu) ** 2 / (d.m_real * mu * (1 - mu)))) / df)
    f = max(2 * (ll_1 - ll_0), 0.0) / n_seeds / phi
    return f, float(stats.f.sf(f, n_seeds, df))


def unpooled_dispersion(curve: Curve, d: Data, seed_effect: str = "none") -> tuple[float, float]:
    """phi = max(1, Pearson chi2 / df) of the real cells about the curve and of the synthetic cells about a rate
    fitted per (generator, level) with the curve held: the cells' own scatter, free of generator effects. df =
    cells - curve params - (generator, level) pairs. With a `seed_effect` the real cells' curve is refitted with
    it (and held with it): seed-to-seed differences are not cell scatter either (df - (seeds - 1))."""
    model = Mixed(curve, d, Linear(len(d.levels)), random=False, seed_effect=seed_effect)
    x = model.real_fit_x()
    y, m = d.y_real, d.m_real
    mu = model.prob(x, d.n_real, d.seed_real, d.n_real)
    chi2 = float(np.sum((y - m * mu) ** 2 / (m * mu * (1 - mu))))
    pairs = 0
    lower = Linear(len(d.levels)).lower(d)
    for g in range(len(d.generators)):
        for j in range(len(d.levels)):
            cells = (d.level[g, 0] == j) & (d.m[g, 0] > 0)
            if not cells.any():
                continue
            pairs += 1
            nb, ns, yy, mm = d.n_base[g, 0, cells], d.n_syn[g, 0, cells], d.y[g, 0, cells], d.m[g, 0, cells]
            sd = d.seed[g, 0, cells]

            def acc(s, nb=nb, ns=ns, sd=sd, r=-lower[j]):
                return model.prob(x, nb + (np.exp(s) - r) * ns, sd, nb)

            def nll(s, yy=yy, mm=mm, acc=acc):
                return -float(binomial_loglik(yy, mm, acc(s)))

            # Bracketed from a grid: where some cell's n_eff is clamped at 0.5 the likelihood is flat, and a bounded
            # search started blind can stop there (with a seed whose subset is worth less than nominal).
            grid = np.linspace(np.log(-lower[j]) - 12, np.log(-lower[j] + 1e3), 49)
            i = int(np.argmin([nll(v) for v in grid]))
            s = optimize.minimize_scalar(nll, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]),
                                         method="bounded", options={"xatol": 1e-6}).x  # fmt: skip
            mu = acc(s)
            chi2 += float(np.sum((yy - mm * mu) ** 2 / (mm * mu * (1 - mu))))
    df = d.n_cells - len(curve.theta) - model.n_seed_params - pairs
    phi = chi2 / df if df > 0 else 1.0
    return (phi, float(df)) if phi > 1.0 else (1.0, np.inf)  # floored at 1: the binomial scale, known
