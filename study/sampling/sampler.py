"""Sampling a trained generator: an unrolled loop over diffusers schedulers with per-sample seeds.

    gen = load_generator(gen_dir)
    images = sample(gen, labels, seeds, SampleSpec(sampler="dpmpp", steps=20, guidance=2.0))   # uint8
    info = build_sample_set(gen_dir, spec, volume_per_class=160, seed_root="...", out_dir=out, score=score)
    mixed = sample(gen, pairs, seeds, SampleSpec(strategy="scoremix", weight=0.5))   # pairs: (n, 2) classes
    info = build_sample_set(gen_dir, SampleSpec(strategy="auggen", pairs="far"), 160, "...", out, space=space)

A sample set is written and read by study.sampling.sample_set (`load_sample_set(out, 40, labels="soft")`).

Image i depends only on (labels[i], seeds[i], spec): its initial noise (and, for the stochastic DDPM sampler,
its step noise) comes from its own `torch.Generator`, scheduler updates are elementwise, and the network
always runs on batches of one fixed shape (`Generator.eps`), so the batch size never changes an image, bit for
bit. Guidance runs the conditional and the null-class
inputs through the network in one batched forward pass. The model output at every step is a weighted sum of
"terms" (a condition vector and a per-sample weight each); the conditional strategy uses the class and the
null class; AugGen mixes the class embeddings into one condition alpha*E[i] + beta*E[j]; ScoreMix adds the
two classes' (guided) outputs lambda*eps_i + (1-lambda)*eps_j, three inputs in one pass. With lambda = 1, or
alpha = 1 and beta = 0, both reduce to conditional sampling of class i bit for bit (tested).

Mixed sample sets (study.sampling.pairs picks the pairs): `volume_per_class` x classes images spread over the
pairs, image k of pair p seeded by (p, k), so a smaller volume is a prefix of every pair's images. Labels are
given at load time by a policy (`new-class`, `soft`, `dominant`), so one sample set serves every policy.

Cost on one core (reports/bench.md): preset `tiny` on 8x8 digits, DPM-Solver++ 10 steps with guidance
(20 network evaluations per image), 200-350 images/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.grid import AugGenSearch, SampleSpec
from study.keys import derive_seed
from study.models.device import resolve_device
from study.models.generator import Generator, load_generator
from study.sampling import cost
from study.sampling.cost import edm_timesteps, mixes_at
from study.sampling.pairs import (
    ClassSpace,
    cosine_distances,
    linear_cka,
    max_pairs,
    pair_counts,
    search_alpha_beta,
    search_grid,
    select_pairs,
)
from study.sampling.sample_set import (
    conditional_accuracy,
    layout_seeds,
    mixed_labels,
    set_layout,
    source_probability,
    write_sample_set,
)

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


def _heun(config: dict, steps: int, device):
    from diffusers import HeunDiscreteScheduler

    # EDM's deterministic 2nd-order sampler (Karras et al. 2022, Algorithm 1 with S_churn = 0): Heun steps
    # between Karras-spaced noise levels; 2n - 1 network evaluations for the n distinct training timesteps the
    # levels land on (n <= steps: study.sampling.cost.trajectory_length).
    scheduler = HeunDiscreteScheduler.from_config(config, prediction_type="epsilon")
    scheduler.set_timesteps(device=device, timesteps=edm_timesteps(scheduler.alphas_cumprod.numpy(), steps))
    return scheduler


def _ddpm(config: dict, steps: int, device):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(config, prediction_type="epsilon")  # ancestral: fresh noise every step
    scheduler.set_timesteps(steps, device=device)
    return scheduler


# name -> (scheduler config, steps, device) -> a fresh scheduler with its timesteps set
SAMPLERS: dict[str, Callable] = {"ddim": _ddim, "dpmpp": _dpmpp, "heun": _heun, "ddpm": _ddpm}
STOCHASTIC = {"ddpm"}  # samplers that draw noise inside step(): each sample needs its own generator
STRATEGIES = {"conditional", "auggen", "scoremix"}


def check_spec(spec: SampleSpec) -> None:
    """What the schema already guarantees for grids, checked again for specs built in code (model_construct)."""
    if spec.strategy not in STRATEGIES:
        raise ValueError(
            f"sample.strategy: {spec.strategy!r} is not supported by this version (supported: {sorted(STRATEGIES)})"
        )
    if spec.guidance < 0:
        raise ValueError(f"sample.guidance: must be >= 0 (0 unconditional, 1 conditional), got {spec.guidance}")
    if spec.sampler not in SAMPLERS:
        raise ValueError(f"sample.sampler: unknown sampler {spec.sampler!r}; expected one of {sorted(SAMPLERS)}")
    if spec.steps < 1:
        raise ValueError(f"sample.steps: must be at least 1, got {spec.steps}")


def make_scheduler(gen: Generator, spec: SampleSpec):
    """A fresh scheduler (schedulers keep per-run state, e.g. DPM-Solver's past outputs) with its timesteps."""
    check_spec(spec)
    return SAMPLERS[spec.sampler](gen.scheduler_config, spec.steps, gen.device)


# --- guidance terms ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One network input per sample: the model output used is sum over terms of weight * eps(x, t, cond)."""

    cond: torch.Tensor  # (n, D) condition vectors
    weight: torch.Tensor  # (n,) per-sample weights


def guided_terms(gen: Generator, cond: torch.Tensor, guidance: float) -> list[Term]:
    """Classifier-free guidance (Ho & Salimans 2022): eps = eps_null + w * (eps(cond) - eps_null)."""
    n = len(cond)
    ones = torch.ones(n, device=gen.device)
    if guidance == 1.0:
        return [Term(cond, ones)]
    null = gen.condition(torch.full((n,), gen.null_class))
    if guidance == 0.0:
        return [Term(null, ones)]
    return [Term(cond, guidance * ones), Term(null, (1.0 - guidance) * ones)]


def conditional_terms(gen: Generator, labels: torch.Tensor, guidance: float) -> list[Term]:
    return guided_terms(gen, gen.condition(labels), guidance)


def auggen_terms(gen: Generator, pairs: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, guidance: float):
    """AugGen (Rahimi et al. 2025): the condition alpha*E[i] + beta*E[j], a mix of the learned class embeddings
    (the UNet adds its condition vector to the time embedding, so this equals mixing one-hot conditions)."""
    a, b = (torch.as_tensor(v, dtype=gen.table.dtype, device=gen.table.device).view(-1, 1) for v in (alpha, beta))
    return guided_terms(gen, a * gen.condition(pairs[:, 0]) + b * gen.condition(pairs[:, 1]), guidance)


def scoremix_terms(gen: Generator, pairs: torch.Tensor, weight: float, guidance: float) -> list[Term]:
    """ScoreMix (Rahimi & Marcel 2026): lambda*eps_i + (1-lambda)*eps_j of the two guided outputs
    eps_c = eps_null + w (eps(c) - eps_null), i.e. terms (E[i], w lambda), (E[j], w (1-lambda)), (null, 1-w):
    one batched pass of three inputs (two without guidance)."""
    n = len(pairs)
    ones = torch.ones(n, device=gen.device)
    if guidance == 0.0:
        return [Term(gen.condition(torch.full((n,), gen.null_class)), ones)]
    mixed = [
        Term(gen.condition(pairs[:, 0]), guidance * weight * ones),
        Term(gen.condition(pairs[:, 1]), guidance * (1.0 - weight) * ones),
    ]
    if guidance == 1.0:
        return mixed
    return [*mixed, Term(gen.condition(torch.full((n,), gen.null_class)), (1.0 - guidance) * ones)]


def strategy_terms(
    gen: Generator, labels: torch.Tensor, spec: SampleSpec, alpha=None, beta=None
) -> tuple[list[Term], list[Term] | None]:
    """The terms of a batch under `spec.strategy`, and the plain class-i terms used outside `spec.step_range`
    (None: mix at every step). `labels` is (n,) classes, or (n, 2) pairs (i, j) for the mixing strategies;
    AugGen's `alpha`/`beta` (per sample) override the spec's (the alpha/beta search)."""
    if spec.strategy == "conditional":
        return conditional_terms(gen, labels, spec.guidance), None
    plain = None if spec.step_range is None else conditional_terms(gen, labels[:, 0], spec.guidance)
    if spec.strategy == "scoremix":
        return scoremix_terms(gen, labels, spec.pair_weight_i, spec.guidance), plain
    alpha = spec.pair_weight_i if alpha is None else alpha
    beta = spec.pair_weight_j if beta is None else beta
    if isinstance(alpha, str) or isinstance(beta, str):
        raise ValueError(
            "sample.alpha/beta: 'search' is resolved by build_sample_set (study.sampling.pairs.search_alpha_beta); "
            "sample() needs numbers"
        )
    return auggen_terms(gen, labels, alpha, beta, spec.guidance), plain


def combined_eps(gen: Generator, x: torch.Tensor, t: torch.Tensor, terms: list[Term]) -> torch.Tensor:
    """All terms in one batched forward pass, then their per-sample weighted sum."""
    n_terms = len(terms)
    out = gen.eps(x.repeat(n_terms, 1, 1, 1), t, torch.cat([term.cond for term in terms]))
    return sum(term.weight.view(-1, 1, 1, 1) * part for term, part in zip(terms, out.chunk(n_terms), strict=True))


def nfe_per_image(gen: Generator, spec: SampleSpec) -> int:
    """Network evaluations per image (study.sampling.cost, which the plan's estimate uses too): a guided step
    costs two (class and null), a guided ScoreMix step three; steps outside `step_range` what conditional
    sampling does."""
    alphas = gen.alphas_cumprod.float().numpy()  # the float32 schedule the scheduler holds
    return cost.nfe_per_image(spec, cost.trajectory_length(spec.sampler, spec.steps, gen.scheduler_config, alphas))


# --- the sampling loop ---------------------------------------------------------------------------------


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Noise of sample i from its own CPU generator seeded by seeds[i] (the same on every device)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]), gens


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


