"""Sample sets on disk: the one artifact every sampler writes (conditional and mixed sampling of a study
generator, study.sampling.sampler; text-to-image pipelines, study.sampling.pretrained) and the classifier
stage reads.

    samples.safetensors  images uint8 (N, C, H, W), labels, seeds, and the layout: group (a class, or a pair
                         of classes) and rank within it, group-major. Mixed sets add pairs (P, 2) and weights
                         (P, 2): (alpha, beta) or (lambda, 1 - lambda); filtered text-to-image sets add
                         candidate_scores and candidate_kept (classes, candidates).
    samples.json         what made the set (sample spec, seed root, precision, device, ...) and `diagnostics`
                         (n, num_classes, volume_per_class, pixel statistics, the sampler's own figures)
    preview.png          one row per class or pair: its first images

    seeds = sample_seeds(seed_root, num_classes=10, volume_per_class=40)   # class-major; volume-independent
    info = write_sample_set(out, images, group=group, rank=rank, seeds=seeds, labels=labels, num_classes=10,
                            volume_per_class=40, meta={"sample": ...}, diagnostics={"seconds": 3.2})
    split = load_sample_set(out, 20)                  # the first 20 of every class (or pair): a prefix
    split = load_sample_set(out, 20, labels="soft")   # mixed images labelled by a policy

Image `rank` of group `g` is seeded by derive_seed(seed_root, g, rank) whatever the volume, so the set of a
smaller volume is a prefix of every group's images of a bigger one, and one set of the largest volume serves
every smaller volume. Labels of mixed images are given at load time by a policy (`new-class`, `soft`,
`dominant`), so one set serves every policy. Writing costs the preview (milliseconds); reading is a
safetensors load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from study.data.datasets import Split
from study.keys import derive_seed
from study.sampling.pairs import pair_counts
from study.store import PREVIEW, SAMPLES, SAMPLES_META, atomic_path, atomic_write_json, read_artifact_json

# --- layout and seeds ------------------------------------------------------------------------------------


def set_layout(counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Image n of a sample set is number rank[n] of group group[n] (a class, or a pair of classes); groups in
    order, `counts[g]` images each."""
    counts = np.asarray(counts, dtype=np.int64)
    group = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(len(group)) - np.repeat(np.cumsum(counts) - counts, counts)
    return group, rank


def layout_seeds(seed_root: str, group: np.ndarray, rank: np.ndarray) -> list[int]:
    """The seed of every image: derive_seed(seed_root, group, rank), whatever the volume (the prefix property)."""
    return [derive_seed(seed_root, int(g), int(r)) for g, r in zip(group, rank, strict=True)]


def sample_seeds(seed_root: str, num_classes: int, volume_per_class: int) -> list[int]:
    """Seed of image j of class c, in class-major order; it does not depend on the volume (prefix property)."""
    return layout_seeds(seed_root, *set_layout(np.full(num_classes, volume_per_class)))


# --- writing -------------------------------------------------------------------------------------------------


def write_sample_set(
    out_dir: Path,
    images: torch.Tensor,
    *,
    group: np.ndarray,
    rank: np.ndarray,
    seeds: Sequence[int],
    labels: torch.Tensor,
    num_classes: int,
    volume_per_class: int,
    meta: dict,
    diagnostics: dict,
    tensors: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Write the three files of a sample set into `out_dir`; `tensors` are stored beside the standard ones,
    `meta` says what made the set. Returns the diagnostics as recorded in samples.json: `diagnostics` with the
    set's size, class count, volume and pixel statistics."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    stored = {
        "images": images.contiguous(),
        "labels": torch.as_tensor(labels).clone(),  # safetensors refuses tensors that share memory
        "seeds": torch.tensor(list(seeds), dtype=torch.int64),
        "group": torch.tensor(np.asarray(group), dtype=torch.int64),
        "rank": torch.tensor(np.asarray(rank), dtype=torch.int64),
        **(tensors or {}),
    }
    with atomic_path(out_dir / SAMPLES) as tmp:
        save_file(stored, str(tmp))
    save_preview(images, group, out_dir / PREVIEW)
    info = {
        "n": len(images),
        "num_classes": num_classes,
        "volume_per_class": volume_per_class,
        "pixel_mean": images.float().mean().item() / 255.0,
        "pixel_std": images.float().std().item() / 255.0,
        **diagnostics,
    }
    atomic_write_json(out_dir / SAMPLES_META, {**meta, "diagnostics": info})
    return info


