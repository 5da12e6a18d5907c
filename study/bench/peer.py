"""Side by side with the peer trainer: lucidrains' `denoising-diffusion-pytorch` (PyPI; class-conditional UNet
with classifier-free guidance, `denoising_diffusion_pytorch.classifier_free_guidance`), trained on the same
images for the same CPU-minutes as our default recipe, in one run, both scored by the same judge.

    pip install 'study[peer]'                       # bench-only extra; `study` itself never imports it
    python -m study.bench generator --peer          # digits at 16 px and CIFAR-10 at 16 px

The peer runs at its own defaults: `GaussianDiffusion` (1000 cosine timesteps, epsilon objective), the
settings of its `Trainer` (Adam lr 1e-4, betas (0.9, 0.99), gradient-norm clip 1, EMA decay 0.995 updated every
10 steps, horizontal flips where the dataset allows them), fp32. Its default sampler, `sample()` with 1000
ancestral steps and guidance scale 6 (rescaled_phi 0.7), costs 2000 network evaluations per image (~15 CPU-s
an image for the 2.9M-parameter UNet at 16 px here), so its speed is timed on `PEER_SPEED_IMAGES` images and its
samples for the judge come from its own DDIM option (`sampling_timesteps` 250, eta 1: 500 evaluations, same
guidance). Its UNet (`dim_mults` (1, 2, 4); `dim` per case in `PEER_CASES`) is larger than our default's (torch's
FLOP counter, one training image forward + backward: digits 16 px 0.21 GFLOP, 0.79M parameters, against our
0.09 GFLOP, 0.16M; CIFAR-10 16 px 0.64 GFLOP, 2.92M, against 0.37 GFLOP, 1.12M), so images/s compare the two
recipes as each ships, not the implementations at equal size; the batch size is ours. Ours runs its default recipe
(the grids') with precision auto. Figures: training images per CPU-second, sampling images per CPU-second at
each one's default sampler, conditional accuracy and FD in the judge's features (the same n images per class on
both sides).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from study.bench.quality import CASES, RUNS, load_judge, quality_run, training_images
from study.data.datasets import load_dataset
from study.keys import derive_seed, key_of
from study.store import atomic_write_json

PEER_UNET = {"dim_mults": (1, 2, 4)}
PEER_TRAIN = {"lr": 1e-4, "betas": (0.9, 0.99), "ema_decay": 0.995, "ema_update_every": 10, "max_grad_norm": 1.0}
PEER_SAMPLE = {"cond_scale": 6.0, "rescaled_phi": 0.7}  # GaussianDiffusion.sample's defaults
PEER_CASES = {"digits16": (3.0, 16), "cifar16": (6.0, 32)}  # case -> (CPU-minutes of training per side, UNet dim)
PEER_JUDGED_STEPS = 250  # the peer's DDIM steps for the judged samples
PEER_SPEED_IMAGES = 4  # images timed at the peer's default sampler
PEER_PER_CLASS = 10  # judged images per class on each side (the peer samples at 2000 NFE per image)


def peer_available() -> bool:
    try:
        import denoising_diffusion_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def peer_run(case_name: str, minutes: float, dim: int, batch_size: int, runs: Path = RUNS, seed: int = 0) -> dict:
    """Train the peer for `minutes` of process CPU time on the case's images, sample its default way, judge."""
    from denoising_diffusion_pytorch.classifier_free_guidance import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    case = CASES[case_name]
    file = (
        runs
        / f"peer__{case_name}__{key_of({'m': minutes, 'b': batch_size, 'u': PEER_UNET, 't': PEER_TRAIN})[:12]}.json"
    )
    if file.exists():
        return json.loads(file.read_text())
    ds = load_dataset(case.dataset)
    case = replace(case, per_class=PEER_PER_CLASS)
    judge = load_judge(case, ds, runs)
    data = training_images(case, ds)
    k, c, r = ds.num_classes, ds.channels, ds.resolution
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = Unet(num_classes=k, channels=c, dim=dim, **PEER_UNET)
        diffusion = GaussianDiffusion(unet, image_size=r, timesteps=1000)
        optimizer = torch.optim.Adam(diffusion.parameters(), lr=PEER_TRAIN["lr"], betas=PEER_TRAIN["betas"])
        ema = EMA(diffusion, beta=PEER_TRAIN["ema_decay"], update_every=PEER_TRAIN["ema_update_every"])
        print(f"[peer] {case_name}: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters", flush=True)

        # Train: batches drawn like ours; the peer draws its timesteps and noise from the global RNG.
        cpu, steps = 0.0, 0
        while cpu < 60 * minutes:
            start = time.process_time()
            g = torch.Generator().manual_seed(derive_seed(seed, "peer", steps))
            idx = torch.randint(len(data), (batch_size,), generator=g)
            x = data.images[idx].float() / 255.0  # the peer normalises [0, 1] to [-1, 1] itself
            if ds.flip:
                x = torch.where(torch.rand(batch_size, 1, 1, 1, generator=g) < 0.5, x.flip(-1), x)
            loss = diffusion(x, classes=data.labels[idx].long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(diffusion.parameters(), PEER_TRAIN["max_grad_norm"])
            optimizer.step()
            ema.update()
            steps += 1
            cpu += time.process_time() - start

        # Time its default sampler; judge samples from its DDIM option (same network, same guidance).
        sampler = ema.ema_model
        torch.manual_seed(derive_seed(seed, "peer-speed"))
        start = time.process_time()
        sampler.sample(classes=torch.arange(PEER_SPEED_IMAGES) % k, **PEER_SAMPLE)
        sample_cpu = time.process_time() - start
        judged = GaussianDiffusion(sampler.model, image_size=r, timesteps=1000, sampling_timesteps=PEER_JUDGED_STEPS)
        labels = torch.arange(k).repeat_interleave(PEER_PER_CLASS)
        torch.manual_seed(derive_seed(seed, "peer-sample"))
        images = judged.sample(classes=labels, **PEER_SAMPLE)  # floats in [0, 1]
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    result = {
        "case": case_name,
        "minutes": minutes,
        "batch_size": batch_size,
        "dim": dim,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "steps": steps,
        "train_cpu_seconds": cpu,
        "train_images_per_cpu_s": steps * batch_size / cpu,
        "sample_images_per_cpu_s": PEER_SPEED_IMAGES / sample_cpu,  # at its default sampler
        "nfe": 2 * 1000,
        "judged_sampler": f"DDIM {PEER_JUDGED_STEPS} steps (eta 1), guidance {PEER_SAMPLE['cond_scale']:g}",
        "n": len(labels),
        **judge.score(images, labels),
        "judge_test_acc": judge.test_acc,
        "precision": "fp32",
        "load_average": os.getloadavg()[0],
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_json(file, result)
    return result


def side_by_side(case_name: str, minutes: float, dim: int, recipe_name: str, runs: Path = RUNS) -> dict:
    """Ours (the default recipe `recipe_name`) and the peer on one case, equal CPU-minutes, equal judged n."""
    case = replace(CASES[case_name], minutes=(minutes,), per_class=PEER_PER_CLASS)
    CASES[f"{case_name}-peer"] = case
    ours = quality_run(f"{case_name}-peer", recipe_name, runs=runs)
    point = ours["points"]["ema"][-1]
    batch = ours["recipe"]["train"].get("batch_size", 128)
    peer = peer_run(case_name, minutes, dim, batch, runs)
    return {
        "case": case_name,
        "minutes": minutes,
        "ours": {
            "recipe": recipe_name,
            "train_images_per_cpu_s": ours["train_images_per_cpu_s"],
            "sample_images_per_cpu_s": point["sample_images_per_cpu_s"],
            "nfe": point["nfe"],
            "cond_acc": point["cond_acc"],
            "cond_acc_rel": point["cond_acc_rel"],
            "fd": point["fd"],
            "parameters": ours["train_stats"]["parameters"],
            "precision": ours["train_stats"]["precision"],
            "n": point["n"],
        },
        "peer": peer,
        "throughput_ratio": ours["train_images_per_cpu_s"] / peer["train_images_per_cpu_s"],
    }
