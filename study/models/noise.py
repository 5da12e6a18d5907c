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
_DIFFUSERS_DEFAULT_BETAS = (1e-4, 0.02)  # DDPMScheduler's beta_start, beta_end when a config omits them
_COSINE_MAX_BETA = 0.999  # diffusers' cap in betas_for_alpha_bar (Nichol & Dhariwal 2021, eq. 17)


def scheduler_config(model: ModelSpec, train: GeneratorTrainSpec) -> dict:
    """The DDPMScheduler settings of a generator trained with `train` (its noise schedule and timesteps)."""
    return {
        "num_train_timesteps": train.timesteps,
        "prediction_type": model.prediction,
        "clip_sample": True,  # samplers that predict x0 (DDPM, DDIM) keep it inside the pixel range
        "timestep_spacing": "trailing",  # few-step samplers start at the last timestep (Lin et al. 2024)
        **NOISE_SCHEDULES[train.noise_schedule],
    }


def alphas_cumprod(config: dict) -> np.ndarray | None:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s) of a diffusers scheduler config, for the named beta schedules:
    linear (beta_t evenly spaced), scaled_linear (sqrt(beta_t) evenly spaced) and squaredcos_cap_v2
    (beta_t = min(1 - f((t+1)/T) / f(t/T), 0.999), f(u) = cos((u + 0.008) / 1.008 * pi / 2)^2; Nichol & Dhariwal
    2021). In float32 like diffusers, which agrees to ~1e-6 relative (its torch kernels round differently).
    None for what has no closed form here (trained betas, zero-SNR rescaling, other schedules)."""
    if config.get("trained_betas") is not None or config.get("rescale_betas_zero_snr"):
        return None
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
