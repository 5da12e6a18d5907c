"""What a generator is trained on: the base set (closed-set), the whole training pool or another dataset's
training split (open-set), and never a test or validation image.

    data = generator_data(ds, spec.train_on, seed=0, base_per_class=20)   # TrainingData
    data.images, data.labels, data.sources       # uint8 (N,C,H,W) at the study's size; where every image came from
    images = fit_images(images, channels=1, resolution=28)    # another dataset's images, fitted to the study's

Every image a generator sees is a row of some dataset's `train` split, recorded as (dataset, split, indices);
`generator_data` refuses anything else. Another dataset comes with a class mapping onto the study's classes
(`{their class: our class}`); classes it leaves out are not used, and a study class nobody maps onto is an
error naming it. Its images are converted to the study's channels (ITU-R 601 luma for RGB to grey, repeats for
grey to RGB) and resized like the study's own data (antialiased bilinear).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.data.datasets import Dataset, fit_images, load_dataset, real_indices
from study.grid import GridError, OtherDataset, class_index, dataset_label

TRAIN = "train"


class OpenSetError(GridError):
    """An open-set training source cannot be used: the message names the key and what was expected."""


@dataclass(frozen=True)
class Source:
    """Rows `indices` of one dataset's `split`: what the generator saw of it."""

    dataset: str  # a readable name (the medmnist flavor, or the registry name)
    key: str  # the dataset's identity key (study.data.datasets.dataset_key)
    split: str
    indices: np.ndarray

    def describe(self) -> str:
        return f"{self.dataset}:{self.split}[{len(self.indices)}]"


@dataclass(frozen=True)
class TrainingData:
    images: torch.Tensor  # uint8 (N, C, H, W) at the study's channels and resolution
    labels: torch.Tensor  # int64 (N,): the study's classes
    sources: tuple[Source, ...]
    train_on: str  # base | pool | dataset

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self) -> str:
        return " + ".join(s.describe() for s in self.sources)


def generator_data(
    ds: Dataset,
    train_on,
    *,
    seed: int,
    base_per_class: int | None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> TrainingData:
    """The images a generator arm trains on (`train_on` of a GeneratorSpec), from training splits only (checked).
    `name` labels the study's dataset in the recorded sources (default: its registry name)."""
    name = name or ds.name
    if train_on == "base":
        if base_per_class is None:
            raise ValueError("a closed-set generator needs its base size")
        idx = real_indices(ds, seed=seed, per_class=base_per_class)
        data = _rows(ds, TRAIN, idx, name, "base")
    elif train_on == "pool":
        data = _rows(ds, TRAIN, np.arange(len(ds.train)), name, "pool")
    elif isinstance(train_on, OtherDataset):
        data = other_dataset_data(ds, train_on, cache_dir)
    else:
        raise ValueError(f"train_on: expected base, pool or {{dataset: ..., classes: ...}}, got {train_on!r}")
    check_train_only(data)
    return data


def _rows(ds: Dataset, split: str, idx: np.ndarray, name: str, train_on: str) -> TrainingData:
    part = getattr(ds, split)
    sub = part.subset(idx)
    return TrainingData(sub.images, sub.labels, (Source(name, ds.key, split, np.asarray(idx)),), train_on)


def check_train_only(data: TrainingData) -> None:
    """The guarantee of this module: a generator never sees a test or validation image."""
    bad = [s.describe() for s in data.sources if s.split != TRAIN]
    if bad:
        raise RuntimeError(f"generator training data includes non-training splits {bad}; only `train` is allowed")
    if sum(len(s.indices) for s in data.sources) != len(data):
        raise RuntimeError("generator training data: images and recorded source rows disagree")


def other_dataset_data(ds: Dataset, spec: OtherDataset, cache_dir: str | Path | None = None) -> TrainingData:
    """Another dataset's training images of the mapped classes, relabelled and fitted to the study's images."""
    other = load_dataset(spec.dataset, cache_dir=cache_dir)
    table = map_classes(other.class_names, ds.class_names, spec.classes, dataset_label(spec.dataset))
    check_no_verification_identities(ds, other.class_names, table, dataset_label(spec.dataset))
    theirs = other.train.labels.numpy()
    idx = np.flatnonzero(table[theirs] >= 0)
    labels = torch.from_numpy(table[theirs[idx]])
    empty = [ds.class_names[c] for c in range(ds.num_classes) if not (labels == c).any()]
    if empty:
        raise OpenSetError(
            f"train_on.classes: the classes mapped onto {empty} have no training images in {dataset_label(spec.dataset)}"
        )
    images = fit_images(other.train.images[torch.from_numpy(idx)], ds.channels, ds.resolution)
    source = Source(dataset_label(spec.dataset), other.key, TRAIN, idx)
    return TrainingData(images, labels, (source,), "dataset")


def check_no_verification_identities(ds: Dataset, theirs: Sequence[str], table: np.ndarray, other: str) -> None:
    """A face study's verification identities are never trained on, by the generator either: another dataset's
    classes used by the mapping must not be one of them (by name)."""
    if ds.verification is None:
        return
    from study.data.faces import FaceDataError, check_disjoint

    used = [theirs[t] for t in np.flatnonzero(table >= 0)]
    try:
        check_disjoint(used, ds.verification.names, f"train_on.classes ({other} identities the generator would see)")
    except FaceDataError as exc:
        raise OpenSetError(str(exc)) from None


def map_classes(
    theirs: Sequence[str], ours: Sequence[str], mapping: Mapping[str | int, str | int], other: str
) -> np.ndarray:
    """Their class index -> our class index (-1 where unused). Classes are named or indexed; a study class that
    no class maps onto is an error naming it, as are unknown names and indices out of range."""
    table = np.full(len(theirs), -1, dtype=np.int64)
    for their_ref, our_ref in mapping.items():
        t = class_index(their_ref, theirs, f"train_on.classes: {other} class", OpenSetError)
        o = class_index(our_ref, ours, f"train_on.classes.{their_ref}: study class", OpenSetError)
        if table[t] >= 0 and table[t] != o:
            raise OpenSetError(f"train_on.classes: {other} class {theirs[t]!r} is mapped twice (by name and index)")
        table[t] = o
    unmapped = [ours[c] for c in range(len(ours)) if c not in table]
    if unmapped:
        raise OpenSetError(
            f"train_on.classes: no {other} class maps onto the study classes {unmapped}; the generator could not "
            f"make them. Map at least one {other} class onto each ({{their class: our class}}; {other} classes: "
            f"{list(theirs)[:20]})"
        )
    return table


def eval_duplicates(images: torch.Tensor, ds: Dataset) -> int:
    """How many generator training images are byte-identical to a test, validation or verification image of the
    study. Not an error (official datasets hold a few exact duplicates across splits), a number to report."""
    held = [split.images for split in (ds.test, ds.val) if split is not None]
    held += [ds.verification.images] if ds.verification is not None else []
    held_out = {_digest(x) for images in held for x in images}
    return sum(_digest(x) in held_out for x in images)


def _digest(image: torch.Tensor) -> bytes:
    return hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest()
