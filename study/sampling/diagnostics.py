"""Why did a synthetic set help or not: memorisation, fidelity/diversity, domain gap and CAS of one sample set
at one base size (the `diagnostics` stage; everything lands in a torch-free `diagnostics.json`).

    real = RealSets.of(ds, seed=0, base_per_class=5)          # base, outside-base and balanced pool images
    out = sample_set_diagnostics(split, real, judge, spec, classifier=..., ...)   # the dict of diagnostics.json

- **Memorisation / redundancy** (study.memorisation): each sample against the base images of its class (the
  closed-set generator's training set; what the classifier already has) and against as many training
  images of the class from outside the base (never test or val), in pixel space (`mem_frac`, `mem_ratio`) and
  in the judge's feature space (`mem_frac_feat`, `mem_ratio_feat`). A generator trained on the whole pool
  with a validation split it never saw: also against its own training set (`gen_mem_frac`; `gen_mem_ratio`,
  the samples' distance to it over the val images' distance to it, Meehan et al. 2020's data-copying idea).
- **Fidelity / diversity** in the penultimate features of the *judge*, a classifier trained once per
  (dataset, seed) on the whole training pool (the same judge as conditional accuracy, so the space does not
  depend on the arm): FD, KD with its standard error, precision / recall (k = 3), density / coverage (k = 5)
  against a class-balanced sample of the pool (at most `REAL_PER_CLASS` images per class), overall and per class.
  With local Inception-v3 FID weights, also the standard `fid` (torchmetrics; never downloaded).
- **Domain gap** (`domain_auc`): cross-validated ROC AUC of a small CNN telling real pool images from the
  samples, class for class (0.5 = indistinguishable; Wang et al. 2025 use such a classifier).
- **CAS** (Ravuri & Vinyals 2019): test accuracy of the grid's classifier (same recipe and step budget as
  every cell) trained on the first `base` synthetic images per class alone: beside the real-only cell of the
  same size. Conditional sets only (mixed images have no single class).
- `nearest.png`: the first samples of every class, each beside its nearest base image (pixel space).

Cost (one core, quickstart digits, 40 images per class): memorisation and fidelity well under a second;
the domain classifier `folds` x `steps` small-CNN steps and CAS one cell's training dominate (a few seconds).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from study.data.datasets import Dataset, Split, class_order
from study.grid import ClassifierSpec, DiagnosticsSpec, DomainClassifierSpec
from study.keys import derive_seed
from study.memorisation import MAX_BLOCKS, data_copying, memorisation
from study.metrics import density_coverage, frechet_distance, kernel_distance, precision_recall
from study.store import DIAGNOSTICS, NEAREST, atomic_path

__all__ = ["DIAGNOSTICS", "NEAREST", "RealSets", "domain_auc", "sample_set_diagnostics", "standard_fid"]
INCEPTION_ENV = "STUDY_INCEPTION_WEIGHTS"
REAL_PER_CLASS = 500  # the fidelity reference: a class-balanced sample of the pool, at most this many per class
PR_K, DC_K = 3, 5  # precision/recall (Kynkaanniemi et al.) and density/coverage (Naeem et al.) neighbourhoods


# --- the real images a sample set is compared with -------------------------------------------------------


@dataclass(frozen=True)
class RealSets:
    """Real training images for one (seed, base): the base, the images of each class after it in the seed's
    fixed order (outside the base; never test or val; as many as the distance ratio's blocks use), and a
    class-balanced sample of the pool."""

    base: Split
    outside: Split  # class-major: the next MAX_BLOCKS x base images of each class in the seed's order
    pool: Split  # class-balanced reference: the first min(smallest class, REAL_PER_CLASS) of each class

    @classmethod
    def of(cls, ds: Dataset, seed: int, base_per_class: int) -> RealSets:
        orders = class_order(ds.train.labels, ds.num_classes, seed, ds.key)
        per_class = min(min(len(o) for o in orders), REAL_PER_CLASS)
        pick = lambda parts: ds.train.subset(np.concatenate(parts))  # noqa: E731
        return cls(
            base=pick([o[:base_per_class] for o in orders]),
            outside=pick([o[base_per_class : (1 + MAX_BLOCKS) * base_per_class] for o in orders]),
            pool=pick([o[:per_class] for o in orders]),
        )


def sample_classes(split: Split) -> list[tuple[int, ...]]:
    """The class of each sample, or the source classes of a mixed one (the non-zero columns of its soft target)."""
    if split.soft is None:
        return [(int(c),) for c in split.labels]
    return [tuple(int(c) for c in np.flatnonzero(row > 0)) for row in split.soft.numpy()]


def _pixels(images: torch.Tensor) -> np.ndarray:
    return images.reshape(len(images), -1).numpy().astype(np.float32) / 255.0


# --- fidelity and diversity in the judge's space -----------------------------------------------------------


def fidelity(real: np.ndarray, fake: np.ndarray) -> dict:
    """FD, KD (+ se), precision, recall, density, coverage of `fake` against `real` features (NaN where a set is
    too small for the estimator: FD/KD need 2 rows a side, precision/recall k + 1, density/coverage k + 1)."""
    out = dict.fromkeys(("fd", "kd", "kd_se", "precision", "recall", "density", "coverage"), float("nan"))
    n = min(len(real), len(fake))
    if n >= 2:
        out["fd"] = frechet_distance(real, fake)
        out["kd"], out["kd_se"] = kernel_distance(real, fake)
    if n > PR_K:
        out["precision"], out["recall"] = precision_recall(real, fake, PR_K)
    if n > DC_K:
        out["density"], out["coverage"] = density_coverage(real, fake, DC_K)
    return out


def fidelity_per_class(real: np.ndarray, real_labels, fake: np.ndarray, fake_labels) -> dict[str, dict]:
    real_labels, fake_labels = np.asarray(real_labels), np.asarray(fake_labels)
    return {str(c): fidelity(real[real_labels == c], fake[fake_labels == c]) for c in np.unique(fake_labels)}


# --- the domain classifier and CAS ---------------------------------------------------------------------------


def domain_spec(spec: DomainClassifierSpec) -> ClassifierSpec:
    """The domain classifier's recipe as a classifier spec: AdamW with a cosine schedule, no augmentation (crops
    and flips would hide the pixel statistics that give synthetic images away)."""
    return ClassifierSpec(arch=spec.arch, width=spec.width, steps=spec.steps, batch_size=spec.batch_size,
                          optimizer="adamw", lr=spec.lr, weight_decay=5e-4, augment=False)  # fmt: skip


def balanced_real(pool: Split, fake_labels: np.ndarray, num_classes: int) -> Split:
    """Real pool images with the samples' class counts (as many as the pool has)."""
    want = np.bincount(np.asarray(fake_labels), minlength=num_classes)
    labels = pool.labels.numpy()
    return pool.subset(np.concatenate([np.flatnonzero(labels == c)[: want[c]] for c in range(num_classes)]))


