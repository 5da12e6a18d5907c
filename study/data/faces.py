"""Face datasets: identities as classes, verification on pairs of *other* identities (SCIENCE.md section 4).

    pairs = parse_pairs("lfw/pairsDevTest.txt")        # PairList: LFW View 1 (count line) or View 2 (`folds n`)
    arrays, names, flip, verification = load_faces(LfwData(name="lfw", root=..., pairs=..., crop=0.5))

Three sources, one path. Each gives the training identities (the closed set the generator and the classifier
see: the dataset's classes, images in `arrays["train"]`) and a `VerificationArrays` (images, their identity,
the pairs, folds, a gallery/probe split where one exists) of identities that are never trained on:

- `lfw`: LFW's layout `root/<Name>/<Name>_NNNN.jpg` and a pairs file in LFW's format. Training identities: every
  identity of `root` in no pair, with at least `min_images` images. Verification: the pairs of the file
  (View 2: its 10 folds; View 1: none, study.verification draws stratified folds). No gallery/probe split.
- `att`: the AT&T faces npz; identities s1-s28 train, s29-s40 verify.
- `identityfolder`: `root/<identity>/*`; `verify` identities held out by a seeded choice (or by name).
AT&T and identity folders verify on every pair of the held-out identities' images (or `max_pairs` of each kind)
and rank-1 identification with each identity's first image as the gallery and the rest as probes.

Identity-disjointness is by construction and asserted (`check_disjoint`): a named training identity that is also
a verification identity is an error naming them. Images are decoded once per dataset spec: study.data.datasets
caches the decoded arrays (PIL decode + centre crop + resize: ~0.4 ms per 250 x 250 greyscale LFW JPEG on one
core, ~3 s for the ~6,000 images a View 1 study reads).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.data.datasets import DatasetError
from study.grid import AttData, IdentityFolderData, LfwData
from study.keys import derive_seed
from study.paths import default_data_root

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class FaceDataError(DatasetError):
    """A face dataset cannot be read or would leak identities: names the file, option or identities."""


# --- LFW pair files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairList:
    """Pairs as (name1, image1, name2, image2) with 1-based image numbers; `same` per pair; `folds` per pair
    (View 2) or None (View 1)."""

    names: tuple[tuple[str, str], ...]
    numbers: np.ndarray  # int64 (P, 2): 1-based image numbers within each identity's folder
    same: np.ndarray  # bool (P,)
    folds: np.ndarray | None  # int64 (P,)
    view: str  # "View 1" or "View 2"

    @property
    def identities(self) -> set[str]:
        return {n for pair in self.names for n in pair}


def parse_pairs(path: str | Path) -> PairList:
    """Read a pairs file in LFW's format. View 1 (pairsDevTrain/DevTest.txt): a line `n`, then n same-identity
    lines `name i j` and n different-identity lines `name1 i name2 j`. View 2 (pairs.txt): a line `folds n`,
    then `folds` blocks of n same and n different lines. Fields are tab- or space-separated."""
    path = Path(path).expanduser()
    try:
        lines = [(i + 1, line.split()) for i, line in enumerate(path.read_text().splitlines())]
    except FileNotFoundError:
        raise FaceDataError(f"pairs file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FaceDataError(f"{path}: cannot read the pairs file ({exc})") from None
    lines = [(n, f) for n, f in lines if f]
    if not lines or not 1 <= len(lines[0][1]) <= 2 or not all(x.isdigit() for x in lines[0][1]):
        raise FaceDataError(f"{path}: line 1 must be `n` (View 1) or `folds n` (View 2), got {lines[:1]}")
    header = [int(x) for x in lines[0][1]]
    folds, n = (1, header[0]) if len(header) == 1 else header
    body = lines[1:]
    if len(body) != 2 * n * folds:
        raise FaceDataError(
            f"{path}: the header promises {folds} x ({n} same + {n} different) = {2 * n * folds} pairs, "
            f"the file has {len(body)} pair lines"
        )
    names, numbers, same, fold = [], [], [], []
    for k, (line_no, fields) in enumerate(body):
        is_same = (k // n) % 2 == 0  # blocks of n same, then n different, per fold
        want = 3 if is_same else 4
        if len(fields) != want or not all(fields[i].isdigit() for i in ((1, 2) if is_same else (1, 3))):
            kind = "`name i j` (same identity)" if is_same else "`name1 i name2 j` (different identities)"
            raise FaceDataError(f"{path}: line {line_no}: expected {kind}, got {' '.join(fields)!r}")
        if is_same:
            names.append((fields[0], fields[0]))
            numbers.append((int(fields[1]), int(fields[2])))
        else:
            if fields[0] == fields[2]:
                raise FaceDataError(f"{path}: line {line_no}: a different-identity pair names {fields[0]} twice")
            names.append((fields[0], fields[2]))
            numbers.append((int(fields[1]), int(fields[3])))
        same.append(is_same)
        fold.append(k // (2 * n))
    return PairList(
        tuple(names),
        np.asarray(numbers, dtype=np.int64),
        np.asarray(same, dtype=bool),
        np.asarray(fold, dtype=np.int64) if len(header) == 2 else None,
        "View 2" if len(header) == 2 else "View 1",
    )


# --- verification data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationArrays:
    """The verification protocol in numpy: what study.data.datasets turns into `Verification`."""

    images: np.ndarray  # uint8 (M, H, W) or (M, H, W, 3)
    identity: np.ndarray  # int64 (M,): index into `names`
    names: tuple[str, ...]  # verification identities
    pairs: np.ndarray  # int64 (P, 2): rows of `images`
    same: np.ndarray  # bool (P,)
    folds: np.ndarray | None  # int64 (P,): the protocol's folds, or None (study.verification draws them)
    gallery: np.ndarray | None  # bool (M,): rank-1 gallery images (the rest are probes), or None
    protocol: str  # e.g. "LFW View 2 (pairs.txt): 10 folds"


def check_disjoint(train: list[str] | tuple[str, ...], verify, where: str) -> None:
    """The guarantee of this module: no training identity is a verification identity."""
    leak = sorted(set(train) & set(verify))
    if leak:
        shown = ", ".join(leak[:20]) + (f" and {len(leak) - 20} more" if len(leak) > 20 else "")
        raise FaceDataError(
            f"{where}: {len(leak)} training identities are also verification identities ({shown}); "
            "verification must be on identities never trained on"
        )


def all_pairs(identity: np.ndarray, max_pairs: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of images (i < j) of these identities, same and different; with `max_pairs`, a seeded sample
    of at most that many of each kind (sorted)."""
    idx = np.array(list(itertools.combinations(range(len(identity)), 2)), dtype=np.int64).reshape(-1, 2)
    same = identity[idx[:, 0]] == identity[idx[:, 1]]
    if max_pairs is not None:
        rng = np.random.default_rng(seed)
        keep = []
        for group in (np.flatnonzero(same), np.flatnonzero(~same)):
            keep.append(group if len(group) <= max_pairs else np.sort(rng.choice(group, max_pairs, replace=False)))
        rows = np.sort(np.concatenate(keep))
        idx, same = idx[rows], same[rows]
    return idx, same