@torch.no_grad()
def sample_batch(
    gen: Generator, terms: list[Term], seeds: Sequence[int], spec: SampleSpec, plain: list[Term] | None = None
) -> torch.Tensor:
    """Run the sampler for one batch and return float images in [-1, 1] (unclamped). `plain` terms, when
    given, replace `terms` at the steps outside `spec.step_range`."""
    scheduler = make_scheduler(gen, spec)
    noise, gens = initial_noise(seeds, (gen.channels, gen.resolution, gen.resolution))
    x = noise.to(gen.device) * scheduler.init_noise_sigma
    step_kwargs = {"generator": gens} if spec.sampler in STOCHASTIC else {}
    steps = len(scheduler.timesteps)
    for k, t in enumerate(scheduler.timesteps):
        active = terms if plain is None or mixes_at(k, steps, spec.step_range) else plain
        eps = combined_eps(gen, scheduler.scale_model_input(x, t), t, active)
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
    *,
    device: str = "auto",
    batch_size: int = 256,
    progress: bool = False,
    alpha: Sequence[float] | None = None,
    beta: Sequence[float] | None = None,
) -> torch.Tensor:
    """uint8 (n, C, H, W) images; image i depends only on (labels[i], seeds[i], spec). `labels` holds classes
    (n,) for conditional sampling and class pairs (n, 2) for auggen and scoremix; per-sample AugGen weights
    `alpha`, `beta` override the spec's."""
    from tqdm.auto import tqdm

    check_spec(spec)
    if device != "auto" and resolve_device(device) != gen.device:
        raise ValueError(f"device: the generator is on {gen.device}, sampling was asked on {device}")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    shape = "(n, 2) class pairs" if spec.mixing else "(n,) classes"
    if labels.ndim != (2 if spec.mixing else 1) or (spec.mixing and labels.shape[1] != 2):
        raise ValueError(f"labels: strategy {spec.strategy} samples {shape}, got shape {tuple(labels.shape)}")
    if len(labels) != len(seeds):
        raise ValueError(f"need one seed per label, got {len(labels)} labels and {len(seeds)} seeds")
    if labels.numel() and (labels.min() < 0 or labels.max() >= gen.num_classes):
        raise ValueError(f"labels must be in 0..{gen.num_classes - 1}")
    if batch_size < 1:
        raise ValueError(f"sample.batch_size: must be at least 1, got {batch_size}")
    weights = {k: None if v is None else torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in
               (("alpha", alpha), ("beta", beta))}  # fmt: skip
    out = torch.empty((len(labels), gen.channels, gen.resolution, gen.resolution), dtype=torch.uint8)
    for start in tqdm(range(0, len(labels), batch_size), desc="sampling", disable=not progress):
        part = slice(start, start + batch_size)
        mix = {k: None if v is None else v[part] for k, v in weights.items()}
        terms, plain = strategy_terms(gen, labels[part], spec, **mix)
        out[part] = to_uint8(sample_batch(gen, terms, seeds[part], spec, plain))
    return out