def domain_auc(real: torch.Tensor, fake: torch.Tensor, spec: DomainClassifierSpec, seed: int, device="auto") -> dict:
    """Cross-validated ROC AUC of a classifier separating real (0) from synthetic (1) images: `spec.folds`
    stratified folds, each scored by a classifier trained on the others; one AUC over all out-of-fold scores.
    The larger side is cut to the smaller (seeded), so chance is 0.5."""
    from study.models.classifier import predict_proba, train_classifier

    rng = np.random.default_rng(derive_seed(seed, "domain-balance"))
    n = min(len(real), len(fake))
    if n < spec.folds:
        return {"domain_auc": float("nan"), "domain_n": 2 * n}
    real = real[np.sort(rng.permutation(len(real))[:n])]
    fake = fake[np.sort(rng.permutation(len(fake))[:n])]
    images, y = torch.cat([real, fake]), np.repeat([0, 1], n)
    scores = np.empty(2 * n)
    folds = StratifiedKFold(spec.folds, shuffle=True, random_state=derive_seed(seed, "domain-folds") % 2**32)
    recipe = domain_spec(spec)
    for k, (train, test) in enumerate(folds.split(np.zeros(2 * n), y)):
        split = Split(images[train], torch.as_tensor(y[train]))
        model, _ = train_classifier(recipe, split, 2, seed=derive_seed(seed, "domain", k), flip=False, device=device)
        scores[test] = predict_proba(model, images[test], 2, device=device)[:, 1]
    return {"domain_auc": float(roc_auc_score(y, scores)), "domain_n": 2 * n}


