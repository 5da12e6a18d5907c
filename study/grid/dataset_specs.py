"""Dataset blocks of a grid file (`dataset:`; study.grid.schema): one strict option model per dataset name, the
face datasets among them, and what a dataset *is* for cache keys. Never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from study.grid.base import NonNegativeInt, PositiveInt, Strict

# One option model per dataset name; `study.data.datasets.LOADERS` holds the loader for the same names.


class _DatasetBase(Strict):
    resolution: PositiveInt | None = None  # resize to this many pixels a side; None keeps the native size
    flip: bool | None = None  # horizontal flips allowed as augmentation; None = the dataset's default


class DigitsData(_DatasetBase):
    """scikit-learn's bundled 8x8 digits (1797 images); a fixed stratified split gives the test set."""

    name: Literal["digits"]
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3


class MedmnistData(_DatasetBase):
    name: Literal["medmnist"]
    flavor: str  # e.g. breastmnist, pneumoniamnist, bloodmnist
    size: Literal[28, 64, 128, 224] = 28
    root: str | None = None  # folder with <flavor>.npz (or <flavor>_<size>.npz); downloads there when online


class Cifar10Data(_DatasetBase):
    name: Literal["cifar10"]
    root: str | None = None  # torchvision layout (cifar-10-batches-py/); downloads there when online


class Cifar100Data(_DatasetBase):
    name: Literal["cifar100"]
    root: str | None = None


class ImageFolderData(_DatasetBase):
    """`root/train/<class>/*` plus `root/val/<class>/*` or `root/test/<class>/*` (e.g. an ImageNet subset)."""

    name: Literal["imagefolder"]
    root: str
    classes: list[str] | None = None  # a subset of class folders, in this order; None = all, sorted
    resolution: PositiveInt = 64
    grey: bool = False


class NpzData(_DatasetBase):
    """One .npz with `{split}_images`, `{split}_labels` (train, test, optional val) and optional `class_names`."""

    name: Literal["npz"]
    path: str


# Face datasets (study.data.faces): the classes are *training identities*; a verification protocol of pairs of
# other identities replaces the test split, and no training identity is ever in a pair (checked when loaded).

IdentityChoice = PositiveInt | Literal["all"] | Annotated[list[str], Field(min_length=2)]


class _FaceData(_DatasetBase):
    resolution: PositiveInt = 32
    crop: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0  # centre crop: this fraction of the shorter side, then resize
    # Training identities: all that qualify, a count (a fixed random choice among them, the same on every
    # machine), or names.
    identities: IdentityChoice = "all"


class _FaceTree(_FaceData):
    min_images: PositiveInt = 2  # an identity trains only with at least this many images (>= real.base + real.extra)
    grey: bool | None = None  # None: as stored (greyscale when the files are single-channel)


class LfwData(_FaceTree):
    """LFW's layout `root/<Name>/<Name>_NNNN.jpg` and a pairs file in LFW's format (View 1: a count line, then
    `name i j` same pairs and `name1 i name2 j` different pairs; View 2: a `folds n` line and `folds` blocks).
    Training identities: those of `root` in no pair of `pairs`, with at least `min_images` images."""

    name: Literal["lfw"]
    root: str
    pairs: str


class AttData(_FaceData):
    """The AT&T (ORL) faces npz (40 x 10, 112 x 92): identities s1-s28 train, s29-s40 verify (every pair of
    their 120 images; rank-1 with image 1 of each as the gallery)."""

    name: Literal["att"]
    path: str | None = None  # default $STUDY_DATA/att_faces/att_faces.npz


class IdentityFolderData(_FaceTree):
    """A tree `root/<identity>/<image files>` (CASIA-WebFace, VGGFace2 style; no split folders): `verify`
    identities (a seeded choice among those with >= 2 images, or names) are held out for verification, every
    pair of their images (or `max_pairs` of each kind); rank-1 with each one's first image as the gallery."""

    name: Literal["identityfolder"]
    root: str
    verify: PositiveInt | Annotated[list[str], Field(min_length=2)]
    split_seed: NonNegativeInt = 0  # the seeded choice of verification (and counted training) identities
    max_pairs: PositiveInt | None = None  # per kind (same, different): a seeded sample; None: every pair


FACE_DATASETS = ("lfw", "att", "identityfolder")

DatasetSpec = Annotated[
    DigitsData | MedmnistData | Cifar10Data | Cifar100Data | ImageFolderData | NpzData | LfwData | AttData
    | IdentityFolderData,
    Field(discriminator="name"),
]  # fmt: skip
DATASET_SPECS: dict[str, type[Strict]] = {
    "digits": DigitsData,
    "medmnist": MedmnistData,
    "cifar10": Cifar10Data,
    "cifar100": Cifar100Data,
    "imagefolder": ImageFolderData,
    "npz": NpzData,
    "lfw": LfwData,
    "att": AttData,
    "identityfolder": IdentityFolderData,
}


# Options that say where a canonical dataset lives, not what it is: moving the files keeps every key.
_LOCATION_OPTIONS = {"root", "path"}
_CANONICAL = {"digits", "medmnist", "cifar10", "cifar100", "att"}
_PATHS = {"npz": ("path",), "lfw": ("root", "pairs")}  # the files that are the data; others: `root`


def dataset_identity(spec) -> dict:
    """What a dataset *is*, for keys: its options minus local paths for canonical datasets; for npz, imagefolder
    and the face trees the resolved paths are part of the identity (a different file is different data)."""
    d = spec.model_dump(mode="json", exclude_none=True)
    if spec.name in _CANONICAL:
        d = {k: v for k, v in d.items() if k not in _LOCATION_OPTIONS}
    else:
        for field in _PATHS.get(spec.name, ("root",)):
            d[field] = str(Path(d[field]).expanduser().resolve())
    d.pop("flip", None)  # flips change training, not the data; stages that flip key on it themselves
    return d


def is_face(spec) -> bool:
    """A face (verification) dataset: training identities as classes, verification pairs of other identities."""
    return spec.name in FACE_DATASETS


def dataset_label(spec) -> str:
    """A readable name for tables and slugs: the MedMNIST flavor, else the registry name."""
    return getattr(spec, "flavor", None) or spec.name
