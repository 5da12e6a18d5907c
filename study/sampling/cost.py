"""What a sample set costs, without torch, so the plan can say it before anything runs: the timesteps a sampler
visits, the network evaluations per image (NFE), and the candidates a filtered text-to-image set draws.
study.sampling.sampler counts with these same functions (and its Heun sampler takes its noise levels from
`edm_timesteps`), so the plan's estimate and the `nfe_per_image` recorded in samples.json agree.

    n = trajectory_length("heun", 10, config, alphas_cumprod)   # network calls of one trajectory: 19 or fewer
    nfe_per_image(spec, n)                                      # x2 with guidance, x3 for guided ScoreMix steps

The trajectory length is exact when the noise schedule is known (a study generator: study.models.noise gives
it in closed form) with one caveat for Heun: its Karras levels are rounded onto training timesteps, and the
closed form agrees with diffusers' float32 schedule only to ~1e-6, so a level within that distance of a
midpoint between two timesteps may round the other way (in 4,050 checked combinations of schedule, timesteps
and steps, one such case changed the count, by 2 evaluations). Without the schedule (a pretrained model before
it is fetched), the length is `steps` and, for Heun, its upper bound 2 * steps - 1.
"""

from __future__ import annotations

import math

import numpy as np

from study.grid import AugGenSearch, SampleSpec
from study.models.noise import EDM_RHO, EDM_SIGMA_MAX, EDM_SIGMA_MIN  # Karras et al. 2022, Table 1


def edm_timesteps(alphas_cumprod: np.ndarray, steps: int) -> list[int]:
    """EDM's noise levels sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, mapped to the
    nearest training timesteps (the network only knows those), distinct and in descending order. sigma_max
    stays at 80: the cosine schedule's last timestep has sigma ~2e4, where few-step samplers waste their first
    steps. `alphas_cumprod` as the scheduler holds it (float32 in diffusers)."""
    ac = np.asarray(alphas_cumprod)
    sigmas = np.sqrt((1 - ac) / ac).astype(np.float64)
    smax = min(EDM_SIGMA_MAX, float(sigmas[-1]))
    smin = max(EDM_SIGMA_MIN, float(sigmas[0]))
    ramp = np.linspace(0, 1, steps)
    karras = (smax ** (1 / EDM_RHO) + ramp * (smin ** (1 / EDM_RHO) - smax ** (1 / EDM_RHO))) ** EDM_RHO
    t = np.interp(np.log(karras), np.log(sigmas), np.arange(len(sigmas)))
    return sorted({int(v) for v in np.round(t)}, reverse=True)


def spaced_timesteps(steps: int, config: dict) -> int:
    """How many timesteps diffusers' DDIM, DDPM and DPM-Solver++ schedulers visit for `steps` inference steps
    under the config's `timestep_spacing`: "trailing" takes np.arange(T, 0, -T / steps), which holds steps + 1
    values when T / steps does not divide evenly in floating point (T = 100, 29 steps: 30); "leading" and
    "linspace" take exactly `steps`."""
    if config.get("timestep_spacing") == "trailing":
        train = config.get("num_train_timesteps", 1000)
        return len(np.arange(train, 0, -train / steps))
    return steps


def trajectory_length(sampler: str, steps: int, config: dict | None, alphas_cumprod: np.ndarray | None) -> int:
    """Network calls (per guidance input) of one sampling trajectory: the length of the timesteps of the
    scheduler study.sampling.sampler builds from the diffusers scheduler `config` of the generator. Heun
    evaluates twice per step but the last: 2n - 1 for the n distinct timesteps of `edm_timesteps` (fewer than
    `steps` when levels share a timestep: small T, many steps). Unknown `config` or `alphas_cumprod`: `steps`,
    and for Heun the upper bound 2 * steps - 1 (also the exact count of diffusers pipelines' Heun with Karras
    sigmas, which keeps fractional timesteps)."""
    if sampler == "heun":
        levels = steps if alphas_cumprod is None else len(edm_timesteps(alphas_cumprod, steps))
        return 2 * levels - 1
    return steps if config is None else spaced_timesteps(steps, config)


def mixes_at(step: int, steps: int, step_range: tuple[float, float] | None) -> bool:
    """Whether sampler step `step` of `steps` (0 = the noisiest) lies in [start, end) of the trajectory."""
    return step_range is None or step_range[0] <= step / steps < step_range[1]


def nfe_per_image(spec: SampleSpec, trajectory: int) -> int:
    """Network evaluations per image over a trajectory of `trajectory` network calls: a guided step costs two
    (class and null), a guided ScoreMix step three (class i, class j, null); steps outside `step_range` cost
    what plain conditional sampling does."""
    plain = 1 if spec.guidance in (0.0, 1.0) else 2
    mixed = plain + (spec.strategy == "scoremix" and spec.guidance != 0.0)
    return sum(mixed if mixes_at(k, trajectory, spec.step_range) else plain for k in range(trajectory))


def pipeline_nfe_per_image(spec: SampleSpec, trajectory: int) -> int:
    """Network evaluations per generated image of a diffusers text-to-image pipeline: it guides (a second,
    unconditional pass) when guidance_scale > 1."""
    return trajectory * (2 if spec.guidance > 1 else 1)


def candidates_per_class(volume: int, drop: float | None) -> int:
    """Candidates to draw so that dropping the `drop` fraction leaves `volume`."""
    return volume if not drop else math.ceil(volume / (1.0 - drop) - 1e-9)


def search_images(spec: SampleSpec) -> int:
    """Images AugGen's alpha/beta search draws, once per sample set: grid points x pairs x images (the pairs
    are at most `search.pairs`; fewer when the set has fewer pairs)."""
    if not spec.searches:
        return 0
    from study.sampling.pairs import search_grid

    search = spec.search or AugGenSearch()
    points = len(search_grid(search.step)) ** ((spec.pair_weight_i == "search") + (spec.pair_weight_j == "search"))
    return points * search.pairs * search.images