def save_preview(images: torch.Tensor, group: np.ndarray, path: Path, cols: int = 16) -> None:
    """A PNG grid, one row per class or pair (its first `cols` images), upscaled so 8 px digits stay visible."""
    from PIL import Image
    from torchvision.utils import make_grid

    group = np.asarray(group)
    groups = np.unique(group)
    cols = min(cols, min(int((group == g).sum()) for g in groups))
    rows = torch.cat([images[np.flatnonzero(group == g)[:cols]] for g in groups])
    scale = max(1, 32 // images.shape[-1])
    rows = rows.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    grid = make_grid(rows, nrow=cols, padding=2, pad_value=255)
    array = grid.permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array[..., 0] if images.shape[1] == 1 else array).save(tmp, format="PNG")


# --- diagnostics from a reference classifier ----------------------------------------------------------------


def conditional_accuracy(probs: np.ndarray, labels: torch.Tensor) -> dict:
    """Accuracy of a reference classifier on synthetic images against the classes they were asked for."""
    probs = np.asarray(probs)
    y = labels.numpy()
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"score() must return (n, classes) probabilities for {len(y)} images, got {probs.shape}")
    hit = probs.argmax(1) == y
    per_class = [float(hit[y == c].mean()) for c in np.unique(y)]
    return {"cond_acc": float(hit.mean()), "cond_acc_per_class": per_class}


def source_probability(probs: np.ndarray, pairs: torch.Tensor) -> dict:
    """For mixed samples: the reference classifier's mean probability on the two source classes
    (`source_mass`; 2/K by chance) and the share whose top class is one of them (`source_acc`)."""
    probs = np.asarray(probs)
    i, j = pairs[:, 0].numpy(), pairs[:, 1].numpy()
    if probs.ndim != 2 or len(probs) != len(i):
        raise ValueError(f"score() must return (n, classes) probabilities for {len(i)} images, got {probs.shape}")
    rows = np.arange(len(i))
    top = probs.argmax(1)
    return {
        "source_mass": float((probs[rows, i] + probs[rows, j]).mean()),
        "source_acc": float(((top == i) | (top == j)).mean()),
        "first_source_mass": float(probs[rows, i].mean()),
    }


# --- reading -------------------------------------------------------------------------------------------------


def mixed_labels(
    pairs: torch.Tensor, weights: torch.Tensor, group: torch.Tensor, num_classes: int, policy: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels (and soft targets) of mixed images of pairs `group` (rows of `pairs` and `weights`) under a label
    policy: `new-class` makes pair p class num_classes + p; `soft` puts the normalised weights w_i / (w_i + w_j),
    w_j / (w_i + w_j) on the two sources (labels: the dominant one); `dominant` the source with the larger
    weight (class i at a tie)."""
    pairs, weights = pairs[group], weights[group]
    share_i = (weights[:, 0] / weights.sum(1)).float()
    dominant = torch.where(share_i >= 0.5, pairs[:, 0], pairs[:, 1])
    if policy == "new-class":
        return num_classes + group, None
    if policy == "dominant":
        return dominant, None
    if policy != "soft":
        raise ValueError(f"sample.labels: unknown policy {policy!r}; expected new-class, soft or dominant")
    soft = torch.zeros(len(group), num_classes)
    rows = torch.arange(len(group))
    soft[rows, pairs[:, 0]] += share_i
    soft[rows, pairs[:, 1]] += 1.0 - share_i
    return dominant, soft


def load_sample_set(out_dir: Path, volume_per_class: int, *, labels: str = "new-class") -> Split:
    """The sample set as it would be with `volume_per_class` (a prefix of every class's, or pair's, images),
    labelled by the policy `labels` when its images mix two classes (conditional sets keep their classes)."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    meta = read_artifact_json(out_dir / SAMPLES_META, "sample set")
    have, n_classes = meta["diagnostics"]["volume_per_class"], meta["diagnostics"]["num_classes"]
    if volume_per_class > have:
        raise ValueError(f"volume_per_class: {volume_per_class} asked for, the sample set at {out_dir} has {have}")
    data = load_file(str(out_dir / SAMPLES))
    mixed = "pairs" in data
    counts = (
        pair_counts(volume_per_class * n_classes, len(data["pairs"])) if mixed else np.full(n_classes, volume_per_class)
    )
    if "rank" in data:
        group, rank = data["group"], data["rank"]
    else:  # sets written before groups were stored: class-major, `have` images per class
        group, rank = (torch.as_tensor(v) for v in set_layout(np.full(n_classes, have)))
    keep = rank < torch.as_tensor(counts)[group]
    if not mixed:
        return Split(data["images"][keep], data["labels"][keep])
    y, soft = mixed_labels(data["pairs"], data["weights"], group[keep], n_classes, labels)
    return Split(data["images"][keep], y, soft)