def classification_accuracy_score(
    spec: ClassifierSpec, synthetic: Split, ds: Dataset, seed: int, device="auto"
) -> dict:
    """CAS: the classifier trained on `synthetic` alone (the grid's recipe, val selection included), tested on
    the real test split."""
    from study.models.classifier import evaluate, train_classifier

    model, stats = train_classifier(spec, synthetic, ds.num_classes, seed=seed, flip=ds.flip, val=ds.val, device=device)
    metrics = evaluate(model, ds.test, ds.num_classes, device=device)
    return {"cas": metrics["test_acc"], "cas_bacc": metrics["test_bacc"], "cas_n": len(synthetic)}


# --- the standard FID (only with local Inception-v3 weights) ---------------------------------------------------


def inception_weights(spec: DiagnosticsSpec) -> Path | None:
    """The Inception-v3 FID weights file: the grid's `diagnostics.inception`, else $STUDY_INCEPTION_WEIGHTS; None
    when neither is set. A path that is set but missing is an error (it is never downloaded)."""
    path = spec.inception or os.environ.get(INCEPTION_ENV)
    if not path:
        return None
    path = Path(path).expanduser()
    if not path.is_file():
        where = "diagnostics.inception" if spec.inception else f"${INCEPTION_ENV}"
        raise FileNotFoundError(f"{where}: {path} is not a file (torch-fidelity's pt_inception-2015-12-05 weights)")
    return path