def held_out_protocol(images, identity, names, max_pairs, seed, what: str) -> VerificationArrays:
    """Verification on every image of held-out identities: all pairs (or a sample), the first image of each
    identity (in the given order) as the rank-1 gallery."""
    identity = np.asarray(identity, dtype=np.int64)
    pairs, same = all_pairs(identity, max_pairs, derive_seed(seed, "verification-pairs"))
    if not same.any() or same.all():
        raise FaceDataError(f"{what}: the verification identities give no same- or no different-identity pairs")
    gallery = np.zeros(len(identity), dtype=bool)
    gallery[[int(np.flatnonzero(identity == i)[0]) for i in range(len(names))]] = True
    sample = f", {max_pairs} per kind sampled" if max_pairs else ""
    protocol = f"{what}: all pairs of {len(names)} held-out identities ({len(identity)} images{sample})"
    return VerificationArrays(np.asarray(images), identity, tuple(names), pairs, same, None, gallery, protocol)


def choose_identities(eligible: list[str], choice, seed, where: str, why: str) -> list[str]:
    """Training identities from `eligible` (sorted): all, a fixed random count, or names (each must be eligible)."""
    if choice == "all":
        chosen = list(eligible)
    elif isinstance(choice, int):
        if choice > len(eligible):
            raise FaceDataError(f"{where}.identities: {choice} asked for, only {len(eligible)} qualify ({why})")
        rng = np.random.default_rng(derive_seed(seed, "training-identities"))
        chosen = sorted(eligible[i] for i in rng.choice(len(eligible), choice, replace=False))
    else:
        missing = sorted(set(choice) - set(eligible))
        if missing:
            raise FaceDataError(f"{where}.identities: {missing[:20]} do not qualify ({why})")
        chosen = list(choice)
    if len(chosen) < 2:
        raise FaceDataError(f"{where}: {len(chosen)} training identities qualify ({why}); at least 2 are needed")
    return chosen


