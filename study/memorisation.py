"""Memorisation and redundancy of a synthetic set against real images, by nearest neighbours. Numpy only.

    m = memorisation(samples, sample_classes, seen, seen_labels, unseen, unseen_labels)
    m["mem_frac"], m["mem_ratio"], m["nearest"]          # near-copy share, distance ratio, nearest seen image
    data_copying(samples, sample_classes, train, train_labels, val, val_labels)   # a generator vs its own pool

`seen` are the real images the question is about: the base set (the closed-set generator's training set, and
what the classifier already has), or a pool-trained generator's training set. `unseen` are real images of the
same classes it did not see (training images outside the base; a generator's never-seen validation split).
Each sample is compared with the images of its own class only (a mixed sample: of its two source classes).

- **Near-copy test** (`mem_frac`): sample x is a near-copy when d1 / d2 < 1/3, d1 and d2 its distances to the
  nearest and second-nearest seen image. The threshold is Gu et al. (TMLR 2025, "On Memorization in Diffusion
  Models", following Yoon et al. 2023): a sample three times closer to one training image than to any other
  reproduces that image rather than interpolating between images. It needs two seen images per class.
  `mem_frac_unseen` applies the same test to unseen images, in blocks of the seen size: the rate at which
  the test fires on images the generator never saw (its false-positive floor at this reference size).
- **Distance ratio** (`mem_ratio`): median over samples of the nearest-seen distance over the median of the
  nearest-unseen distance. A nearest-neighbour distance shrinks as the reference set grows, so both are taken
  against blocks of the same size (consecutive slices of each class's images, the larger side cut into up to
  `blocks` slices): real images from the samples' distribution score about 1; copies of the seen images far
  below 1; samples far from everything real about 1 as well (the distances are large on both sides).

Distances are Euclidean, computed as batched matrix products (study.metrics.squared_distances), in whatever
space the rows live in: flattened pixels in [0, 1], or a classifier's features. Cost: O(N x seen x D).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from study.metrics import squared_distances

NEAR_COPY_RATIO = 1 / 3  # d1 / d2 below this: a near-copy (Gu et al. 2025; Yoon et al. 2023)
MAX_BLOCKS = 8  # equal-size reference blocks averaged for the distance ratio


def nearest_two(queries: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest row of `refs` (inf when there is one) and the nearest's index."""
    d = squared_distances(queries, refs)
    if refs.shape[0] == 1:
        return np.sqrt(d[:, 0]), np.full(len(d), np.inf), np.zeros(len(d), dtype=np.int64)
    part = np.argpartition(d, 1, axis=1)[:, :2]
    two = np.take_along_axis(d, part, axis=1)
    order = np.argsort(two, axis=1)
    first = np.take_along_axis(part, order[:, :1], axis=1)[:, 0]
    two = np.sqrt(np.take_along_axis(two, order, axis=1))
    return two[:, 0], two[:, 1], first


def _blocks(rows: np.ndarray, size: int, limit: int) -> list[np.ndarray]:
    """Up to `limit` consecutive slices of `size` rows (the order is the caller's: a seed's fixed order)."""
    return [rows[i : i + size] for i in range(0, len(rows) - size + 1, size)][:limit]


def _classes_of(sample_classes) -> list[tuple[int, ...]]:
    if isinstance(sample_classes, list) and sample_classes and isinstance(sample_classes[0], tuple):
        return [tuple(sorted({int(c) for c in k})) for k in sample_classes]
    arr = np.asarray(sample_classes)
    return [(int(c),) for c in arr] if arr.ndim == 1 else [tuple(sorted({int(c) for c in row})) for row in arr]