def standard_fid(real: torch.Tensor, fake: torch.Tensor, weights: Path, device="auto", batch_size: int = 64) -> float:
    """FID (Heusel et al. 2017) through torchmetrics: 2048-d pool features of torch-fidelity's FID Inception-v3
    loaded from `weights`; uint8 images, grey repeated to RGB, resized to 299 px inside. Slow on a CPU (~6 GFLOP
    per image)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from study.models.classifier import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights)).to(dev)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            fid.update((x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x).to(dev), real=is_real)
    return float(fid.compute())


# --- the nearest-image panel ---------------------------------------------------------------------------------


def nearest_panel(samples: Split, base: Split, nearest: np.ndarray, path: Path, per_class: int = 8) -> None:
    """A PNG with one row per class: the class's first `per_class` samples, each joined to its nearest base image
    by a grey line (white space between pairs), upscaled so 8 px digits stay visible."""
    from PIL import Image

    labels = samples.labels.numpy()
    classes = np.unique(labels)
    cols = min(per_class, min(int((labels == c).sum()) for c in classes))
    c, h, w = samples.images.shape[1:]
    line, space = max(1, w // 16), max(2, w // 3)
    pair_w = 2 * w + line + space
    canvas = np.full((len(classes) * (h + space) + space, cols * pair_w + space, c), 255, dtype=np.uint8)
    for r, cls in enumerate(classes):
        for j, i in enumerate(np.flatnonzero(labels == cls)[:cols]):
            top, left = space + r * (h + space), space + j * pair_w
            canvas[top : top + h, left : left + w] = samples.images[i].permute(1, 2, 0).numpy()
            canvas[top : top + h, left + w : left + w + line] = 128
            if nearest[i] >= 0:
                near = base.images[nearest[i]].permute(1, 2, 0).numpy()
                canvas[top : top + h, left + w + line : left + 2 * w + line] = near
    scale = max(1, 32 // w)
    canvas = canvas.repeat(scale, 0).repeat(scale, 1)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas[..., 0] if c == 1 else canvas).save(tmp, format="PNG")


# --- all of it ----------------------------------------------------------------------------------------------


def _flat(prefix: str, values: dict, keys=("mem_frac", "mem_ratio", "mem_frac_unseen")) -> dict:
    return {f"{k}{prefix}": values[k] for k in keys}


def sample_set_diagnostics(
    samples: Split,
    real: RealSets,
    ds: Dataset,
    features,
    spec: DiagnosticsSpec,
    seed: int,
    classifier: ClassifierSpec | None = None,
    cas_samples: Split | None = None,
    generator_seen: Split | None = None,
    device="auto",
    out_dir: Path | None = None,
) -> dict:
    """Every diagnostic of one sample set (the contents of diagnostics.json). `features(images)` is the judge's
    penultimate map; `classifier` and `cas_samples` (the first base-size images per class) give CAS;
    `generator_seen` (a pool-trained generator's training images) with `ds.val` gives gen_mem_*."""
    timing: dict[str, float] = {}
    classes = sample_classes(samples)
    conditional = samples.soft is None
    out: dict = {"n_samples": len(samples), "n_base": len(real.base), "n_outside": len(real.outside),
                 "n_real_reference": len(real.pool), "conditional": conditional}  # fmt: skip

    start = time.perf_counter()
    fake_px, fake_ft = _pixels(samples.images), features(samples.images)
    base_ft, outside_ft = features(real.base.images), features(real.outside.images)
    pool_ft = features(real.pool.images)
    timing["features"] = time.perf_counter() - start

    start = time.perf_counter()
    pix = memorisation(fake_px, classes, _pixels(real.base.images), real.base.labels.numpy(),
                       _pixels(real.outside.images), real.outside.labels.numpy())  # fmt: skip
    feat = memorisation(fake_ft, classes, base_ft, real.base.labels.numpy(), outside_ft, real.outside.labels.numpy())
    out |= _flat("", pix) | _flat("_feat", feat) | {"d_base": pix["d_seen"], "d_outside": pix["d_unseen"]}
    out["per_class_memorisation"] = {"pixel": pix.get("per_class"), "feature": feat.get("per_class")}
    if generator_seen is not None and ds.val is not None and len(ds.val):
        # uint8 rows (0-255 levels; the ratios do not depend on the scale): a whole pool is never copied to floats
        flat = lambda images: images.reshape(len(images), -1).numpy()  # noqa: E731
        own = data_copying(flat(samples.images), classes, flat(generator_seen.images), generator_seen.labels.numpy(),
                           flat(ds.val.images), ds.val.labels.numpy())  # fmt: skip
        out |= {"gen_mem_frac": own["mem_frac"], "gen_mem_ratio": own["mem_ratio"],
                "gen_mem_frac_unseen": own["mem_frac_unseen"]}  # fmt: skip
    timing["memorisation"] = time.perf_counter() - start
    if out_dir is not None and conditional:
        nearest_panel(samples, real.base, pix["nearest"], Path(out_dir) / NEAREST)

    start = time.perf_counter()
    out |= fidelity(pool_ft, fake_ft)
    if conditional:
        per_class = fidelity_per_class(pool_ft, real.pool.labels.numpy(), fake_ft, samples.labels.numpy())
        out["per_class_fidelity"] = per_class
        for key in ("fd", "kd", "precision", "recall", "density", "coverage"):
            values = [v[key] for v in per_class.values() if np.isfinite(v[key])]
            out[f"{key}_class"] = float(np.mean(values)) if values else float("nan")
    timing["fidelity"] = time.perf_counter() - start

    if spec.domain is not None:
        start = time.perf_counter()
        dominant = samples.labels.numpy()
        reference = balanced_real(real.pool, dominant, ds.num_classes)
        out |= domain_auc(reference.images, samples.images, spec.domain, seed, device)
        timing["domain"] = time.perf_counter() - start
    if spec.cas and classifier is not None and cas_samples is not None and conditional and ds.test is not None:
        start = time.perf_counter()
        out |= classification_accuracy_score(classifier, cas_samples, ds, derive_seed(seed, "cas"), device)
        timing["cas"] = time.perf_counter() - start
    weights = inception_weights(spec)
    if weights is not None:
        start = time.perf_counter()
        out["fid"] = standard_fid(real.pool.images, samples.images, weights, device)
        timing["fid"] = time.perf_counter() - start
    out["seconds"] = timing
    return out
