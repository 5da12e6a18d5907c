"""Datasets: a plain-dict registry of loaders, uint8 tensors, on-disk decode cache, nested class-balanced subsets.

    ds = load_dataset(DigitsData(name="digits"))           # Dataset(train, test, val, class_names, flip)
    idx = subset_indices(ds.train.labels, ds.num_classes, seed=0, start=0, count=20, dataset_key=ds.key)
    base = ds.train.subset(real_indices(ds, seed=0, per_class=20))     # the same 20 per class

Each loader returns numpy arrays; `load_dataset` checks them (dtype, shapes, labels inside the class list),
resizes to the requested resolution and caches the decoded result as an .npz so a second load is fast.
Real loaders download when the network allows; offline they read local files and name the path they tried.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from study.errors import StudyInputError
from study.grid import (
    Cifar10Data,
    Cifar100Data,
    DigitsData,
    ImageFolderData,
    MedmnistData,
    NpzData,
    dataset_identity,
    is_face,
)
from study.keys import derive_seed, key_of
from study.paths import default_cache_dir, default_data_root
from study.store import atomic_write_bytes


class DatasetError(StudyInputError, ValueError):
    """A dataset cannot be loaded: the message names the file or option and what was expected."""


@dataclass(frozen=True)
class Split:
    """Labelled images. Synthetic sets may carry `soft` targets (mixed-class samples) and labels beyond the
    dataset's classes (new classes made by mixing); real splits have hard labels only."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,): the class, or the dominant class when `soft` is given
    soft: torch.Tensor | None = None  # float32 (N, K) target distributions, rows sum to 1

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> Split:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return Split(self.images[idx], self.labels[idx], None if self.soft is None else self.soft[idx])


@dataclass(frozen=True)
class Verification:
    """A face verification protocol on identities that are not classes of the dataset (study.data.faces): images,
    the pairs to score, the protocol's folds and a rank-1 gallery where they exist."""

    images: torch.Tensor  # uint8 (M, C, H, W)
    identity: np.ndarray  # int64 (M,): index into `names`
    names: tuple[str, ...]  # verification identities (never training identities)
    pairs: np.ndarray  # int64 (P, 2): rows of `images`
    same: np.ndarray  # bool (P,)
    folds: np.ndarray | None  # int64 (P,) the protocol's folds (LFW View 2), or None
    gallery: np.ndarray | None  # bool (M,) rank-1 gallery images (the rest are probes), or None
    protocol: str


@dataclass(frozen=True)
class Dataset:
    name: str
    key: str  # identity of the decoded data (dataset, options, resolution), used in every stage key
    train: Split  # the training pool subsets are drawn from
    test: Split | None  # None for face datasets: they verify on other identities instead
    val: Split | None
    class_names: tuple[str, ...]  # classes; for face datasets the training identities
    flip: bool  # horizontal flips are a valid augmentation for this data
    verification: Verification | None = None  # face datasets

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def resolution(self) -> int:
        return self.train.images.shape[-1]


def dataset_key(spec) -> str:
    return key_of(dataset_identity(spec))


# --- loaders (numpy out) -------------------------------------------------------------------------------
# Each returns {"train": (images, labels), "test": (...), optionally "val": (...)}, class names, and the
# default for horizontal flips. Images are uint8 (N,H,W) or (N,H,W,3); labels are integer arrays.

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def _load_digits(spec: DigitsData) -> tuple[Arrays, list[str], bool]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 grey levels -> 0..255
    labels = d.target.astype(np.int64)
    # digits has no official split: a fixed stratified split, the same on every machine.
    tr, te = train_test_split(np.arange(len(labels)), test_size=spec.test_fraction, stratify=labels, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    return {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])}, [str(i) for i in range(10)], False


