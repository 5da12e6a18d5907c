"""Sampling: conditioning is wired, per-sample seeds (batch-size independence), the prefix property of sample
sets, the conditional-accuracy diagnostic, and bad settings. One tiny generator trained on 8x8 digits
(~200 steps, a few seconds) serves every test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from study.grid import GridError, SampleSpec, validate_grid
from study.sampling.cost import edm_timesteps
from study.sampling.sample_set import load_sample_set, sample_seeds
from study.sampling.sampler import SAMPLERS, build_sample_set, nfe_per_image, sample
from study.store import PREVIEW, SAMPLES_META

FAST = SampleSpec(sampler="dpmpp", steps=8, guidance=2.0)


def test_conditioning_is_wired(gen):
    seeds = list(range(8))
    spec = SampleSpec(sampler="dpmpp", steps=8, guidance=1.0)
    threes = sample(gen, torch.full((8,), 3), seeds, spec)
    sevens = sample(gen, torch.full((8,), 7), seeds, spec)
    null = sample(gen, torch.full((8,), 3), seeds, spec.model_copy(update={"guidance": 0.0}))  # the null class
    for a, b in ((threes, sevens), (threes, null), (sevens, null)):
        per_image = (a.float() - b.float()).abs().mean(dim=(1, 2, 3))
        assert (per_image > 5).all()  # same noise, different condition: every image changes
    assert torch.equal(threes, sample(gen, torch.full((8,), 3), seeds, spec))  # and seeds repeat exactly


@pytest.mark.parametrize("which", ["gen", "edm_gen"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_image_i_does_not_depend_on_the_batch_size(request, which, sampler):
    gen = request.getfixturevalue(which)  # a DDPM eps generator, and an EDM denoiser sampled through eps
    labels = torch.arange(64) % 10
    seeds = [1000 + i for i in range(64)]
    spec = SampleSpec(sampler=sampler, steps=4, guidance=2.0)
    small = sample(gen, labels, seeds, spec, batch_size=7)
    large = sample(gen, labels, seeds, spec, batch_size=64)
    assert torch.equal(small, large)  # bit for bit, including the stochastic DDPM sampler's step noise
    assert not torch.equal(small[0], small[10])  # same class, other seed: another image


def test_sample_sets_are_prefixes_of_bigger_ones(gen_dir, tmp_path):
    small = build_sample_set(gen_dir, FAST, 3, "root", tmp_path / "v3", device="cpu", progress=False)
    big = build_sample_set(gen_dir, FAST, 5, "root", tmp_path / "v5", device="cpu", progress=False)
    assert (small["n"], big["n"]) == (30, 50)
    a, b = load_sample_set(tmp_path / "v3", 3), load_sample_set(tmp_path / "v5", 3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.labels, torch.arange(10).repeat_interleave(3))
    assert len(load_sample_set(tmp_path / "v5", 5)) == 50
    with pytest.raises(ValueError, match="volume_per_class: 6 asked for.*has 5"):
        load_sample_set(tmp_path / "v5", 6)
    build_sample_set(gen_dir, FAST, 3, "another-root", tmp_path / "other", device="cpu", progress=False)
    assert not torch.equal(load_sample_set(tmp_path / "other", 3).images, a.images)  # the seed root decides


def test_seeds_do_not_depend_on_the_volume():
    small, big = sample_seeds("r", 4, 3), sample_seeds("r", 4, 5)
    assert [small[c * 3 + j] for c in range(4) for j in range(3)] == [
        big[c * 5 + j] for c in range(4) for j in range(3)
    ]
    assert len(set(big)) == len(big)


def test_sample_set_files_and_conditional_accuracy(gen_dir, tmp_path):
    def always_class_0(images):
        probs = np.zeros((len(images), 10))
        probs[:, 0] = 1.0
        return probs

    info = build_sample_set(gen_dir, FAST, 4, "r", tmp_path, score=always_class_0, device="cpu", progress=False)
    assert info["cond_acc"] == pytest.approx(0.1)  # right exactly for the class-0 images
    assert info["cond_acc_per_class"] == [1.0] + [0.0] * 9
    assert info["nfe_per_image"] == 16 and info["images_per_s"] > 0
    meta = json.loads((tmp_path / SAMPLES_META).read_text())
    assert meta["sample"]["sampler"] == "dpmpp" and meta["seed_root"] == "r" and meta["diagnostics"] == info
    with Image.open(tmp_path / PREVIEW) as im:
        assert im.height > im.width  # 10 rows (one per class) of 4 images
    split = load_sample_set(tmp_path, 4)
    assert split.images.dtype == torch.uint8 and split.images.shape == (40, 1, 8, 8)


@pytest.mark.slow
def test_digits_samples_are_recognisable_as_their_class(gen_dir, reference, tmp_path):
    spec = SampleSpec(sampler="dpmpp", steps=10, guidance=2.0)
    info = build_sample_set(gen_dir, spec, 30, "r", tmp_path, score=reference, device="cpu", progress=False)
    assert info["cond_acc"] >= 0.85  # a logistic regression on real digits reads the asked-for class
    unguided = build_sample_set(
        gen_dir, spec.model_copy(update={"guidance": 0.0}), 30, "r", tmp_path / "null", score=reference, progress=False
    )
    assert unguided["cond_acc"] < 0.4  # the null class ignores the label: about chance (0.1)


def test_network_evaluations_per_image(gen):
    assert nfe_per_image(gen, SampleSpec(sampler="dpmpp", steps=20, guidance=1.0)) == 20
    assert nfe_per_image(gen, SampleSpec(sampler="dpmpp", steps=20, guidance=2.0)) == 40  # class + null
    assert nfe_per_image(gen, SampleSpec(sampler="ddim", steps=10, guidance=0.0)) == 10
    assert nfe_per_image(gen, SampleSpec(sampler="heun", steps=10, guidance=1.0)) == 19  # 2 per step but the last


def test_edm_noise_levels(gen):
    steps = edm_timesteps(gen.alphas_cumprod.float().numpy(), 10)
    assert steps == sorted(set(steps), reverse=True) and len(steps) == 10
    ac = gen.alphas_cumprod[steps[0]]
    assert 60 < ((1 - ac) / ac).sqrt() < 100  # sigma_max about 80 (EDM), not the cosine schedule's ~2e4


def test_bad_settings_name_the_key(gen):
    with pytest.raises(ValidationError, match="sampler"):
        SampleSpec(sampler="euler")
    with pytest.raises(ValidationError, match="guidance"):
        SampleSpec(guidance=-1.0)
    grid = {
        "name": "g",
        "dataset": {"name": "digits"},
        "real": {"base": [5]},
        "synthetic": {"volume": [5]},
        "generators": {"closed": {"sample": {"sampler": "euler", "guidance": -1.0}}},
        "seeds": [0],
    }
    with pytest.raises(GridError, match=r"generators\.closed\.sample\.sampler") as err:
        validate_grid(grid)
    assert "generators.closed.sample.guidance" in str(err.value)
    with pytest.raises(ValueError, match=r"labels: strategy scoremix samples \(n, 2\) class pairs"):
        sample(gen, torch.tensor([0]), [0], SampleSpec(strategy="scoremix"))  # mixing strategies take pairs
    with pytest.raises(ValueError, match=r"sample\.sampler: unknown sampler 'euler'"):
        sample(gen, torch.tensor([0]), [0], SampleSpec.model_construct(**{**FAST.model_dump(), "sampler": "euler"}))
    with pytest.raises(ValueError, match="one seed per label"):
        sample(gen, torch.tensor([0, 1]), [0], FAST)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
        sample(gen, torch.tensor([10]), [0], FAST)  # the null class is not a class to sample
