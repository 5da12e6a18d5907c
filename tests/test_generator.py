"""The generator: presets and resolution checks, the conditioning guard, training, exact resume, diffusers
save/load, divergence, epsilon from v-prediction. Tiny models on 8x8 images, a few dozen steps each."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from diffusers import UNet2DModel
from pydantic import ValidationError
from safetensors.torch import load_file

import study.models.generator as generator
from study.grid import GeneratorSpec, GeneratorTrainSpec, ModelSpec
from study.models.generator import (
    PRESETS,
    TrainingDiverged,
    build_unet,
    check_conditioning,
    check_resolution,
    load_generator,
    train_generator,
)
from study.models.objectives import make_objective
from study.store import GENERATOR_CHECKPOINT, GENERATOR_META

TINY = ModelSpec(preset="tiny")
SHORT = GeneratorTrainSpec(steps=30, batch_size=16, warmup=5, checkpoint_every=10)


def toy_data(n=40, classes=4, resolution=8, channels=1):
    """Class c is a bright square in corner c: easy to learn, different per class."""
    images = torch.zeros(n, channels, resolution, resolution, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    half = resolution // 2
    for i, c in enumerate(labels.tolist()):
        r, k = divmod(c, 2)
        images[i, :, r * half : (r + 1) * half, k * half : (k + 1) * half] = 255
    return images, labels


def weights(out_dir):
    return load_file(str(out_dir / "unet" / "diffusion_pytorch_model.safetensors"))


# --- presets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "resolution", "channels", "low", "high"),
    [("tiny", 8, 1, 0.1e6, 0.3e6), ("xs", 28, 1, 0.8e6, 1.5e6), ("s", 32, 3, 3e6, 5e6), ("l", 32, 3, 35e6, 36.5e6)],
)
def test_presets_build_with_a_class_table(preset, resolution, channels, low, high):
    unet = build_unet(ModelSpec(preset=preset), resolution, channels, num_classes=10)
    n = sum(p.numel() for p in unet.parameters())
    assert low <= n <= high  # l is the DDPM CIFAR-10 network (35.7M)
    assert unet.class_embedding.num_embeddings == 11  # 10 classes + the null class
    assert unet.config.in_channels == unet.config.out_channels == channels


@pytest.mark.parametrize(("preset", "resolution"), [("tiny", 7), ("tiny", 2), ("s", 30), ("l", 28), ("l", 8)])
def test_resolution_the_preset_cannot_downsample_is_an_error(preset, resolution):
    with pytest.raises(ValueError, match=rf"model\.preset: '{preset}'.*resolution {resolution}\b"):
        check_resolution(ModelSpec(preset=preset), resolution)


def test_every_preset_takes_its_intended_resolutions():
    for preset in PRESETS:
        for resolution in (32, 64):
            check_resolution(ModelSpec(preset=preset), resolution)
    check_resolution(ModelSpec(preset="s"), 28)  # MedMNIST


def test_channel_override_must_suit_group_norm():
    with pytest.raises(ValueError, match=r"model\.channels"):
        build_unet(ModelSpec(preset="tiny", channels=[12, 20]), 8, 1, 3)


def test_a_unet_that_would_ignore_class_labels_is_refused():
    plain = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    with pytest.raises(ValueError, match="class labels would be ignored"):
        check_conditioning(plain, 8, 1, num_classes=3)
    unet = build_unet(TINY, 8, 1, num_classes=3)
    with pytest.raises(ValueError, match="has 4 rows, expected 6"):
        check_conditioning(unet, 8, 1, num_classes=3 + 2)  # a table for another class count
    with torch.no_grad():
        unet.class_embedding.weight.zero_()  # every class the same vector: labels have no effect
    with pytest.raises(ValueError, match="class labels would be ignored"):
        check_conditioning(unet, 8, 1, num_classes=3)


# --- training, saving, loading -------------------------------------------------------------------------


@pytest.mark.slow
def test_train_saves_a_diffusers_model_that_from_pretrained_loads(tmp_path):
    images, labels = toy_data()
    stats = train_generator(TINY, SHORT, images, labels, 4, tmp_path, seed=1, flip=False, progress=False)
    assert stats["steps"] == 30 and stats["resumed_from"] == 0 and stats["precision"] in ("fp32", "bf16")
    assert stats["parameters"] > 0 and stats["images_per_s"] > 0 and stats["final_loss"] > 0
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not (tmp_path / GENERATOR_CHECKPOINT).exists()  # training state is dropped once the model is saved

    # A user loads the UNet alone and conditions it with integer labels (index 4 = null class) ...
    unet = UNet2DModel.from_pretrained(tmp_path / "unet").eval()
    x, t, y = torch.randn(5, 1, 8, 8), torch.tensor([10, 200, 500, 800, 999]), torch.tensor([0, 1, 2, 3, 4])
    with torch.no_grad():
        direct = unet(x, t, y).sample
    # ... and gets what the study's generator computes from condition vectors.
    gen = load_generator(tmp_path, device="cpu", precision="fp32")
    assert (gen.num_classes, gen.resolution, gen.channels, gen.null_class) == (4, 8, 1, 4)
    assert gen.condition(y).shape == (5, gen.table.shape[1])
    assert torch.allclose(gen.eps(x, t, gen.condition(y)), direct, atol=1e-5)
    # A second call finds the finished model and trains nothing.
    assert train_generator(TINY, SHORT, images, labels, 4, tmp_path, seed=1, flip=False, progress=False) == stats


class Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("prediction", ["epsilon", "edm"])
def test_a_killed_run_resumes_and_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch, prediction):
    TINY = ModelSpec(preset="tiny", prediction=prediction)  # noqa: N806 - the module's TINY, per objective
    images, labels = toy_data()
    train_generator(TINY, SHORT, images, labels, 4, tmp_path / "whole", seed=3, flip=True, progress=False)

    real_save = generator.save_checkpoint

    def save_then_die(path, *args):
        real_save(path, *args)
        if args[5] == 20:  # the step just checkpointed: the process dies right after it
            raise Killed

    monkeypatch.setattr(generator, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train_generator(TINY, SHORT, images, labels, 4, tmp_path / "killed", seed=3, flip=True, progress=False)
    assert (tmp_path / "killed" / GENERATOR_CHECKPOINT).exists() and not (tmp_path / "killed" / GENERATOR_META).exists()
    monkeypatch.setattr(generator, "save_checkpoint", real_save)

    # The model saved by a 20-step run is the EMA of the weights at step 20, not the last weights.
    state = torch.load(tmp_path / "killed" / GENERATOR_CHECKPOINT, weights_only=False)
    names = [name for name, _ in build_unet(TINY, 8, 1, 4).named_parameters()]
    ema = dict(zip(names, state["ema"]["shadow_params"], strict=True))
    spec20 = SHORT.model_copy(update={"steps": 20})
    train_generator(TINY, spec20, images, labels, 4, tmp_path / "twenty", seed=3, flip=True, progress=False)
    saved = weights(tmp_path / "twenty")
    assert all(torch.equal(saved[k], ema[k]) for k in names)
    assert not all(torch.equal(saved[k], state["unet"][k]) for k in names)

    stats = train_generator(TINY, SHORT, images, labels, 4, tmp_path / "killed", seed=3, flip=True, progress=False)
    assert stats["resumed_from"] == 20  # continued from the checkpoint, not from step 0
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)  # EMA weights, bit for bit


def test_training_is_a_function_of_the_seed(tmp_path):
    images, labels = toy_data()
    spec = SHORT.model_copy(update={"steps": 10})
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        train_generator(TINY, spec, images, labels, 4, tmp_path / name, seed=seed, flip=False, progress=False)
    a, b, c = (weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    images, labels = toy_data()
    spec = SHORT.model_copy(update={"lr": 1e12, "grad_clip": None, "warmup": 0})
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf).*train\.lr"):
        train_generator(TINY, spec, images, labels, 4, tmp_path, seed=0, flip=False, progress=False)
    assert not (tmp_path / GENERATOR_META).exists()


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), "uint8"),
        (torch.zeros(4, 1, 8, 6, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), "square"),
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2, 4]), r"labels must be in 0\.\.3"),
    ],
)
def test_bad_training_data(tmp_path, images, labels, match):
    with pytest.raises(ValueError, match=match):
        train_generator(TINY, SHORT, images, labels, 4, tmp_path, seed=0, flip=False, progress=False)


def test_v_prediction_model_outputs_are_returned_as_epsilon(tmp_path):
    images, labels = toy_data()
    spec = SHORT.model_copy(update={"steps": 2})
    model = ModelSpec(preset="tiny", prediction="v_prediction")
    train_generator(model, spec, images, labels, 4, tmp_path, seed=0, flip=False, progress=False)
    gen = load_generator(tmp_path, device="cpu", precision="fp32")
    assert gen.prediction == "v_prediction"
    ac = gen.alphas_cumprod.float()

    class TrueV(torch.nn.Module):
        """The exact v of a clean image x0 = 0: x_t = s * eps, so v = a * eps = (a / s) * x_t."""

        def forward(self, x, t, class_labels):
            a, s = ac[t].sqrt().view(-1, 1, 1, 1), (1 - ac[t]).sqrt().view(-1, 1, 1, 1)
            return SimpleNamespace(sample=a / s * x)

    gen = dataclasses.replace(gen, unet=TrueV())
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 400, 990])
    s = (1 - ac[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(gen.eps(x, t, gen.condition(torch.tensor([0, 1, 4]))), x / s, rtol=1e-4, atol=1e-4)


# --- EDM (Karras et al. 2022) and min-SNR-gamma ----------------------------------------------------------

TINY_EDM = ModelSpec(preset="tiny", prediction="edm")


def test_edm_denoiser_outputs_are_returned_as_epsilon(tmp_path):
    images, labels = toy_data()
    train_generator(TINY_EDM, SHORT.model_copy(update={"steps": 2}), images, labels, 4, tmp_path, seed=0,
                    flip=False, progress=False)  # fmt: skip
    gen = load_generator(tmp_path, device="cpu", precision="fp32")
    assert gen.prediction == "edm"
    sigmas = ((1 - gen.alphas_cumprod) / gen.alphas_cumprod).sqrt()
    assert sigmas[0].item() == pytest.approx(0.002, rel=1e-3) and sigmas[-1].item() == pytest.approx(80, rel=1e-3)
    sd = 0.5

    class TrueDenoiser(torch.nn.Module):
        """The exact EDM network output for clean images x0 = 0: D = 0, so F = -c_skip x / c_out, read from its
        preconditioned inputs c_in x and c_noise = ln(sigma) / 4 (Karras et al. 2022, Table 1)."""

        def forward(self, x_in, c_noise, class_labels):
            s = torch.exp(4 * c_noise).view(-1, 1, 1, 1)
            x = x_in * (s**2 + sd**2).sqrt()
            c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
            return SimpleNamespace(sample=-c_skip * x / c_out)

    gen = dataclasses.replace(gen, unet=TrueDenoiser())
    ac = gen.alphas_cumprod.float()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 400, 990])
    s = (1 - ac[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(gen.eps(x, t, gen.condition(torch.tensor([0, 1, 4]))), x / s, rtol=1e-4, atol=1e-4)


def test_edm_loss_is_the_unit_weight_error_of_the_raw_output():
    objective = make_objective(TINY_EDM, SHORT)
    torch.manual_seed(0)
    x0, noise, normal = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8), torch.randn(4)
    raw = torch.randn(4, 1, 8, 8)
    loss = objective.loss(lambda x, t, y: raw, x0, noise, None, normal, None)
    sigma = (-1.2 + 1.2 * normal).exp().view(-1, 1, 1, 1)
    x = x0 + sigma * noise
    c_skip, c_out = 0.25 / (sigma**2 + 0.25), sigma * 0.5 / (sigma**2 + 0.25).sqrt()
    assert loss.item() == pytest.approx(((raw - (x0 - c_skip * x) / c_out) ** 2).mean().item(), rel=1e-4)


@pytest.mark.parametrize(
    ("prediction", "high_snr", "low_snr"),
    [("epsilon", "gamma/snr", 1.0), ("v_prediction", "gamma/(snr+1)", "snr/(snr+1)")],
)
def test_min_snr_gamma_weights(prediction, high_snr, low_snr):
    objective = make_objective(
        ModelSpec(preset="tiny", prediction=prediction), SHORT.model_copy(update={"snr_gamma": 5.0})
    )
    ac = objective.scheduler.alphas_cumprod.double()
    snr = ac / (1 - ac)
    t = torch.tensor([0, 999])  # SNR far above gamma, and far below
    w = objective.min_snr_weight(t).double()
    first = {"gamma/snr": 5 / snr[0], "gamma/(snr+1)": 5 / (snr[0] + 1)}[high_snr]
    last = low_snr if isinstance(low_snr, float) else snr[-1] / (snr[-1] + 1)
    assert w[0].item() == pytest.approx(float(first), rel=1e-5) and w[1].item() == pytest.approx(float(last), rel=1e-5)
    no_weight = make_objective(ModelSpec(preset="tiny", prediction=prediction), SHORT)
    assert no_weight.snr_gamma is None


@pytest.mark.parametrize(
    ("arm", "match"),
    [
        ({"model": {"prediction": "edm"}, "train": {"snr_gamma": 5.0}}, "snr_gamma weights the epsilon / v loss"),
        ({"model": {"prediction": "edm"}, "train": {"noise_schedule": "linear"}}, "noise_schedule is a DDPM setting"),
        ({"train": {"edm": {"p_mean": -1.0}}}, "train.edm applies to model.prediction edm, not epsilon"),
    ],
)
def test_training_options_must_fit_the_prediction(arm, match):
    with pytest.raises(ValidationError, match=match):
        GeneratorSpec.model_validate(arm)
    GeneratorSpec.model_validate({"model": {"prediction": "edm"}, "train": {"edm": {"p_mean": -1.0}}})