# --- decoding --------------------------------------------------------------------------------------------


def crop_box(width: int, height: int, crop: float) -> tuple[float, float, float, float]:
    """The centred square of side crop * min(width, height)."""
    side = crop * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def decode(files: list[Path], crop: float, resolution: int, grey: bool) -> np.ndarray:
    """uint8 (N, r, r) or (N, r, r, 3): each file's centre crop, resized with PIL's antialiased bicubic filter."""
    from PIL import Image

    out = np.empty((len(files), resolution, resolution) + (() if grey else (3,)), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("L" if grey else "RGB")
                box = crop_box(*im.size, crop)
                out[i] = np.asarray(im.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box))
        except OSError as exc:
            raise FaceDataError(f"cannot decode {f} ({exc})") from None
    return out


def _is_grey(file: Path) -> bool:
    from PIL import Image

    with Image.open(file) as im:
        return im.mode in ("L", "1", "I;16", "I")


def crop_array(images: np.ndarray, crop: float, resolution: int) -> np.ndarray:
    """uint8 (N, H, W) images centre-cropped and resized like `decode` (for data already in arrays)."""
    from PIL import Image

    out = np.empty((len(images), resolution, resolution), dtype=np.uint8)
    for i, x in enumerate(images):
        im = Image.fromarray(x)
        out[i] = np.asarray(im.resize((resolution, resolution), Image.Resampling.BICUBIC, box=crop_box(*im.size, crop)))
    return out


# --- the three sources -------------------------------------------------------------------------------------


def _identity_files(root: Path, what: str) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise FaceDataError(f"{what}: {root} is not a directory (expected {root}/<identity>/<image files>)")
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if files:
            out[d.name] = files
    if not out:
        raise FaceDataError(f"{what}: no identity folders with images under {root}")
    return out


def _train_arrays(files: dict[str, list[Path]], chosen: list[str], spec, grey: bool):
    paths = [f for name in chosen for f in files[name]]
    labels = np.repeat(np.arange(len(chosen)), [len(files[name]) for name in chosen])
    return decode(paths, spec.crop, spec.resolution, grey), labels


def _lfw_file(root: Path, name: str, number: int) -> Path:
    return root / name / f"{name}_{number:04d}.jpg"


def load_lfw(spec: LfwData):
    root, pairs_file = Path(spec.root).expanduser(), Path(spec.pairs).expanduser()
    pl = parse_pairs(pairs_file)
    files = _identity_files(root, "dataset.root")
    missing = sorted({str(_lfw_file(root, n, k)) for (a, b), (i, j) in zip(pl.names, pl.numbers, strict=True)
                      for n, k in ((a, i), (b, j)) if not _lfw_file(root, n, k).exists()})  # fmt: skip
    if missing:
        raise FaceDataError(f"{pairs_file}: {len(missing)} images named by the pairs are missing, e.g. {missing[:3]}")
    in_pairs = pl.identities
    eligible = [n for n, f in files.items() if n not in in_pairs and len(f) >= spec.min_images]
    why = f"in no pair of {pairs_file.name} and >= {spec.min_images} images"
    if isinstance(spec.identities, list):
        check_disjoint(spec.identities, in_pairs, f"dataset.identities (pairs file {pairs_file})")
    chosen = choose_identities(eligible, spec.identities, "lfw", "dataset", why)
    grey = _is_grey(next(iter(files.values()))[0]) if spec.grey is None else spec.grey
    train = _train_arrays(files, chosen, spec, grey)
    # Verification images: every image a pair names, once, in the order first named.
    keys = list(dict.fromkeys((n, int(k)) for pair, nums in zip(pl.names, pl.numbers, strict=True)
                              for n, k in zip(pair, nums, strict=True)))  # fmt: skip
    row = {key: i for i, key in enumerate(keys)}
    names = sorted(in_pairs)
    index = {n: i for i, n in enumerate(names)}
    pairs = np.array(
        [[row[(a, int(i))], row[(b, int(j))]] for (a, b), (i, j) in zip(pl.names, pl.numbers, strict=True)]
    )
    images = decode([_lfw_file(root, n, k) for n, k in keys], spec.crop, spec.resolution, grey)
    folds = f": {len(np.unique(pl.folds))} folds" if pl.folds is not None else ""
    protocol = f"LFW {pl.view} ({pairs_file.name}, {len(pairs)} pairs{folds})"
    verification = VerificationArrays(images, np.array([index[n] for n, _ in keys]), tuple(names), pairs, pl.same,
                                      pl.folds, None, protocol)  # fmt: skip
    return {"train": train}, chosen, True, verification