def _load_medmnist(spec: MedmnistData) -> tuple[Arrays, list[str], bool]:
    import medmnist

    flavor = spec.flavor.lower()
    if flavor not in medmnist.INFO:
        raise DatasetError(
            f"dataset.flavor: unknown MedMNIST flavor {spec.flavor!r}; expected one of {sorted(medmnist.INFO)}"
        )
    info = medmnist.INFO[flavor]
    if info["task"].startswith("multi-label"):
        raise DatasetError(f"dataset.flavor: {flavor} is multi-label ({info['task']}); study needs one label per image")
    root = Path(spec.root).expanduser() if spec.root else default_data_root() / "medmnist"
    file = root / (f"{flavor}.npz" if spec.size == 28 else f"{flavor}_{spec.size}.npz")
    cls = getattr(medmnist, info["python_class"])
    if not file.exists():
        root.mkdir(parents=True, exist_ok=True)
        try:  # online: the package downloads into root; offline this fails and we say what to do
            cls(split="train", root=str(root), download=True, size=spec.size)
        except Exception as exc:  # noqa: BLE001 - any download failure gets the same actionable message
            raise DatasetError(
                f"MedMNIST {flavor} (size {spec.size}): file not found at {file} and the download failed "
                f"({type(exc).__name__}). Put {file.name} from {info.get('url' if spec.size == 28 else f'url_{spec.size}')} "
                f"in {root}, or set dataset.root to the folder that holds it."
            ) from None
    _check_npz(file)
    out = {}
    for split in ("train", "val", "test"):
        ds = cls(split=split, root=str(root), download=False, size=spec.size)
        out[split] = (np.asarray(ds.imgs), np.asarray(ds.labels).reshape(len(ds.imgs), -1)[:, 0])
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    return out, names, False


def _load_cifar(spec: Cifar10Data | Cifar100Data) -> tuple[Arrays, list[str], bool]:
    import torchvision

    cls, folder = (
        (torchvision.datasets.CIFAR10, "cifar-10-batches-py")
        if spec.name == "cifar10"
        else (torchvision.datasets.CIFAR100, "cifar-100-python")
    )
    root = Path(spec.root).expanduser() if spec.root else default_data_root() / spec.name
    download = not (root / folder).exists()
    out, names = {}, None
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(
                f"{spec.name}: no data at {root / folder} and the download failed ({type(exc).__name__}: {exc}). "
                f"Put the python-version archive's {folder}/ in {root} (set dataset.root), or use "
                f"`dataset: {{name: npz, path: ...}}` with a local copy such as shared/data/cifar10/cifar10_subset.npz."
            ) from None
        out[split] = (np.asarray(ds.data), np.asarray(ds.targets))
        names = list(ds.classes)
    return out, names, True


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def _read_folder(split_dir: Path, classes: list[str], resolution: int, grey: bool) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, ImageOps

    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise DatasetError(f"imagefolder: class folder {class_dir} is missing (classes: {classes})")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"imagefolder: no images in {class_dir} (looked for {sorted(_IMAGE_SUFFIXES)})")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if grey else "RGB")
                    # Shorter side to `resolution`, then a centre crop: the usual ImageNet-subset recipe.
                    im = ImageOps.fit(im, (resolution, resolution), Image.Resampling.BICUBIC)
                    images.append(np.asarray(im, dtype=np.uint8))
            except OSError as exc:
                raise DatasetError(f"imagefolder: cannot decode {f} ({exc})") from None
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _load_imagefolder(spec: ImageFolderData) -> tuple[Arrays, list[str], bool]:
    root = Path(spec.root).expanduser()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"imagefolder: {train_dir} not found (expected {root}/train/<class>/<image files>)")
    found = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    classes = list(spec.classes) if spec.classes else found
    missing = [c for c in classes if c not in found]
    if missing:
        raise DatasetError(f"dataset.classes: {missing} not found under {train_dir} (found {found[:20]}...)")
    out = {"train": _read_folder(train_dir, classes, spec.resolution, spec.grey)}
    evals = [s for s in ("val", "test") if (root / s).is_dir()]
    if not evals:
        raise DatasetError(f"imagefolder: neither {root / 'val'} nor {root / 'test'} exists; one is the test split")
    # With both, test is the test split and val is kept for model selection; with one, it is the test split.
    if len(evals) == 2:
        out["val"] = _read_folder(root / "val", classes, spec.resolution, spec.grey)
    out["test"] = _read_folder(root / evals[-1], classes, spec.resolution, spec.grey)
    return out, classes, True


def _check_npz(file: Path) -> None:
    if not file.exists():
        raise DatasetError(f"file not found: {file}")
    try:
        with np.load(file, allow_pickle=False) as z:
            list(z.keys())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{file}: corrupt or not an .npz file ({type(exc).__name__}: {exc})") from None


