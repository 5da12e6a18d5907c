"""Metrics on predictions and features: numpy, scipy and scikit-learn, no torch.

    m = classification_metrics(probs, labels, num_classes=10)
    m["acc"], m["bacc"], m["auc"], m["nll"], m["ece"], m["per_class_acc"]
    frechet_distance(real_features, synthetic_features)      # FD (FID's formula) in any feature space

Conventions (they matter when comparing with published numbers):
- `auc` is the ROC AUC of the positive class for 2 classes, else the macro average of one-vs-rest AUCs
  (MedMNIST v2 reports these two). Classes absent from `labels` have no AUC and are left out of the mean.
- `bacc` is the mean per-class recall over the classes present in `labels` (scikit-learn's definition).
- `ece` is the top-label expected calibration error with 15 equal-width confidence bins on (0, 1]
  (Guo et al. 2017): sum over bins of (bin share) x |accuracy - mean confidence|.
- `nll` is the mean negative log-probability of the true class, probabilities clipped at 1e-12.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from sklearn.metrics import roc_auc_score

ECE_BINS = 15
NLL_FLOOR = 1e-12


def _check(probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels) or labels.ndim != 1:
        raise ValueError(f"expected probs (N, K) and labels (N,), got {probs.shape} and {labels.shape}")
    if num_classes is not None and probs.shape[1] != num_classes:
        raise ValueError(f"probs have {probs.shape[1]} columns but num_classes is {num_classes}")
    if len(labels) == 0:
        raise ValueError("no predictions to score (empty labels)")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}, got {labels.min()}..{labels.max()}")
    return probs, labels


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    probs, labels = _check(probs, labels)
    return float(np.mean(probs.argmax(1) == labels))


def per_class_accuracy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Recall of every class (length K); NaN for classes with no examples in `labels`."""
    probs, labels = _check(probs, labels)
    correct = probs.argmax(1) == labels
    n_classes = probs.shape[1]
    hits = np.bincount(labels, weights=correct, minlength=n_classes)
    counts = np.bincount(labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def balanced_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.nanmean(per_class_accuracy(probs, labels)))


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Binary AUC of class 1 for K = 2; macro one-vs-rest AUC over the classes present otherwise."""
    probs, labels = _check(probs, labels)
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1])) if len(np.unique(labels)) == 2 else float("nan")
    present = [c for c in range(probs.shape[1]) if 0 < np.sum(labels == c) < len(labels)]
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    return float(np.mean(aucs)) if aucs else float("nan")


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    probs, labels = _check(probs, labels)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], NLL_FLOOR, None))))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE with `bins` equal-width bins (lo, hi] over the predicted class's probability."""
    probs, labels = _check(probs, labels)
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    # bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 goes to the first bin
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    hits = np.bincount(which, weights=correct, minlength=bins)
    confidence_mass = np.bincount(which, weights=confidence, minlength=bins)
    return float(np.abs(hits - confidence_mass).sum() / len(labels))  # = sum_b n_b/N |acc_b - conf_b|


def classification_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Every metric above in one plain dict; `per_class_acc` is a list (None where a class has no examples)."""
    probs, labels = _check(probs, labels, num_classes)
    per_class = per_class_accuracy(probs, labels)
    return {
        "acc": accuracy(probs, labels),
        "bacc": balanced_accuracy(probs, labels),
        "auc": roc_auc(probs, labels),
        "nll": nll(probs, labels),
        "ece": expected_calibration_error(probs, labels),
        "per_class_acc": [None if np.isnan(a) else float(a) for a in per_class],
        "n": len(labels),
    }


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows are samples; Heusel et al. 2017):
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). FID is this on Inception-v3 pool features; on a study
    classifier's penultimate features it is called FD. Biased upwards for small sets (compare sets of one size)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) feature arrays of one width, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 rows per set for a covariance, got {len(a)} and {len(b)}")
    mu = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # Tr (S_a S_b)^(1/2) = sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric PSD,
    # so eigvalsh is stable where sqrtm of the non-symmetric product can go complex).
    root_a = linalg.sqrtm(cov_a).real
    eig = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    cross = np.sqrt(np.clip(eig, 0.0, None)).sum()
    return float(max(0.0, mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross))