ATT_TRAIN = 28  # identities s1-s28 train, s29-s40 verify


def load_att(spec: AttData):
    file = Path(spec.path).expanduser() if spec.path else default_data_root() / "att_faces" / "att_faces.npz"
    if not file.exists():
        raise FaceDataError(f"AT&T faces: file not found: {file} (set dataset.path; shared/data/att_faces/ has it)")
    with np.load(file, allow_pickle=False) as z:
        images, labels, names = z["images"], z["labels"].astype(np.int64), [str(n) for n in z["class_names"]]
        order = np.lexsort((z["image_index"], labels))  # identity-major, images 1..10
    images, labels = crop_array(images[order], spec.crop, spec.resolution), labels[order]
    train_names, verify_names = names[:ATT_TRAIN], names[ATT_TRAIN:]
    if isinstance(spec.identities, list):
        check_disjoint(spec.identities, verify_names, "dataset.identities (AT&T s29-s40 verify)")
    chosen = choose_identities(train_names, spec.identities, "att", "dataset", "AT&T s1-s28")
    label_of = {names.index(n): k for k, n in enumerate(chosen)}  # AT&T label -> training class
    keep = np.isin(labels, list(label_of))
    train = (images[keep], np.array([label_of[int(y)] for y in labels[keep]], dtype=np.int64))
    held = labels >= ATT_TRAIN
    verification = held_out_protocol(images[held], labels[held] - ATT_TRAIN, verify_names, None, 0, "AT&T s29-s40")
    return {"train": train}, chosen, True, verification


def load_identity_folder(spec: IdentityFolderData):
    root = Path(spec.root).expanduser()
    files = _identity_files(root, "dataset.root")
    if isinstance(spec.verify, list):
        unknown = sorted(set(spec.verify) - set(files))
        if unknown:
            raise FaceDataError(f"dataset.verify: {unknown[:20]} are not identity folders under {root}")
        verify = sorted(spec.verify)
    else:
        candidates = [n for n, f in files.items() if len(f) >= 2]
        if spec.verify > len(candidates):
            raise FaceDataError(
                f"dataset.verify: {spec.verify} asked for, {len(candidates)} identities have >= 2 images"
            )
        rng = np.random.default_rng(derive_seed(spec.split_seed, "verification-identities"))
        verify = sorted(candidates[i] for i in rng.choice(len(candidates), spec.verify, replace=False))
    if isinstance(spec.identities, list):
        check_disjoint(spec.identities, verify, "dataset.identities (dataset.verify)")
    eligible = [n for n, f in files.items() if n not in set(verify) and len(f) >= spec.min_images]
    why = f"not a verification identity and >= {spec.min_images} images"
    chosen = choose_identities(eligible, spec.identities, spec.split_seed, "dataset", why)
    grey = _is_grey(files[chosen[0]][0]) if spec.grey is None else spec.grey
    train = _train_arrays(files, chosen, spec, grey)
    held_files = [f for n in verify for f in files[n]]
    identity = np.repeat(np.arange(len(verify)), [len(files[n]) for n in verify])
    images = decode(held_files, spec.crop, spec.resolution, grey)
    what = f"{root.name}: held-out identities"
    verification = held_out_protocol(images, identity, verify, spec.max_pairs, spec.split_seed, what)
    return {"train": train}, chosen, True, verification


FACE_LOADERS = {"lfw": load_lfw, "att": load_att, "identityfolder": load_identity_folder}


def load_faces(spec):
    """(arrays {"train": (images, labels)}, training identity names, flip default, VerificationArrays);
    identity-disjointness checked. Horizontal flips are a valid augmentation for faces."""
    arrays, names, flip, verification = FACE_LOADERS[spec.name](spec)
    check_disjoint(names, verification.names, f"dataset {spec.name}")
    return arrays, names, flip, verification
