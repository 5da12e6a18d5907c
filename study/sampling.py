"""Sampling a trained generator: an unrolled loop over diffusers schedulers with per-sample seeds.

    gen = load_generator(gen_dir)
    images = sample(gen, labels, seeds, SampleSpec(sampler="dpmpp", steps=20, guidance=2.0))   # uint8
    info = build_sample_set(gen_dir, spec, volume_per_class=160, seed_root="...", out_dir=out, score=score)
    split = load_sample_set(out, volume_per_class=40)     # the first 40 of every class: a prefix

Image i depends only on (labels[i], seeds[i], spec): its initial noise (and, for the stochastic DDPM sampler,
its step noise) comes from its own `torch.Generator`, scheduler updates are elementwise, and the network
always runs on batches of one fixed shape (`Generator.eps`), so the batch size never changes an image, bit for
bit. Guidance runs the conditional and the null-class
inputs through the network in one batched forward pass. The model output at every step is a weighted sum of
"terms" (a condition vector and a per-sample weight each); the conditional strategy uses the class and the
null class, and condition or score mixing (AugGen, ScoreMix) only needs other terms.

Cost on one core (reports/bench.md): preset `tiny` on 8x8 digits, DPM-Solver++ 10 steps with guidance
(20 network evaluations per image), 200-350 images/s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.config import SampleSpec
from study.data import Split
from study.generator import Generator, load_generator, resolve_device
from study.keys import derive_seed
from study.store import atomic_path, atomic_write_json

SAMPLES = "samples.safetensors"  # images uint8 (N,C,H,W), labels int64, seeds int64; class-major order
META = "samples.json"
PREVIEW = "preview.png"


# --- samplers: diffusers schedulers built from the generator's training noise schedule -----------------


def _ddim(config: dict, steps: int, device):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(config, prediction_type="epsilon")  # eta = 0 in step(): deterministic
    scheduler.set_timesteps(steps, device=device)
    return scheduler


def _dpmpp(config: dict, steps: int, device):
    from diffusers import DPMSolverMultistepScheduler

    # DPM-Solver++(2M) (Lu et al. 2022) with first-order final steps (stable at few steps) and the predicted
    # clean image clipped to the pixel range at every step, as DDPM and DDIM do (`clip_sample`).
    scheduler = DPMSolverMultistepScheduler.from_config(
        config,
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
        lower_order_final=True,
        thresholding=True,
        sample_max_value=1.0,
    )
    scheduler.set_timesteps(steps, device=device)
    return scheduler


EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0  # Karras et al. 2022, Table 1


def edm_timesteps(alphas_cumprod: torch.Tensor, steps: int) -> list[int]:
    """EDM's noise levels sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, mapped to the
    nearest training timesteps (the network only knows those). sigma_max stays at 80: the cosine schedule's
    last timestep has sigma ~2e4, where few-step samplers waste their first steps."""
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().double()
    smax = min(EDM_SIGMA_MAX, sigmas[-1].item())
    smin = max(EDM_SIGMA_MIN, sigmas[0].item())
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    karras = (smax ** (1 / EDM_RHO) + ramp * (smin ** (1 / EDM_RHO) - smax ** (1 / EDM_RHO))) ** EDM_RHO
    t = np.interp(np.log(karras.numpy()), np.log(sigmas.numpy()), np.arange(len(sigmas)))
    return sorted({int(v) for v in np.round(t)}, reverse=True)


def _heun(config: dict, steps: int, device):
    from diffusers import HeunDiscreteScheduler

    # EDM's deterministic 2nd-order sampler (Karras et al. 2022, Algorithm 1 with S_churn = 0): Heun steps
    # between Karras-spaced noise levels; 2 * steps - 1 network evaluations.
    scheduler = HeunDiscreteScheduler.from_config(config, prediction_type="epsilon")
    scheduler.set_timesteps(device=device, timesteps=edm_timesteps(scheduler.alphas_cumprod, steps))
    return scheduler


def _ddpm(config: dict, steps: int, device):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(config, prediction_type="epsilon")  # ancestral: fresh noise every step
    scheduler.set_timesteps(steps, device=device)
    return scheduler


# name -> (scheduler config, steps, device) -> a fresh scheduler with its timesteps set
SAMPLERS: dict[str, Callable] = {"ddim": _ddim, "dpmpp": _dpmpp, "heun": _heun, "ddpm": _ddpm}
STOCHASTIC = {"ddpm"}  # samplers that draw noise inside step(): each sample needs its own generator
STRATEGIES = {"conditional"}  # implemented here; auggen and scoremix build other terms


def make_scheduler(gen: Generator, spec: SampleSpec):
    """A fresh scheduler (schedulers keep per-run state, e.g. DPM-Solver's past outputs) with its timesteps."""
    if spec.sampler not in SAMPLERS:
        raise ValueError(f"sample.sampler: unknown sampler {spec.sampler!r}; expected one of {sorted(SAMPLERS)}")
    if spec.steps < 1:
        raise ValueError(f"sample.steps: must be at least 1, got {spec.steps}")
    return SAMPLERS[spec.sampler](gen.scheduler_config, spec.steps, gen.device)


def check_spec(spec: SampleSpec) -> None:
    if spec.strategy not in STRATEGIES:
        raise ValueError(
            f"sample.strategy: {spec.strategy!r} is not supported by this version (supported: {sorted(STRATEGIES)})"
        )
    if spec.guidance < 0:
        raise ValueError(f"sample.guidance: must be >= 0 (0 unconditional, 1 conditional), got {spec.guidance}")
    if spec.sampler not in SAMPLERS:
        raise ValueError(f"sample.sampler: unknown sampler {spec.sampler!r}; expected one of {sorted(SAMPLERS)}")


# --- guidance terms ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One network input per sample: the model output used is sum over terms of weight * eps(x, t, cond)."""

    cond: torch.Tensor  # (n, D) condition vectors
    weight: torch.Tensor  # (n,) per-sample weights


def conditional_terms(gen: Generator, labels: torch.Tensor, guidance: float) -> list[Term]:
    """Classifier-free guidance (Ho & Salimans 2022): eps = eps_null + w * (eps_class - eps_null)."""
    n = len(labels)
    ones = torch.ones(n, device=gen.device)
    if guidance == 1.0:
        return [Term(gen.condition(labels), ones)]
    null = gen.condition(torch.full((n,), gen.null_class))
    if guidance == 0.0:
        return [Term(null, ones)]
    return [Term(gen.condition(labels), guidance * ones), Term(null, (1.0 - guidance) * ones)]


def combined_eps(gen: Generator, x: torch.Tensor, t: torch.Tensor, terms: list[Term]) -> torch.Tensor:
    """All terms in one batched forward pass, then their per-sample weighted sum."""
    k = len(terms)
    out = gen.eps(x.repeat(k, 1, 1, 1), t, torch.cat([term.cond for term in terms]))
    return sum(term.weight.view(-1, 1, 1, 1) * part for term, part in zip(terms, out.chunk(k), strict=True))


def nfe_per_image(gen: Generator, spec: SampleSpec) -> int:
    """Network evaluations per image (a guided step costs two: class and null)."""
    per_step = 1 if spec.guidance in (0.0, 1.0) else 2
    return len(make_scheduler(gen, spec).timesteps) * per_step


# --- the sampling loop ---------------------------------------------------------------------------------


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Noise of sample i from its own CPU generator seeded by seeds[i] (the same on every device)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]), gens


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


