"""Class pairs for condition and score mixing (AugGen, ScoreMix), AugGen's alpha/beta search, and linear CKA.

    space = class_space(lambda x: features(clf, x), base.images, base.labels, num_classes)
    pairs = select_pairs("far", num_classes, n_pairs=10, seed=s, distances=cosine_distances(space.centroids))
    found = search_alpha_beta(draw, space, pairs[:4], search_grid(0.1), search_grid(0.1), images=8)
    linear_cka(gen.table[:num_classes], space.centroids)    # generator/classifier alignment (ScoreMix: ~0.35)

A pair (i, j) is ordered: class i is the first source, the dominant one at equal weights (ScoreMix's lambda
weighs eps_i, AugGen's alpha weighs E[i]). Every rule orients its pairs by a seeded coin, so no class is the
dominant source more often by construction. Distances are cosine distances (1 - cos), as faces are compared:
class centroids of the base classifier's penultimate features (`far`, `near`; Rahimi & Marcel's "class
centres") or rows of the generator's class-embedding table (`far-condition`, `near-condition`).

AugGen's search (Rahimi et al. 2025) is not published in code; our reading of "the mixed class's dissimilarity
to both source classes plus its intra-class similarity", on unit-normalised classifier features u_k of the m
mixed samples of a pair, is

    score(alpha, beta) = mean_{k != l} u_k . u_l  +  1 - max(mean_k cos(u_k, c_i), mean_k cos(u_k, c_j))

("both": a mix that stays one of its sources scores low however consistent it is), in the space centred at the
mean class centroid (`ClassSpace`), averaged over the search pairs, maximised over the grid (ties: the first
in alpha-major order). Every grid point reuses the same per-sample seeds, so points differ only by their
mixing weights (common random numbers).
Cost: grid points x pairs x images samples (121 x 4 x 8 = 3872 by default: ~20 s for the tiny digits preset
on one core). Needs numpy and scikit-learn, not torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics.pairwise import cosine_distances
from sklearn.preprocessing import normalize

from study.grid import SEARCH_RANGE, PairRule

__all__ = [
    "ClassSpace",
    "class_space",
    "cosine_distances",
    "linear_cka",
    "max_pairs",
    "mixing_score",
    "pair_counts",
    "search_alpha_beta",
    "search_grid",
    "select_pairs",
]


@dataclass(frozen=True)
class ClassSpace:
    """A classifier's embedding space, centred at the mean of its class centroids: penultimate features after a
    ReLU are all non-negative, which squeezes raw cosines towards 1; around the classes' centre, cosines compare
    directions between classes (face embeddings are compared the same way, on features centred by training)."""

    features: Callable  # uint8 images (N, C, H, W) -> (N, F) numpy features
    centre: np.ndarray  # (F,) the mean class centroid
    centroids: np.ndarray  # (K, F) class centroids of the real training images, centred

    def embed(self, images) -> np.ndarray:
        return np.asarray(self.features(images), dtype=np.float64) - self.centre


def class_space(features: Callable, images, labels, num_classes: int) -> ClassSpace:
    """The space of `features` with the class centroids of (images, labels); every class needs an image."""
    feats = np.asarray(features(images), dtype=np.float64)
    y = np.asarray(labels)
    missing = sorted(set(range(num_classes)) - set(y.tolist()))
    if missing:
        raise ValueError(f"class centroids: no image of class(es) {missing} among the {len(y)} given")
    centroids = np.stack([feats[y == c].mean(0) for c in range(num_classes)])
    centre = centroids.mean(0)
    return ClassSpace(features, centre, centroids - centre)


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same n items, rows of x (n, p)
    and y (n, q): ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) after centring the columns. 1 = equal up to rotation
    and scale; invariant to either."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"linear CKA needs two (n, features) arrays with the same n >= 2, got {x.shape}, {y.shape}")
    x, y = x - x.mean(0), y - y.mean(0)
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if denominator == 0:
        raise ValueError("linear CKA is undefined: a representation is constant over the items")
    return float(np.linalg.norm(y.T @ x) ** 2 / denominator)


# --- pairs ---------------------------------------------------------------------------------------------


def max_pairs(num_classes: int) -> int:
    return num_classes * (num_classes - 1) // 2


def select_pairs(
    rule: PairRule, num_classes: int, n_pairs: int, seed: int, distances: np.ndarray | None = None
) -> np.ndarray:
    """(n_pairs, 2) distinct class pairs: `random`, or the `far`-thest / `near`-est by `distances` (K, K), for
    both the classifier and the condition variants. Each pair is oriented by a seeded coin."""
    everything = np.array(list(itertools.combinations(range(num_classes), 2)), dtype=np.int64).reshape(-1, 2)
    if not 1 <= n_pairs <= len(everything):
        raise ValueError(
            f"sample.n_pairs: {n_pairs} pairs asked for, but {num_classes} classes give "
            f"{len(everything)} distinct pairs (at least 1 and at most {len(everything)})"
        )
    rng = np.random.default_rng(seed)
    if rule == "random":
        order = rng.permutation(len(everything))
    elif rule in ("far", "near", "far-condition", "near-condition"):
        if distances is None or np.shape(distances) != (num_classes, num_classes):
            raise ValueError(f"sample.pairs: {rule!r} needs a ({num_classes}, {num_classes}) distance matrix")
        d = np.asarray(distances)[everything[:, 0], everything[:, 1]]
        order = np.argsort(-d if rule.startswith("far") else d, kind="stable")  # ties: the lower class indices
    else:
        raise ValueError(
            f"sample.pairs: unknown rule {rule!r}; expected random, far, near, far-condition, near-condition"
        )
    chosen = everything[order[:n_pairs]].copy()
    flip = rng.random(n_pairs) < 0.5
    chosen[flip] = chosen[flip][:, ::-1]
    return chosen


def pair_counts(total: int, n_pairs: int) -> np.ndarray:
    """Images per pair when `total` images are spread over `n_pairs`: the first total % n_pairs pairs get one
    more. Every pair's count only grows with `total`, so a smaller set is a prefix of each pair's images."""
    return total // n_pairs + (np.arange(n_pairs) < total % n_pairs).astype(np.int64)


# --- AugGen's alpha/beta search ------------------------------------------------------------------------


def search_grid(step: float) -> np.ndarray:
    """The grid over AugGen's range [0.1, 1.1] with spacing `step` (0.1: the paper's 11 values)."""
    lo, hi = SEARCH_RANGE
    return np.round(np.arange(lo, hi + step / 2, step), 6)


def mixing_score(features: np.ndarray, centroid_i: np.ndarray, centroid_j: np.ndarray) -> float:
    """Intra-class similarity of one mixed class plus its dissimilarity to the nearer of its two sources
    (module docstring); features and centroids in the same (centred) space."""
    u = normalize(np.asarray(features, dtype=np.float64))
    m = len(u)
    if m < 2:
        raise ValueError("mixing score: needs at least 2 samples of the mixed class")
    gram = u @ u.T
    intra = (gram.sum() - np.trace(gram)) / (m * (m - 1))
    c = normalize(np.stack([centroid_i, centroid_j]).astype(np.float64))
    return float(intra + 1.0 - (u @ c.T).mean(0).max())


def search_alpha_beta(draw: Callable, space: ClassSpace, pairs: np.ndarray, alphas, betas, images: int) -> dict:
    """Score every (alpha, beta) of the grid `alphas` x `betas` on `images` mixed samples of each pair and return
    the best with the whole grid. `draw(alpha, beta, pair_index, image_index)` (arrays of one length) returns
    uint8 images; the image of (pair p, image k) must take its seed from (p, k) alone."""
    pairs = np.asarray(pairs)
    points = [(float(a), float(b)) for a in alphas for b in betas]
    per_point = len(pairs) * images
    pair_index = np.tile(np.repeat(np.arange(len(pairs)), images), len(points))
    image_index = np.tile(np.arange(images), len(pairs) * len(points))
    alpha = np.repeat([a for a, _ in points], per_point)
    beta = np.repeat([b for _, b in points], per_point)
    feats = space.embed(draw(alpha, beta, pair_index, image_index))
    scores = []
    for n, _ in enumerate(points):
        block = feats[n * per_point : (n + 1) * per_point].reshape(len(pairs), images, -1)
        scores.append(np.mean([mixing_score(f, *space.centroids[p]) for f, p in zip(block, pairs, strict=True)]))
    best = int(np.argmax(scores))
    return {
        "alpha": points[best][0],
        "beta": points[best][1],
        "score": float(scores[best]),
        "pairs": pairs.tolist(),
        "images_per_pair": images,
        "grid": [[a, b, float(s)] for (a, b), s in zip(points, scores, strict=True)],
    }
