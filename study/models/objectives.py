"""Training objectives of the generator: what the network outputs, at which noise levels it is trained, with
which loss weights; and, for sampling, how its output becomes the noise prediction epsilon that every sampler
and sampling strategy (guidance, AugGen condition mixing, ScoreMix) combines.

    objective = make_objective(model_spec, train_spec)
    loss = objective.loss(net, x0, noise, t, normal, labels)    # one training step's loss; net(x, t, labels)
    objective.scheduler                                         # the DDPM-family schedule samplers step on
    eps = objective.eps(net, x_t, t, cond, alpha, sigma)        # sampling: epsilon whatever the network outputs

Parameterisations (`model.prediction`):
- `epsilon`, `v_prediction` (DDPM: Ho et al. 2020; v: Salimans & Ho 2022). Timesteps t ~ U{0..T-1} of the
  training noise schedule, x_t = a_t x0 + s_t eps with a_t^2 = alphabar_t, s_t^2 = 1 - alphabar_t; the network
  sees (x_t, t) and is trained on eps, or on v = a_t eps - s_t x0. Loss weight per image: 1, or min-SNR-gamma
  (Hang et al. 2023, `train.snr_gamma`): with SNR_t = a_t^2 / s_t^2, w = min(SNR_t, gamma) / SNR_t for eps and
  min(SNR_t, gamma) / (SNR_t + 1) for v (both equal min(SNR_t, gamma) times the x0-space error).
- `edm` (Karras et al. 2022, "Elucidating the design space", Table 1 and section 5): the network F is wrapped as a
  denoiser D(x; s) = c_skip x + c_out F(c_in x; c_noise) of the variance-exploding x = x0 + s eps with
  c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2), c_noise = ln(s) / 4
  (the formulas of diffusers' EDM schedulers, whose `precondition_*` methods compute them). Training noise
  levels ln s ~ N(P_mean, P_std^2); loss lambda(s) |D - x0|^2 with lambda = 1 / c_out^2, which is the unit-weight
  error |F - (x0 - c_skip x) / c_out|^2 of the raw output. Sampling: a nominal DDPM schedule whose noise levels
  run from EDM's s_min = 0.002 (t = 0) to s_max = 80 (t = T-1) in Karras's rho = 7 spacing, so every DDPM-family
  sampler (DDIM, DPM-Solver++, Heun, ancestral DDPM) steps on EDM's own noise levels (DPM-Solver++ with
  `trailing` spacing lands exactly on Karras's rho-schedule), and the network's epsilon is (x - D) / s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from study.grid import EDM_DEFAULTS, GeneratorTrainSpec, ModelSpec
from study.models.noise import scheduler_config


def noise_scheduler(model: ModelSpec, train: GeneratorTrainSpec):
    """The DDPM schedule of training (eps / v) or the nominal one sampling walks (edm); saved with the model."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**scheduler_config(model, train))


class EDMPreconditioning:
    """Karras et al. 2022, Table 1 ("Ours"), computed by diffusers' `EDMEulerScheduler.precondition_*`."""

    def __init__(self, sigma_data: float):
        from diffusers import EDMEulerScheduler

        self.sigma_data = sigma_data
        self.formulas = EDMEulerScheduler(sigma_data=sigma_data, prediction_type="epsilon")

    def denoise(self, run, x: torch.Tensor, sigma: torch.Tensor, labels) -> torch.Tensor:
        """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) for VE inputs x = x0 + sigma eps, sigma (B, 1, 1, 1)."""
        out = run(
            self.formulas.precondition_inputs(x, sigma), self.formulas.precondition_noise(sigma.flatten()), labels
        )
        return self.formulas.precondition_outputs(x, out.float(), sigma)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out^2: unit weight on the raw output F."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


class Objective:
    """DDPM eps / v: the loss of one training step, and the network-output-to-epsilon map of sampling. `net(x, t,
    labels)` is the network's raw output (the caller wraps it in autocast and fixed batch shapes)."""

    def __init__(self, model: ModelSpec, train: GeneratorTrainSpec):
        self.prediction, self.snr_gamma = model.prediction, train.snr_gamma
        self.scheduler = noise_scheduler(model, train)

    def loss(self, net, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, normal: torch.Tensor, labels):
        """(Weighted) MSE of the network's eps or v at timesteps t. `normal` (B,) is a standard normal draw
        (EDM's noise levels; unused here)."""
        x_t = self.scheduler.add_noise(x0, noise, t)
        target = noise if self.prediction == "epsilon" else self.scheduler.get_velocity(x0, noise, t)
        per_image = F.mse_loss(net(x_t, t, labels).float(), target, reduction="none").mean(dim=(1, 2, 3))
        if self.snr_gamma is not None:
            per_image = per_image * self.min_snr_weight(t)
        return per_image.mean()

    def min_snr_weight(self, t: torch.Tensor) -> torch.Tensor:
        """min(SNR, gamma) / SNR for eps, min(SNR, gamma) / (SNR + 1) for v (Hang et al. 2023, section 3.4)."""
        ac = self.scheduler.alphas_cumprod.to(t.device)[t].double()
        snr = ac / (1 - ac)
        clipped = snr.clamp(max=self.snr_gamma)
        return (clipped / snr if self.prediction == "epsilon" else clipped / (snr + 1)).float()

    def eps(self, net, x: torch.Tensor, t: torch.Tensor, cond, alpha: torch.Tensor, sigma: torch.Tensor):
        """epsilon at the sampler's x_t = a x0 + s eps (alpha = a, sigma = s, shaped (n, 1, 1, 1))."""
        out = net(x, t, cond).float()
        if self.prediction == "epsilon":
            return out
        # v = a eps - s x0 and x_t = a x0 + s eps give eps = a v + s x_t (Salimans & Ho 2022).
        return alpha * out + sigma * x.float()


class EDMObjective(Objective):
    """Karras et al. 2022: preconditioned denoiser, log-normal noise levels, lambda(sigma) = 1 / c_out^2."""

    def __init__(self, model: ModelSpec, train: GeneratorTrainSpec):
        super().__init__(model, train)
        edm = train.edm or EDM_DEFAULTS
        self.p_mean, self.p_std = edm.p_mean, edm.p_std
        self.pre = EDMPreconditioning(edm.sigma_data)

    def loss(self, net, x0, noise, t, normal, labels):
        sigma = (self.p_mean + self.p_std * normal).exp().view(-1, 1, 1, 1)  # ln sigma ~ N(P_mean, P_std^2)
        denoised = self.pre.denoise(net, x0 + sigma * noise, sigma, labels)
        return (self.pre.loss_weight(sigma) * (denoised - x0) ** 2).mean()

    def eps(self, net, x, t, cond, alpha, sigma):
        # The sampler's x_t = a (x0 + s eps) with a = 1 / sqrt(1 + s^2): the EDM input is x_t / a, s = sigma / a.
        s = sigma / alpha
        x_ve = x.float() / alpha
        return (x_ve - self.pre.denoise(net, x_ve, s, cond)) / s


def make_objective(model: ModelSpec, train: GeneratorTrainSpec) -> Objective:
    return EDMObjective(model, train) if model.prediction == "edm" else Objective(model, train)