def _load_npz(spec: NpzData) -> tuple[Arrays, list[str], bool]:
    file = Path(spec.path).expanduser()
    _check_npz(file)
    out = {}
    try:
        with np.load(file, allow_pickle=False) as z:
            for split in ("train", "val", "test"):
                if f"{split}_images" in z and f"{split}_labels" in z:
                    out[split] = (z[f"{split}_images"], z[f"{split}_labels"].reshape(-1))
            names = [str(n) for n in z["class_names"]] if "class_names" in z else None
            keys = sorted(z.keys())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{file}: corrupt array data ({type(exc).__name__}: {exc})") from None
    for split in ("train", "test"):
        if split not in out:
            raise DatasetError(f"{file}: arrays {split}_images and {split}_labels are required (found {keys})")
    if names is None:
        names = [str(i) for i in range(int(max(labels.max() for _, labels in out.values())) + 1)]
    return out, names, False


LOADERS = {
    "digits": _load_digits,
    "medmnist": _load_medmnist,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "imagefolder": _load_imagefolder,
    "npz": _load_npz,
}


# --- checking, resizing, caching ---------------------------------------------------------------------


def _to_images(images: np.ndarray, where: str, resolution: int | None) -> torch.Tensor:
    """uint8 (N,H,W) or (N,H,W,1|3) numpy -> uint8 (N,C,H,W) tensor at `resolution`."""
    if images.dtype != np.uint8:
        raise DatasetError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(f"{where}: images must be (N,H,W) or (N,H,W,1|3), got shape {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    return resize(x, resolution) if resolution is not None and x.shape[-1] != resolution else x


def _to_split(images: np.ndarray, labels: np.ndarray, n_classes: int, where: str, resolution: int | None) -> Split:
    x = _to_images(images, where, resolution)
    if len(images) != len(labels):
        raise DatasetError(f"{where}: {len(images)} images but {len(labels)} labels")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: labels must be integers, got {labels.dtype}")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise DatasetError(
            f"{where}: label {int(labels[bad][0])} is outside the class list (0..{n_classes - 1}); "
            f"{int(bad.sum())} labels are out of range"
        )
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N,C,H,W) images to a square `resolution`."""
    out = F.interpolate(
        images.float(), size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round().clamp(0, 255).to(torch.uint8)


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, what PIL's convert("L") uses


def fit_images(images: torch.Tensor, channels: int, resolution: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images converted to `channels` (1 or 3) and resized (centre-cropped to a square first)
    to `resolution`, as the study's own data is."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] == 3 and channels == 1:
        luma = torch.tensor(LUMA).view(1, 3, 1, 1)
        images = (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    elif images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    h, w = images.shape[-2:]
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        images = images[..., top : top + s, left : left + s]
    return images if images.shape[-1] == resolution else resize(images, resolution)


_MEMO: dict[str, Dataset] = {}  # cache file -> dataset, for repeated loads in one process


def load_dataset(spec, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load, check, resize and cache a dataset described by a grid's `dataset:` spec."""
    key = dataset_key(spec)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    file = cache / f"{spec.name}__{key[:12]}.npz"
    if str(file) in _MEMO:
        return _replace_flip(_MEMO[str(file)], spec)
    ds = _read_cache(file, spec, key) if file.exists() else None
    if ds is None:
        verification = None
        if is_face(spec):  # study.data.faces imports this module (DatasetError): imported when needed
            from study.data.faces import load_faces

            arrays, names, flip, found = load_faces(spec)
            verification = _to_verification(found, spec.resolution)
        else:
            arrays, names, flip = LOADERS[spec.name](spec)
        where = {"npz": getattr(spec, "path", ""), "imagefolder": getattr(spec, "root", "")}.get(spec.name, spec.name)
        splits = {s: _to_split(x, y, len(names), f"{where} [{s}]", spec.resolution) for s, (x, y) in arrays.items()}
        ds = Dataset(spec.name, key, splits["train"], splits.get("test"), splits.get("val"), tuple(names), flip,
                     verification)  # fmt: skip
        _write_cache(file, ds)
    _MEMO[str(file)] = ds
    return _replace_flip(ds, spec)


