"""Metrics on predictions and features: numpy, scipy and scikit-learn, no torch.

    m = classification_metrics(probs, labels, num_classes=10)
    m["acc"], m["bacc"], m["auc"], m["nll"], m["ece"], m["per_class_acc"]
    m["auc_n"], m["auc_n_note"]        # auc's effective binomial trials (Hanley & McNeil 1982) and, if NaN, why
    frechet_distance(real_features, synthetic_features)      # FD (FID's formula) in any feature space
    kernel_distance(real_features, synthetic_features)       # KD (KID's estimator) and its standard error
    precision_recall(real, synthetic), density_coverage(real, synthetic)   # k-NN manifold estimates

Conventions (they matter when comparing with published numbers):
- `auc` is the ROC AUC of the positive class for 2 classes, else the macro average of one-vs-rest AUCs
  (MedMNIST v2 reports these two). Classes absent from `labels` have no AUC and are left out of the mean.
- `bacc` is the mean per-class recall over the classes present in `labels` (scikit-learn's definition).
- `ece` is the top-label expected calibration error with 15 equal-width confidence bins on (0, 1]
  (Guo et al. 2017): sum over bins of (bin share) x |accuracy - mean confidence|.
- `nll` is the mean negative log-probability of the true class, probabilities clipped at 1e-12.
- `auc_n` is auc's noise model for the equivalence analysis (study.analysis.metric): the effective number of
  binomial trials n = A (1 - A) / Var(A), Var from Hanley & McNeil's formula (`auc_trials`). NaN where it is
  undefined, `auc_n_note` saying why: AUC 0 or 1 (zero variance), no AUC (one class alone in `labels`).

The feature-set distances cost O((N + M)^2 D) in chunked matrix products (no Python loops over rows): about
a second for 5,000 x 5,000 vectors of width 100 on one core.
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


def _auc_parts(probs: np.ndarray, labels: np.ndarray) -> list[tuple[float, int, int]]:
    """(AUC, positives, negatives): of class 1 for K = 2 (none unless both classes occur); else of every class
    present in `labels` (and not alone) against the rest."""
    if probs.shape[1] == 2:
        n_pos = int(np.sum(labels == 1))
        if not 0 < n_pos < len(labels):
            return []
        return [(float(roc_auc_score(labels, probs[:, 1])), n_pos, len(labels) - n_pos)]
    counts = np.bincount(labels, minlength=probs.shape[1])
    return [(float(roc_auc_score(labels == c, probs[:, c])), int(counts[c]), len(labels) - int(counts[c]))
            for c in range(probs.shape[1]) if 0 < counts[c] < len(labels)]  # fmt: skip


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Binary AUC of class 1 for K = 2; macro one-vs-rest AUC over the classes present otherwise."""
    probs, labels = _check(probs, labels)
    parts = _auc_parts(probs, labels)
    return float(np.mean([auc for auc, _, _ in parts])) if parts else float("nan")


def hanley_mcneil_variance(auc: float, n_pos: int, n_neg: int) -> float:
    """Var(A) of the empirical (Mann-Whitney) AUC with n_pos positives and n_neg negatives, Hanley & McNeil
    (1982, Radiology 143:29-36):

        Var = [A (1 - A) + (n_pos - 1) (Q1 - A^2) + (n_neg - 1) (Q2 - A^2)] / (n_pos n_neg),
        Q1 = A / (2 - A)      (two random positives both score above one random negative),
        Q2 = 2 A^2 / (1 + A)  (one random positive scores above two random negatives).

    With the true Q1 and Q2 of the score distributions this is the exact variance of the Mann-Whitney estimate
    (continuous scores, no ties); Hanley & McNeil's Q1 and Q2 are those of exponential scores in both classes,
    an approximation for other shapes. At A = 1/2 it is the null variance of the U statistic,
    (n_pos + n_neg + 1) / (12 n_pos n_neg), whatever the score distributions."""
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"need at least one positive and one negative, got {n_pos} and {n_neg}")
    if not 0.0 <= auc <= 1.0:
        raise ValueError(f"an AUC lies in [0, 1], got {auc}")
    q1, q2, a2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc), auc * auc
    return (auc * (1.0 - auc) + (n_pos - 1) * (q1 - a2) + (n_neg - 1) * (q2 - a2)) / (n_pos * n_neg)


def auc_trials(probs: np.ndarray, labels: np.ndarray) -> tuple[float, str]:
    """`roc_auc`'s effective number of binomial trials n = A (1 - A) / Var(A) (the binomial sample size with the
    same variance at that proportion) and, where n is NaN, why ("" otherwise).

    Two classes: Var(A) is `hanley_mcneil_variance` with class 1 as the positives. Several classes: A is the
    macro mean of the K one-vs-rest AUCs A_c over the classes present, each with its Hanley-McNeil variance V_c
    (class c's images the positives, all others the negatives), and Var(A) = (1/K^2) sum_c V_c = mean(V_c) / K.
    This treats the K AUCs as independent, which they are not (they score the same images, and softmax outputs
    compete); the approximation was chosen over a bootstrap over test images because it is deterministic,
    costs nothing and reduces to the exact two-class formula, and the analysis adds the seed-to-seed scatter on
    top of it (its dispersion phi) whatever the per-cell variance misses. Checked on simulated predictions
    (Gaussian logits, K = 2, 8, 10, A 0.77-0.99): a bootstrap over test images (class counts fixed) gave 0.37-0.97
    times this variance, so the approximation errs on the side of fewer trials. Near A = 1 the AUC varies less
    than a proportion over the test images does (it compares n_pos x n_neg pairs): n can exceed their number.

    Undefined (NaN): no AUC (fewer than two classes in `labels`), A = 0 or 1 (zero variance: n is 0/0), or a
    zero variance at 0 < A < 1 (every one-vs-rest AUC 0 or 1)."""
    probs, labels = _check(probs, labels)
    parts = _auc_parts(probs, labels)
    if not parts:
        return float("nan"), "no AUC: the labels hold fewer than two classes"
    auc = float(np.mean([a for a, _, _ in parts]))
    if auc in (0.0, 1.0):
        return float("nan"), f"AUC is {auc:g}: its variance is 0 and A (1 - A) / Var is undefined"
    # One part for two classes (Var = V_1); K one-vs-rest parts otherwise (Var = mean(V_c) / K).
    variance = float(np.mean([hanley_mcneil_variance(*part) for part in parts])) / len(parts)
    if variance <= 0.0:
        return float("nan"), "every one-vs-rest AUC is 0 or 1: the variance is 0"
    return auc * (1.0 - auc) / variance, ""


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
        **dict(zip(("auc_n", "auc_n_note"), auc_trials(probs, labels), strict=True)),
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


