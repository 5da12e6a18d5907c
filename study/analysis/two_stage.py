"""The two-stage interval on an exchange rate: one rate per generator, then a t interval over generators. It needs
no estimate of the generator variance tau^2, so it stays honest where tau rests on very few generators (an
open-set arm has one per seed), at the price of width.

Stage 1 fits the fixed-effect joint model (study.analysis.mixed with tau = 0) with one rate beta_g per generator g
and the real learning curve's params free (with `seed_effect`, each seed's effect too, so a generator is compared
with its own seed's real cells and a seed whose subset teaches little does not push its generators to beta's
lower bound and the others' up: study.analysis.joint), by quasi-likelihood over the arm's dispersion phi. Stage 2 takes the
plain mean over the G generators and a variance from two parts:

    beta_bar = (1/G) sum_g beta_g
    Var(beta_bar) = s^2 / G  +  (1' S 1 - tr S) / G^2

s^2 is the sample variance of the beta_g (generator effects, cell noise and what the curve does to each generator
alone, all seen in their spread); S is the covariance of the beta_g from the observed information, whose
off-diagonal part is what the shared curve moves in all of them together, which no spread over generators can show
(without it the interval undercovers even without generator effects). The interval is
beta_bar +- t_{G-1}((1 + level) / 2) sqrt(Var(beta_bar)), the t on G - 1 df as in the two-stage (summary-statistic)
analysis of clustered data (e.g. Donner & Klar 2000, Design and Analysis of Cluster Randomization Trials, ch. 5).
The analysis reports that half-width about the random-effect fit's rate rather than about beta_bar (`centred`):
each beta_g is bounded below and not above, so beta_bar is skewed upward.
Measured coverage against the random-effect profile interval: reports/coverage.md.

Cost: one fit with G + curve parameters and its observed information, ~0.1-0.5 s per arm. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from study.analysis.curve import Curve
from study.analysis.mixed import Data, Linear, Mixed

# The label of the intervals the analysis reports with this estimator's width (study.analysis.joint): centred on the
# random-effect fit's rate, whose centre is unbiased where the plain mean of the beta_g is not (`centred`).
METHOD = "two-stage width: the random-effect rate +- t(G-1) se over generators"


@dataclass(frozen=True)
class TwoStage:
    beta: float
    lo: float
    hi: float
    n_generators: int
    rates: np.ndarray  # beta_g, one per generator
    spread_var: float  # s^2 / G
    shared_var: float  # (1' S 1 - tr S) / G^2: the shared curve's part

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def centred(self, beta: float, lower: float) -> tuple[float, float]:
        """The interval beta +- half_width about another estimate of the same rate, its lower end held at the rate's
        lower bound. Why: each beta_g is bounded below (-n_base / n_syn, where an effective size reaches 0) and not
        above, so the plain mean of the beta_g is skewed upward where some generators sit at their bound (BreastMNIST,
        issue 20: 0.12 against the random-effect fit's 0.055) and, in simulation, by 5-14% of the rate even
        without (reports/coverage.md); the random-effect fit of one rate to every cell is not. The spread of the
        beta_g still measures how far generators scatter, so the width is kept."""
        return max(beta - self.half_width, lower), beta + self.half_width


def generator_rates(
    curve: Curve, data: Data, phi: float = 1.0, seed_effect: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: beta_g per generator (its own level) with the curve refitted jointly, and their covariance S from
    the observed information (beta_g = lower_g + exp(w_g), so S = J Cov(w) J with J = diag(beta_g - lower_g))."""
    n_gen = len(data.generators)
    per_gen = replace(data, level=np.broadcast_to(np.arange(n_gen)[:, None, None], data.level.shape).copy(),
                      levels=tuple(data.generators))  # fmt: skip
    model = Mixed(curve, per_gen, Linear(n_gen), phi=phi, random=False, seed_effect=seed_effect)
    x, _ = model.fit()
    info = model.information(x)
    k = model.k
    free = [i for i in range(len(x)) if i != model.tau_index]  # curve, rates and any seed effects
    rates = np.asarray(x[k : model.tau_index], float)
    try:
        cov_w = np.linalg.inv(info[np.ix_(free, free)])[k : k + n_gen, k : k + n_gen]
    except np.linalg.LinAlgError:
        cov_w = np.full((n_gen, n_gen), np.nan)
    jac = rates - model.lower
    return rates, jac[:, None] * cov_w * jac[None, :]


def two_stage(curve: Curve, data: Data, level: float, phi: float = 1.0, seed_effect: str = "none") -> TwoStage:
    """The two-stage interval over the generators of `data` (its levels are ignored: one rate per generator).
    Needs >= 2 generators (else NaN ends)."""
    n_gen = len(data.generators)
    if n_gen < 2:
        return TwoStage(np.nan, np.nan, np.nan, n_gen, np.full(n_gen, np.nan), np.nan, np.nan)
    rates, cov = generator_rates(curve, data, phi, seed_effect)
    spread = float(rates.var(ddof=1)) / n_gen
    shared = float(cov.sum() - np.trace(cov)) / n_gen**2 if np.all(np.isfinite(cov)) else 0.0
    beta = float(rates.mean())
    half = float(stats.t.ppf((1 + level) / 2, n_gen - 1)) * np.sqrt(max(spread + shared, 0.0))
    return TwoStage(beta, beta - half, beta + half, n_gen, rates, spread, shared)
