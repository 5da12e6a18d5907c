"""The cost of sampling, counted without torch (study.sampling.cost) and by running it: the plan's estimate of
network evaluations per image equals what a sample set records in samples.json and what the network ran,
for conditional, guided, ScoreMix-with-step_range and Heun sampling; the torch-free trajectory length equals
the length of the diffusers scheduler's timesteps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from study.grid import GeneratorTrainSpec, ModelSpec, expand, validate_grid
from study.models.generator import Generator
from study.models.noise import alphas_cumprod, scheduler_config
from study.models.objectives import noise_scheduler
from study.runner.plan import make_plan, sample_nfe_per_image
from study.sampling.cost import edm_timesteps, nfe_per_image, trajectory_length
from study.sampling.sampler import SAMPLERS, build_sample_set
from study.store import SAMPLES_META

TINY = ModelSpec(preset="tiny")
# The generator of conftest.gen_dir: the default cosine schedule of 1000 timesteps.
GEN_TRAIN = {"steps": 200, "batch_size": 64, "lr": 1e-3, "warmup": 20}
ARMS = {
    "conditional": {"sampler": "dpmpp", "steps": 6, "guidance": 1.0},
    "guided": {"sampler": "dpmpp", "steps": 6, "guidance": 2.0},
    "scoremix-late": {"sampler": "ddim", "steps": 8, "guidance": 2.0, "strategy": "scoremix", "step_range": (0.5, 1.0)},
    # 80 Karras levels land on 77 distinct training timesteps of this schedule: 153 evaluations, not 2 * 80 - 1
    "heun": {"sampler": "heun", "steps": 80, "guidance": 1.0},
}


@pytest.mark.parametrize("noise_schedule", ["cosine", "linear", "scaled_linear"])
@pytest.mark.parametrize("timesteps", [1000, 100])
def test_trajectory_length_is_the_schedulers(noise_schedule, timesteps):
    """Counted without torch = len(scheduler.timesteps) of the sampler's diffusers scheduler, including the
    trailing spacing's extra step (T = 100, 29 steps: 30) and Heun's shared timesteps."""
    config = scheduler_config(TINY, GeneratorTrainSpec(noise_schedule=noise_schedule, timesteps=timesteps))
    ddpm = noise_scheduler(TINY, GeneratorTrainSpec(noise_schedule=noise_schedule, timesteps=timesteps))
    stored = dict(ddpm.config)  # what a saved generator's scheduler_config holds
    closed_form = alphas_cumprod(config)
    np.testing.assert_allclose(closed_form, ddpm.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-7)
    for sampler, build in SAMPLERS.items():
        for steps in (1, 2, 7, 20, 29, 60):
            visited = len(build(stored, steps, "cpu").timesteps)
            assert trajectory_length(sampler, steps, stored, ddpm.alphas_cumprod.numpy()) == visited, (sampler, steps)
            assert trajectory_length(sampler, steps, config, closed_form) == visited, (sampler, steps)
    assert len(build(stored, 29, "cpu").timesteps) == (30 if timesteps == 100 else 29)  # the trailing quirk
    if timesteps == 100:  # 60 Karras levels share timesteps of a 100-step schedule: fewer than 2 * 60 - 1 calls
        assert trajectory_length("heun", 60, stored, ddpm.alphas_cumprod.numpy()) < 2 * 60 - 1


def test_unknown_schedule_gives_the_upper_bound():
    assert trajectory_length("heun", 10, None, None) == 19
    assert trajectory_length("dpmpp", 10, None, None) == 10
    assert alphas_cumprod({"beta_schedule": "linear", "rescale_betas_zero_snr": True}) is None


def test_an_edm_models_schedule_is_known_before_training():
    """An EDM model's nominal schedule (trained betas at Karras's noise levels) has its closed form too, so the
    plan counts its Heun levels exactly."""
    edm = ModelSpec(preset="tiny", prediction="edm")
    config = scheduler_config(edm, GeneratorTrainSpec())
    ddpm = noise_scheduler(edm, GeneratorTrainSpec())
    np.testing.assert_allclose(alphas_cumprod(config), ddpm.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-7)
    stored = dict(ddpm.config)
    for sampler, build in SAMPLERS.items():
        for steps in (2, 10, 20):
            visited = len(build(stored, steps, "cpu").timesteps)
            assert trajectory_length(sampler, steps, config, alphas_cumprod(config)) == visited, (sampler, steps)


def test_nfe_counts_guidance_and_step_range():
    from study.grid import SampleSpec

    assert nfe_per_image(SampleSpec(guidance=1.0), 10) == 10
    assert nfe_per_image(SampleSpec(guidance=0.0), 10) == 10
    assert nfe_per_image(SampleSpec(guidance=2.0), 10) == 20  # class + null
    scoremix = SampleSpec(guidance=2.0, strategy="scoremix")
    assert nfe_per_image(scoremix, 10) == 30  # class i + class j + null
    assert nfe_per_image(scoremix.model_copy(update={"step_range": (0.5, 1.0)}), 10) == 25  # mixing half the steps


def test_edm_timesteps_are_distinct_and_descending():
    ac = alphas_cumprod(scheduler_config(TINY, GeneratorTrainSpec()))
    levels = edm_timesteps(ac, 10)
    assert levels == sorted(set(levels), reverse=True) and len(levels) == 10
    assert 60 < np.sqrt((1 - ac[levels[0]]) / ac[levels[0]]) < 100  # sigma_max about 80 (EDM)


def test_plan_estimate_equals_what_sampling_records_and_runs(gen_dir, tmp_path, monkeypatch):
    grid = validate_grid(
        {
            "name": "nfe",
            "dataset": {"name": "digits"},
            "real": {"base": [20]},
            "synthetic": {"volume": [1]},
            "generators": {
                arm: {"model": {"preset": "tiny"}, "train": GEN_TRAIN, "sample": s} for arm, s in ARMS.items()
            },
            "seeds": [0],
        }
    )
    plan = make_plan(grid, expand(grid))
    estimate = {n.arm: sample_nfe_per_image(grid, n) for n in plan.by_stage("samples")}
    rows = []  # network rows run, one per image and guidance input, padding excluded
    real_eps = Generator.eps

    def counting_eps(self, x, t, cond):
        rows.append(len(x))
        return real_eps(self, x, t, cond)

    monkeypatch.setattr(Generator, "eps", counting_eps)
    for arm, spec in ((a, grid.generators[a].sample) for a in ARMS):
        rows.clear()
        info = build_sample_set(gen_dir, spec, 1, "r", tmp_path / arm, device="cpu", progress=False)
        recorded = json.loads((tmp_path / arm / SAMPLES_META).read_text())["diagnostics"]["nfe_per_image"]
        assert estimate[arm] == recorded == info["nfe_per_image"] == sum(rows) / info["n"], arm
    assert estimate["heun"] == 153 and estimate["scoremix-late"] == 20  # 4 steps x 2 + 4 steps x 3