# --- sample sets -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mixing:
    """The pairs of a mixed sample set and their mixing weights: (alpha, beta) or (lambda, 1 - lambda)."""

    pairs: np.ndarray  # (P, 2) classes (i, j)
    weights: tuple[float, float]
    info: dict  # diagnostics: pairs, their distance, the alpha/beta search


def plan_mixing(gen: Generator, spec: SampleSpec, seed_root: str, space: ClassSpace | None, progress: bool) -> Mixing:
    """Select the pairs (study.sampling.pairs) and resolve the mixing weights, running AugGen's search if asked."""
    n_classes = gen.num_classes
    rule = spec.pair_rule
    if space is None and spec.needs_classifier:
        need = f"pairs {rule!r}" if rule in ("far", "near") else "the alpha/beta search"
        raise ValueError(f"sample: {need} needs the base classifier's embedding space (space=ClassSpace)")
    n_pairs = spec.n_pairs or min(n_classes, max_pairs(n_classes))
    distances = None
    if rule in ("far", "near"):
        distances = cosine_distances(space.centroids)
    elif rule in ("far-condition", "near-condition"):
        distances = cosine_distances(gen.table[:n_classes].double().cpu().numpy())
    pairs = select_pairs(rule, n_classes, n_pairs, derive_seed(seed_root, "pairs"), distances)
    info: dict = {"n_pairs": len(pairs), "pairs": pairs.tolist()}
    if space is not None:  # how far apart the chosen sources are, in the classifier's space (far > near)
        info["pair_distance"] = float(cosine_distances(space.centroids)[pairs[:, 0], pairs[:, 1]].mean())
    if spec.strategy == "scoremix":
        return Mixing(pairs, (spec.pair_weight_i, spec.pair_weight_j), info)
    alpha, beta = spec.pair_weight_i, spec.pair_weight_j
    if spec.searches:
        search = spec.search or AugGenSearch()
        used = pairs[: search.pairs]
        grid = search_grid(search.step)

        def draw(a, b, pair_index, image_index):
            seeds = [
                derive_seed(seed_root, "search", int(p), int(i)) for p, i in zip(pair_index, image_index, strict=True)
            ]
            return sample(gen, used[pair_index], seeds, spec, batch_size=spec.batch_size, progress=progress,
                          alpha=a, beta=b)  # fmt: skip

        start = time.perf_counter()
        alphas = grid if alpha == "search" else [alpha]
        found = search_alpha_beta(draw, space, used, alphas, grid if beta == "search" else [beta], search.images)
        info["search"] = found | {"seconds": time.perf_counter() - start}
        alpha, beta = found["alpha"], found["beta"]
    return Mixing(pairs, (float(alpha), float(beta)), info)