@torch.no_grad()
def sample_batch(gen: Generator, terms: list[Term], seeds: Sequence[int], spec: SampleSpec) -> torch.Tensor:
    """Run the sampler for one batch and return float images in [-1, 1] (unclamped)."""
    scheduler = make_scheduler(gen, spec)
    noise, gens = initial_noise(seeds, (gen.channels, gen.resolution, gen.resolution))
    x = noise.to(gen.device) * scheduler.init_noise_sigma
    step_kwargs = {"generator": gens} if spec.sampler in STOCHASTIC else {}
    for t in scheduler.timesteps:
        eps = combined_eps(gen, scheduler.scale_model_input(x, t), t, terms)
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    if not torch.isfinite(x).all():
        raise FloatingPointError(
            f"sampling produced NaN/inf values (sampler {spec.sampler}, {spec.steps} steps, guidance "
            f"{spec.guidance}); try sample.guidance closer to 1 or more sample.steps"
        )
    return x


def sample(
    gen: Generator,
    labels: torch.Tensor,
    seeds: Sequence[int],
    spec: SampleSpec,
    device: str = "auto",
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """uint8 (n, C, H, W) images of the given classes; image i depends only on (labels[i], seeds[i], spec)."""
    from tqdm.auto import tqdm

    check_spec(spec)
    if device != "auto" and resolve_device(device) != gen.device:
        raise ValueError(f"device: the generator is on {gen.device}, sampling was asked on {device}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) != len(seeds):
        raise ValueError(f"need one seed per label, got {len(labels)} labels and {len(seeds)} seeds")
    if len(labels) and (labels.min() < 0 or labels.max() >= gen.num_classes):
        raise ValueError(f"labels must be in 0..{gen.num_classes - 1}")
    if batch_size < 1:
        raise ValueError(f"sample.batch_size: must be at least 1, got {batch_size}")
    out = torch.empty((len(labels), gen.channels, gen.resolution, gen.resolution), dtype=torch.uint8)
    for start in tqdm(range(0, len(labels), batch_size), desc="sampling", disable=not progress):
        part = slice(start, start + batch_size)
        terms = conditional_terms(gen, labels[part], spec.guidance)
        out[part] = to_uint8(sample_batch(gen, terms, seeds[part], spec))
    return out


# --- sample sets -----------------------------------------------------------------------------------------


def sample_seeds(seed_root: str, num_classes: int, volume_per_class: int) -> list[int]:
    """Seed of image j of class c, in class-major order; it does not depend on the volume (prefix property)."""
    return [derive_seed(seed_root, c, j) for c in range(num_classes) for j in range(volume_per_class)]


def build_sample_set(
    gen_dir: Path,
    spec: SampleSpec,
    volume_per_class: int,
    seed_root: str,
    out_dir: Path,
    score: Callable[[torch.Tensor], np.ndarray] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Sample `volume_per_class` images of every class into `out_dir`; record conditional accuracy."""
    from safetensors.torch import save_file

    check_spec(spec)
    if volume_per_class < 1:
        raise ValueError(f"volume_per_class: must be at least 1, got {volume_per_class}")
    out_dir = Path(out_dir)
    gen = load_generator(gen_dir, device)
    k = gen.num_classes
    labels = torch.arange(k).repeat_interleave(volume_per_class)
    seeds = sample_seeds(seed_root, k, volume_per_class)

    start = time.perf_counter()
    images = sample(gen, labels, seeds, spec, batch_size=spec.batch_size, progress=progress)
    seconds = time.perf_counter() - start

    with atomic_path(out_dir / SAMPLES) as tmp:
        save_file({"images": images, "labels": labels, "seeds": torch.tensor(seeds, dtype=torch.int64)}, str(tmp))
    save_preview(images, k, volume_per_class, out_dir / PREVIEW)
    info = {
        "n": len(labels),
        "num_classes": k,
        "volume_per_class": volume_per_class,
        "nfe_per_image": nfe_per_image(gen, spec),
        "seconds": seconds,
        "images_per_s": len(labels) / seconds if seconds > 0 else None,
        "pixel_mean": images.float().mean().item() / 255.0,
        "pixel_std": images.float().std().item() / 255.0,
    }
    if score is not None:
        info |= conditional_accuracy(score(images), labels)
    meta = {
        "sample": spec.model_dump(mode="json"),
        "generator_dir": Path(gen_dir).name,
        "seed_root": seed_root,
        "precision": gen.precision,
        "device": str(gen.device),
        "diagnostics": info,
    }
    atomic_write_json(out_dir / META, meta)
    return info


def conditional_accuracy(probs: np.ndarray, labels: torch.Tensor) -> dict:
    """Accuracy of a reference classifier on synthetic images against the classes they were asked for."""
    probs = np.asarray(probs)
    y = labels.numpy()
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"score() must return (n, classes) probabilities for {len(y)} images, got {probs.shape}")
    hit = probs.argmax(1) == y
    per_class = [float(hit[y == c].mean()) for c in np.unique(y)]
    return {"cond_acc": float(hit.mean()), "cond_acc_per_class": per_class}


def save_preview(images: torch.Tensor, num_classes: int, volume_per_class: int, path: Path, cols: int = 16) -> None:
    """A PNG grid, one row per class (its first `cols` images), upscaled so 8 px digits stay visible."""
    from PIL import Image
    from torchvision.utils import make_grid

    cols = min(cols, volume_per_class)
    rows = images.view(num_classes, volume_per_class, *images.shape[1:])[:, :cols].reshape(-1, *images.shape[1:])
    scale = max(1, 32 // images.shape[-1])
    rows = rows.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    grid = make_grid(rows, nrow=cols, padding=2, pad_value=255)
    array = grid.permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array[..., 0] if images.shape[1] == 1 else array).save(tmp, format="PNG")


def load_sample_set(out_dir: Path, volume_per_class: int) -> Split:
    """The first `volume_per_class` images of every class of a sample set (a smaller set is a prefix)."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    meta = json.loads((out_dir / META).read_text())["diagnostics"]
    have, k = meta["volume_per_class"], meta["num_classes"]
    if volume_per_class > have:
        raise ValueError(f"volume_per_class: {volume_per_class} asked for, the sample set at {out_dir} has {have}")
    data = load_file(str(out_dir / SAMPLES))
    idx = (torch.arange(k).view(-1, 1) * have + torch.arange(volume_per_class)).reshape(-1)
    return Split(data["images"][idx], data["labels"][idx])