# --- feature-set distances (generator diagnostics) ------------------------------------------------------

CHUNK_ROWS = 2048  # rows of a distance block: 2048 x 10,000 float64 is 160 MB at most


def _pair(a: np.ndarray, b: np.ndarray, least: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) feature arrays of one width, got {a.shape} and {b.shape}")
    if len(a) < least or len(b) < least:
        raise ValueError(f"need at least {least} rows per set, got {len(a)} and {len(b)}")
    return a, b


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) squared Euclidean distances |a_i|^2 + |b_j|^2 - 2 a_i.b_j: one matrix product, clipped at 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _chunks(n: int):
    return (slice(i, min(i + CHUNK_ROWS, n)) for i in range(0, n, CHUNK_ROWS))


def kth_neighbour_distance(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from every row of `x` to its k-th nearest other row (the radius of its k-NN ball)."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= k < len(x):
        raise ValueError(f"k = {k} nearest neighbours need more than k rows, got {len(x)}")
    out = np.empty(len(x))
    for rows in _chunks(len(x)):
        d = squared_distances(x[rows], x)
        d[np.arange(d.shape[0]), np.arange(rows.start, rows.stop)] = np.inf  # not its own neighbour
        out[rows] = np.sqrt(np.partition(d, k - 1, axis=1)[:, k - 1])
    return out


def _ball_counts(centres: np.ndarray, radii: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every point, how many balls B(centre_i, radius_i) hold it (strictly inside); for every ball, whether
    any point lies in it."""
    inside_per_point = np.zeros(len(points), dtype=np.int64)
    ball_hit = np.zeros(len(centres), dtype=bool)
    for rows in _chunks(len(centres)):
        inside = np.sqrt(squared_distances(centres[rows], points)) < radii[rows, None]
        inside_per_point += inside.sum(0)
        ball_hit[rows] = inside.any(1)
    return inside_per_point, ball_hit


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the real manifold is the union of balls around
    the real points reaching their k-th nearest real neighbour; precision is the share of fake points inside
    it, recall the share of real points inside the fake manifold built the same way. Mode dropping lowers
    recall; off-manifold samples lower precision. k = 3 as in the paper."""
    real, fake = _pair(real, fake, least=k + 1)
    in_real, _ = _ball_counts(real, kth_neighbour_distance(real, k), fake)
    in_fake, _ = _ball_counts(fake, kth_neighbour_distance(fake, k), real)
    return float(np.mean(in_real > 0)), float(np.mean(in_fake > 0))


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), built on real k-NN balls only (robust to fake outliers):
    density = (1 / kM) sum_j #{real balls holding fake j} (about 1 for matching distributions, above 1 when
    fakes crowd the real modes); coverage = share of real balls holding at least one fake. k = 5 as the paper
    recommends."""
    real, fake = _pair(real, fake, least=k + 1)
    counts, hit = _ball_counts(real, kth_neighbour_distance(real, k), fake)
    return float(counts.sum() / (k * len(fake))), float(hit.mean())


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kernel_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Kernel distance: the unbiased estimate of MMD^2 between two feature sets with KID's cubic polynomial
    kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018), on all rows at once (no subsets):

        KD = sum_{i!=j} k(a_i, a_j) / (n(n-1)) + sum_{i!=j} k(b_i, b_j) / (m(m-1)) - 2 sum_{i,j} k(a_i, b_j) / (nm)

    and its standard error from the first-order (Hoeffding) variance of this two-sample U-statistic,
    se^2 = 4 Var(g_a) / n + 4 Var(g_b) / m with g_a(x) = mean k(x, a) - mean k(x, b) and g_b alike (Serfling
    1980, 5.5). It can be slightly negative when the sets match; at a match the first-order term vanishes and
    the se understates the (second-order, O(1/n)) noise. For equal sizes it equals torchmetrics' KID with one
    subset of every row."""
    a, b = _pair(a, b, least=2)
    n, m = len(a), len(b)
    kaa, kbb, kab = _polynomial_kernel(a, a), _polynomial_kernel(b, b), _polynomial_kernel(a, b)
    np.fill_diagonal(kaa, 0.0)
    np.fill_diagonal(kbb, 0.0)
    kd = kaa.sum() / (n * (n - 1)) + kbb.sum() / (m * (m - 1)) - 2.0 * kab.sum() / (n * m)
    g_a = kaa.sum(1) / (n - 1) - kab.mean(1)
    g_b = kbb.sum(1) / (m - 1) - kab.mean(0)
    se = np.sqrt(4.0 * g_a.var(ddof=1) / n + 4.0 * g_b.var(ddof=1) / m)
    return float(kd), float(se)