def build_sample_set(
    gen_dir: Path,
    spec: SampleSpec,
    volume_per_class: int,
    seed_root: str,
    out_dir: Path,
    *,
    score: Callable[[torch.Tensor], np.ndarray] | None = None,
    device: str = "auto",
    progress: bool = True,
    space: ClassSpace | None = None,
    fit: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """Sample `volume_per_class` x classes images into `out_dir` (a sample set, study.sampling.sample_set): that
    many of every class (conditional), or spread over the class pairs (auggen, scoremix; `SampleSpec`). `score`
    (a reference classifier's probabilities) gives the conditional accuracy, or for mixed sets the probability
    on the two sources; `space` (the base classifier's embedding space) serves far/near pairs, the alpha/beta
    search and the alignment diagnostic (linear CKA of the generator's class embeddings and the class
    centroids). `fit` maps the generator's images to the study's (a pretrained UNet of another size)."""
    check_spec(spec)
    if volume_per_class < 1:
        raise ValueError(f"volume_per_class: must be at least 1, got {volume_per_class}")
    gen = load_generator(gen_dir, device=device)
    n_classes = gen.num_classes
    info: dict = {}
    if space is not None:
        info["cka"] = linear_cka(gen.table[:n_classes].double().cpu().numpy(), space.centroids)
    mixing = plan_mixing(gen, spec, seed_root, space, progress) if spec.mixing else None
    counts = (
        pair_counts(volume_per_class * n_classes, len(mixing.pairs)) if mixing else np.full(n_classes, volume_per_class)
    )
    group, rank = set_layout(counts)
    seeds = layout_seeds(seed_root, group, rank)
    asked = torch.as_tensor(mixing.pairs[group] if mixing else group)
    weights = {}
    if mixing and spec.strategy == "auggen":
        weights = {"alpha": np.full(len(group), mixing.weights[0]), "beta": np.full(len(group), mixing.weights[1])}

    start = time.perf_counter()
    images = sample(gen, asked, seeds, spec, batch_size=spec.batch_size, progress=progress, **weights)
    seconds = time.perf_counter() - start
    if fit is not None:  # a pretrained generator of another size or channel count: the study's images
        images = fit(images)

    info |= {
        "strategy": spec.strategy,
        "nfe_per_image": nfe_per_image(gen, spec),
        "seconds": seconds,
        "images_per_s": len(group) / seconds if seconds > 0 else None,
    }
    labels, extra = asked, {}
    if mixing:  # stored labels: the dominant source (the classifier stage relabels by its policy)
        pairs = torch.as_tensor(mixing.pairs)
        table = torch.tensor([mixing.weights] * len(mixing.pairs), dtype=torch.float64)
        labels = mixed_labels(pairs, table, torch.as_tensor(group), n_classes, "dominant")[0]
        extra = {"pairs": pairs, "weights": table}
        info |= mixing.info | {"weights": list(mixing.weights)}
    if score is not None:
        probs = score(images)
        info |= source_probability(probs, asked) if mixing else conditional_accuracy(probs, asked)
    meta = {
        "sample": spec.model_dump(mode="json"),
        "generator_dir": Path(gen_dir).name,
        "seed_root": seed_root,
        **gen.precision.stats(),
        "device": str(gen.device),
    }
    return write_sample_set(
        out_dir, images, group=group, rank=rank, seeds=seeds, labels=labels, num_classes=n_classes,
        volume_per_class=volume_per_class, meta=meta, diagnostics=info, tensors=extra,
    )  # fmt: skip