def _to_verification(v, resolution: int | None) -> Verification:
    images = _to_images(v.images, "verification", resolution)
    folds = None if v.folds is None else np.asarray(v.folds, dtype=np.int64)
    gallery = None if v.gallery is None else np.asarray(v.gallery, dtype=bool)
    return Verification(images, np.asarray(v.identity, dtype=np.int64), tuple(v.names),
                        np.asarray(v.pairs, dtype=np.int64), np.asarray(v.same, dtype=bool), folds, gallery,
                        v.protocol)  # fmt: skip


def _replace_flip(ds: Dataset, spec) -> Dataset:
    flip = ds.flip if spec.flip is None else spec.flip
    return ds if flip == ds.flip else dataclasses.replace(ds, flip=flip)


_VERIFICATION_ARRAYS = ("identity", "names", "pairs", "same", "folds", "gallery", "protocol")


def _write_cache(file: Path, ds: Dataset) -> None:
    import io

    arrays = {"class_names": np.asarray(ds.class_names), "flip": np.asarray(ds.flip)}
    for split in ("train", "val", "test"):
        s = getattr(ds, split)
        if s is not None:
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = s.images.numpy(), s.labels.numpy()
    if ds.verification is not None:
        v = ds.verification
        arrays["verif_images"] = v.images.numpy()
        for name in _VERIFICATION_ARRAYS:
            value = getattr(v, name)
            if value is not None:
                arrays[f"verif_{name}"] = np.asarray(value)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed: the cache is for speed
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(file, buf.getvalue())


def _read_cache(file: Path, spec, key: str) -> Dataset | None:
    try:
        with np.load(file, allow_pickle=False) as z:
            splits = {
                s: Split(torch.from_numpy(z[f"{s}_images"]), torch.from_numpy(z[f"{s}_labels"]))
                for s in ("train", "val", "test")
                if f"{s}_images" in z
            }
            verification = None
            if "verif_images" in z:
                got = {n: z.get(f"verif_{n}") for n in _VERIFICATION_ARRAYS}
                verification = Verification(torch.from_numpy(z["verif_images"]), got["identity"],
                                            tuple(str(n) for n in got["names"]), got["pairs"], got["same"],
                                            got["folds"], got["gallery"], str(got["protocol"]))  # fmt: skip
            return Dataset(
                spec.name,
                key,
                splits["train"],
                splits.get("test"),
                splits.get("val"),
                tuple(str(n) for n in z["class_names"]),
                bool(z["flip"]),
                verification,
            )
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError):
        return None  # a damaged cache is rebuilt from the source


# --- nested class-balanced subsets ---------------------------------------------------------------------


def class_order(labels: torch.Tensor | np.ndarray, num_classes: int, seed: int, dataset_key: str) -> list[np.ndarray]:
    """Per class, a fixed random order of its pool indices for this seed. Every subset is a prefix or a
    slice of these orders, so subsets are nested: the 20-per-class base is inside the 50-per-class base."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(derive_seed(seed, "subset-order", dataset_key))
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


def subset_indices(
    labels,
    num_classes: int,
    *,
    seed: int,
    start: int,
    count: int,
    dataset_key: str,
    class_names=None,
    unit: str = "class",
) -> np.ndarray:
    """Pool indices of images start..start+count-1 of every class's fixed order (class-balanced).
    The base of size b is (start=0, count=b); its extra real images are (start=b, count=e). `unit` names a
    class in messages ("identity" for face datasets, whose classes are training identities)."""
    orders = class_order(labels, num_classes, seed, dataset_key)
    out = []
    for c, order in enumerate(orders):
        if start + count > len(order):
            name = class_names[c] if class_names is not None else c
            raise DatasetError(
                f"{unit} {name!r} has {len(order)} training images; {start + count} per {unit} were asked for "
                f"(real.base + real.extra must not exceed the smallest {unit})"
            )
        out.append(order[start : start + count])
    return np.concatenate(out)


def real_indices(ds: Dataset, *, seed: int, per_class: int) -> np.ndarray:
    """Training-pool rows of the seed's real subset of `per_class` images per class: the base, or a base with
    its extra images (nested: the first `per_class` of every class's fixed order)."""
    return subset_indices(
        ds.train.labels, ds.num_classes, seed=seed, start=0, count=per_class, dataset_key=ds.key,
        class_names=ds.class_names, unit="class" if ds.verification is None else "identity",
    )  # fmt: skip
