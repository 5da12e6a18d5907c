"""The noise schedule a study generator trains with, without torch: the diffusers `DDPMScheduler` settings
(study.models.generator.noise_scheduler builds the scheduler from them) and the schedule's alphas_cumprod in
closed form, which the plan's cost estimate needs before anything is trained (study.sampling.cost).

    config = scheduler_config(model_spec, train_spec)   # DDPMScheduler(**config)
    alpha_bar = alphas_cumprod(config)                   # (T,) float32, prod_{s <= t} (1 - beta_s)
"""

from __future__ import annotations

import math

import numpy as np

from study.grid import GeneratorTrainSpec, ModelSpec

NOISE_SCHEDULES = {  # grid name -> diffusers beta_schedule and the betas of the named schedule
    "linear": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},  # DDPM (Ho et al. 2020)
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},  # improved DDPM (Nichol & Dhariwal 2021)
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
}
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0  # Karras et al. 2022, Table 1 (sampling)
_DIFFUSERS_DEFAULT_BETAS = (1e-4, 0.02)  # DDPMScheduler's beta_start, beta_end when a config omits them
_COSINE_MAX_BETA = 0.999  # diffusers' cap in betas_for_alpha_bar (Nichol & Dhariwal 2021, eq. 17)


def scheduler_config(model: ModelSpec, train: GeneratorTrainSpec) -> dict:
    """The DDPMScheduler settings of a generator trained with `train` (its noise schedule and timesteps). An EDM
    model (study.models.objectives) is sampled on a nominal schedule with EDM's noise levels (`edm_betas`) and
    its epsilon, so its samplers see prediction_type epsilon."""
    config = {
        "num_train_timesteps": train.timesteps,
        "prediction_type": "epsilon" if model.prediction == "edm" else model.prediction,
        "clip_sample": True,  # samplers that predict x0 (DDPM, DDIM) keep it inside the pixel range
        "timestep_spacing": "trailing",  # few-step samplers start at the last timestep (Lin et al. 2024)
    }
    if model.prediction == "edm":
        return config | {"trained_betas": edm_betas(train.timesteps)}
    return config | NOISE_SCHEDULES[train.noise_schedule]


def karras_sigmas(n: int, sigma_min: float = EDM_SIGMA_MIN, sigma_max: float = EDM_SIGMA_MAX, rho: float = EDM_RHO):
    """n noise levels, ascending: (smin^(1/rho) + i/(n-1) (smax^(1/rho) - smin^(1/rho)))^rho (Karras et al. 2022)."""
    ramp = np.linspace(0.0, 1.0, n)
    return (sigma_min ** (1 / rho) + ramp * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho


def edm_betas(timesteps: int) -> list[float]:
    """Betas of an EDM model's nominal DDPM schedule: alpha_bar_t = 1 / (1 + sigma_t^2) at Karras's noise levels,
    sigma from 0.002 (t = 0) to 80 (t = T-1), so DPM-Solver++ with trailing spacing steps on Karras's schedule."""
    alpha_bar = 1.0 / (1.0 + karras_sigmas(timesteps) ** 2)
    return (1.0 - alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])).tolist()


def alphas_cumprod(config: dict) -> np.ndarray | None:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s) of a diffusers scheduler config, for the named beta schedules:
    linear (beta_t evenly spaced), scaled_linear (sqrt(beta_t) evenly spaced) and squaredcos_cap_v2
    (beta_t = min(1 - f((t+1)/T) / f(t/T), 0.999), f(u) = cos((u + 0.008) / 1.008 * pi / 2)^2; Nichol & Dhariwal
    2021). In float32 like diffusers, which agrees to ~1e-6 relative (its torch kernels round differently).
    Trained betas (an EDM model's nominal schedule) are used as they are. None for what has no closed form here
    (zero-SNR rescaling, other schedules)."""
    if config.get("rescale_betas_zero_snr"):
        return None
    if config.get("trained_betas") is not None:
        return np.cumprod(np.float32(1.0) - np.asarray(config["trained_betas"], dtype=np.float32), dtype=np.float32)
    steps, kind = config.get("num_train_timesteps", 1000), config.get("beta_schedule", "linear")
    start, end = (
        config.get("beta_start", _DIFFUSERS_DEFAULT_BETAS[0]),
        config.get("beta_end", _DIFFUSERS_DEFAULT_BETAS[1]),
    )
    if kind == "linear":
        betas = np.linspace(start, end, steps)
    elif kind == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, steps).astype(np.float32) ** 2
    elif kind == "squaredcos_cap_v2":

        def f(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - f((t + 1) / steps) / f(t / steps), _COSINE_MAX_BETA) for t in range(steps)])
    else:
        return None
    return np.cumprod(np.float32(1.0) - betas.astype(np.float32), dtype=np.float32)