def memorisation(
    samples: np.ndarray,
    sample_classes: Sequence,
    seen: np.ndarray,
    seen_labels: np.ndarray,
    unseen: np.ndarray,
    unseen_labels: np.ndarray,
    ratio: float = NEAR_COPY_RATIO,
    blocks: int = MAX_BLOCKS,
) -> dict:
    """Near-copy share and distance ratio of `samples` (N, D) against `seen` and `unseen` real rows (see the
    module docstring). `sample_classes` is (N,) classes, or (N, 2) source classes of mixed samples.

    Returns mem_frac, mem_ratio, mem_frac_unseen, the median distances (d_seen, d_unseen), per_class values
    (for single-class samples), and per sample: `nearest` (index into `seen` of its nearest seen image, -1 when
    its classes have none) and `d_nearest`."""
    # Rows are cast to float64 per class, inside the distance products: a whole pool never is.
    samples, seen, unseen = (np.asarray(x).reshape(len(x), -1) for x in (samples, seen, unseen))
    seen_labels, unseen_labels = np.asarray(seen_labels), np.asarray(unseen_labels)
    keys = _classes_of(sample_classes)
    if len(keys) != len(samples):
        raise ValueError(f"need one class (or class pair) per sample, got {len(keys)} for {len(samples)} samples")
    n = len(samples)
    copy = np.full(n, np.nan)  # 1.0 near-copy, 0.0 not, NaN untestable (fewer than two seen images)
    nearest, d_nearest = np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
    d_seen_blocks, d_unseen, copy_unseen = [], [], []  # per class: (n, blocks) matrices, NaN outside the class
    for key in dict.fromkeys(keys):
        rows = np.flatnonzero([k == key for k in keys])
        s_idx = np.flatnonzero(np.isin(seen_labels, key))
        u_idx = np.flatnonzero(np.isin(unseen_labels, key))
        if len(s_idx) == 0:
            continue
        d1, d2, first = nearest_two(samples[rows], seen[s_idx])
        nearest[rows], d_nearest[rows] = s_idx[first], d1
        if len(s_idx) >= 2:
            copy[rows] = (d1 < ratio * d2).astype(float)
        if len(u_idx) == 0:
            continue
        # The distance ratio and the unseen test on equal-size blocks of seen and unseen images.
        size = min(len(s_idx), len(u_idx))
        for block in _blocks(s_idx, size, blocks):
            b1, _, _ = nearest_two(samples[rows], seen[block])
            col = np.full(n, np.nan)
            col[rows] = b1
            d_seen_blocks.append(col)
        for block in _blocks(u_idx, size, blocks):
            u1, u2, _ = nearest_two(samples[rows], unseen[block])
            col, test = np.full(n, np.nan), np.full(n, np.nan)
            col[rows] = u1
            if size >= 2:
                test[rows] = (u1 < ratio * u2).astype(float)
            d_unseen.append(col)
            copy_unseen.append(test)
    seen_mat, unseen_mat, unseen_test = (_stack(parts, n) for parts in (d_seen_blocks, d_unseen, copy_unseen))
    out = _summary(copy, seen_mat, unseen_mat, unseen_test)
    single = all(len(k) == 1 for k in keys)
    if single:
        classes = np.array([k[0] for k in keys])
        out["per_class"] = {
            str(c): _summary(
                copy[classes == c], seen_mat[classes == c], unseen_mat[classes == c], unseen_test[classes == c]
            )  # fmt: skip
            for c in np.unique(classes)
        }
    out["nearest"], out["d_nearest"] = nearest, d_nearest
    return out


def _stack(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Per-block columns (NaN outside the block's class) side by side: (n, blocks)."""
    return np.column_stack(parts) if parts else np.full((n, 0), np.nan)


def _nanmedian(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if len(x) else float("nan")


def _summary(copy: np.ndarray, seen_blocks: np.ndarray, unseen_blocks: np.ndarray, unseen_test: np.ndarray) -> dict:
    d_seen, d_unseen = _nanmedian(seen_blocks.ravel()), _nanmedian(unseen_blocks.ravel())
    ratio = d_seen / d_unseen if np.isfinite(d_seen) and d_unseen > 0 else float("nan")
    return {
        "mem_frac": _nanmean(copy),
        "mem_ratio": ratio,
        "mem_frac_unseen": _nanmean(unseen_test.ravel()),
        "d_seen": d_seen,
        "d_unseen": d_unseen,
        "n": int(np.isfinite(copy).sum()),
    }


def data_copying(
    samples: np.ndarray,
    sample_classes: Sequence,
    train: np.ndarray,
    train_labels: np.ndarray,
    held_out: np.ndarray,
    held_out_labels: np.ndarray,
    ratio: float = NEAR_COPY_RATIO,
) -> dict:
    """Memorisation of a generator's own (large) training set, judged by images it never saw (a val split): the
    near-copy test against the whole training set of the sample's class (`mem_frac`), and the median nearest-
    training-image distance of the samples over that of the held-out images, against the same training set
    (`mem_ratio`: the data-copying comparison of Meehan et al. 2020, as a ratio of medians; about 1 when the
    samples are as far from the training set as new real images, far below 1 for copies). `mem_frac_unseen`:
    how often the test fires on the held-out images themselves."""
    samples, train, held_out = (np.asarray(x).reshape(len(x), -1) for x in (samples, train, held_out))
    train_labels, held_out_labels = np.asarray(train_labels), np.asarray(held_out_labels)
    keys = _classes_of(sample_classes)

    def against_train(rows_of, queries, n):
        d1_all, copy = np.full(n, np.nan), np.full(n, np.nan)
        for key, rows in rows_of.items():
            t_idx = np.flatnonzero(np.isin(train_labels, key))
            if len(t_idx) == 0:
                continue
            d1, d2, _ = nearest_two(queries[rows], train[t_idx])
            d1_all[rows] = d1
            if len(t_idx) >= 2:
                copy[rows] = (d1 < ratio * d2).astype(float)
        return d1_all, copy

    by_key = {k: np.flatnonzero([x == k for x in keys]) for k in dict.fromkeys(keys)}
    d_samples, copy = against_train(by_key, samples, len(samples))
    by_class = {(int(c),): np.flatnonzero(held_out_labels == c) for c in np.unique(held_out_labels)}
    d_held, copy_held = against_train(by_class, held_out, len(held_out))
    d_seen, d_unseen = _nanmedian(d_samples), _nanmedian(d_held)
    return {
        "mem_frac": _nanmean(copy),
        "mem_ratio": d_seen / d_unseen if np.isfinite(d_seen) and d_unseen > 0 else float("nan"),
        "mem_frac_unseen": _nanmean(copy_held),
        "d_seen": d_seen,
        "d_unseen": d_unseen,
    }
