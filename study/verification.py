"""Face verification metrics on pair scores (higher score = more likely the same identity): numpy, scipy and
scikit-learn, no torch (SCIENCE.md section 4).

    m = verification_metrics(scores, same, folds=folds, n_boot=200, seed=0)
    m["verif_auc"], m["verif_eer"], m["verif_acc"], m["tar_at_far_1e-2"], m["far_resolution"], m["roc"]
    m["verif_auc_n"]       # the effective number of binomial trials of verif_auc (its noise model, below)
    rank1(gallery, gallery_ids, probes, probe_ids)            # closed-set identification on embeddings

Conventions (they matter when comparing with published numbers):
- ROC: `far` (false accept rate) is the share of different-identity pairs with score >= t, `tar` (true accept
  rate) the share of same-identity pairs with score >= t, over every threshold t (scikit-learn's `roc_curve`,
  ties grouped). `verif_auc` is the area under it (the trapezoid rule over every point: `roc_auc_score`).
- EER: the rate where FAR = 1 - TAR on the ROC linearly interpolated between its points (the root of
  1 - x - tar(x), as FaceNet's evaluation computes it).
- TAR@FAR=f: the largest TAR among thresholds whose FAR <= f. Only FARs of k / n_negatives exist, so f is
  *not measurable* (NaN) when f < 1 / n_negatives: `far_resolution` = 1 / n_negatives says what is.
- Pair accuracy, the LFW protocol: with folds (LFW View 2: 10 identity-disjoint folds), the threshold that
  maximises accuracy on the other folds is applied to each fold; `verif_acc` is the mean over folds and
  `verif_acc_se` the standard error sigma / sqrt(folds) with sigma the sample standard deviation over folds
  (LFW's README; how the published numbers are given). Without folds (View 1, pairs built from a set of
  identities), the pairs are split into 10 folds at random, stratified by same/different, from `seed`: the
  threshold is still never chosen on the pairs it is scored on (pairs of one fold may share identities with
  others; one scalar threshold learns little from that).
- Rank-1: each probe embedding's nearest gallery embedding by cosine similarity has the probe's identity.

Noise model for the equivalence analysis (study.analysis): every metric M carries `M_n`, the number of
Bernoulli trials a binomial proportion with the same value and variance would have. For pair accuracy it is
the number of pairs (each pair is one trial). For AUC, TAR and 1 - EER it is p (1 - p) / Var(M), Var from a
bootstrap over pairs (positives and negatives redrawn separately, so their counts stay fixed), capped at the
number of pairs and floored at 1. Pairs sharing images or identities are not independent, so both understate
the variance somewhat; the analysis adds the seed-to-seed scatter on top (its dispersion phi).

Cost: milliseconds for the metrics; the bootstrap is n_boot ROC computations (~1 s for 200 over 7000 pairs).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import auc, roc_curve

FARS = (1e-1, 1e-2, 1e-3)  # the TAR@FAR operating points reported per cell
FOLDS = 10  # LFW's protocol
N_BOOT = 200
ROC_POINTS = 60  # stored ROC: TAR on a log-spaced FAR grid from the resolution to 1


def far_column(far: float) -> str:
    """`tar_at_far_1e-2` for 0.01."""
    return f"tar_at_far_{far:.0e}".replace("e-0", "e-").replace("e+0", "e+")


TAR_COLUMNS = tuple(far_column(f) for f in FARS)
METRIC_COLUMNS = ("verif_auc", "verif_eer", "verif_acc", *TAR_COLUMNS)


def _check(scores, same) -> tuple[np.ndarray, np.ndarray]:
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same)
    if scores.ndim != 1 or same.shape != scores.shape:
        raise ValueError(f"expected scores (P,) and same (P,), got {scores.shape} and {same.shape}")
    if same.dtype != bool:
        if not np.isin(same, (0, 1)).all():
            raise ValueError("same: expected booleans (or 0/1): True for a same-identity pair")
        same = same.astype(bool)
    if not np.isfinite(scores).all():
        raise ValueError(f"scores: {int((~np.isfinite(scores)).sum())} of {len(scores)} are not finite")
    if same.all() or not same.any():
        raise ValueError(f"need same- and different-identity pairs, got {int(same.sum())} and {int((~same).sum())}")
    return scores, same


def roc(scores, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds) at every distinct threshold, from the strictest (far = 0) to the loosest."""
    scores, same = _check(scores, same)
    far, tar, thresholds = roc_curve(same, scores, drop_intermediate=False)
    return far, tar, thresholds


def equal_error_rate(far: np.ndarray, tar: np.ndarray) -> float:
    """The x where x = 1 - tar(x) on the linearly interpolated ROC (FAR = FRR)."""
    # roc_curve's far is non-decreasing and may repeat; interp1d needs a function, so keep the best tar per far.
    x, idx = np.unique(far, return_index=True)
    y = np.maximum.reduceat(tar, idx)
    if len(x) == 1:  # every negative scores alike: FAR jumps from 0 to 1
        return 0.5
    curve = interp1d(x, y)
    return float(brentq(lambda v: 1.0 - v - curve(v), 0.0, 1.0))


def tar_at_far(far: np.ndarray, tar: np.ndarray, target: float, n_negatives: int) -> float:
    """The largest TAR at a threshold with FAR <= target; NaN when target < 1 / n_negatives (not measurable)."""
    if target < 1.0 / n_negatives:
        return math.nan
    return float(tar[far <= target + 1e-12].max())


def _fold_thresholds(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold maximising accuracy of `score >= t` on these pairs: the midpoint after the best cut in
    sorted order (the first best; +-inf beyond the ends)."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    # Cut c puts pairs 0..c-1 below the threshold (called different): correct = negatives below + positives above.
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    pos_above = y.sum() - np.concatenate([[0], np.cumsum(y)])
    correct = neg_below + pos_above
    distinct = np.concatenate([[True], s[1:] != s[:-1], [True]])  # cuts between equal scores are not cuts
    correct = np.where(distinct, correct, -1)
    c = int(np.argmax(correct))
    if c == 0:
        return -math.inf
    if c == len(s):
        return math.inf
    return float((s[c - 1] + s[c]) / 2)


def stratified_folds(same, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Fold index per pair: same and different pairs each dealt round-robin over `folds` in a seeded order."""
    same = np.asarray(same, dtype=bool)
    out = np.empty(len(same), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for group in (np.flatnonzero(same), np.flatnonzero(~same)):
        out[rng.permutation(group)] = np.arange(len(group)) % folds
    return out


def pair_accuracy(scores, same, folds=None, seed: int = 0) -> dict:
    """The LFW protocol (module docstring): `acc` (mean over folds), `se` (sigma / sqrt(folds)), `std`, per-fold
    accuracies and thresholds; `protocol` says whether the folds were given or drawn."""
    scores, same = _check(scores, same)
    given = folds is not None
    folds = np.asarray(folds) if given else stratified_folds(same, FOLDS, seed)
    if folds.shape != scores.shape:
        raise ValueError(f"folds: expected one fold index per pair ({scores.shape}), got {folds.shape}")
    ids = np.unique(folds)
    if len(ids) < 2:
        raise ValueError(f"folds: need at least 2 folds for a held-out threshold, got {len(ids)}")
    accs, thresholds = [], []
    for f in ids:
        test = folds == f
        t = _fold_thresholds(scores[~test], same[~test])
        thresholds.append(t)
        accs.append(float(np.mean((scores[test] >= t) == same[test])))
    accs = np.asarray(accs)
    std = float(accs.std(ddof=1))
    return {
        "acc": float(accs.mean()),
        "se": std / math.sqrt(len(accs)),
        "std": std,
        "fold_acc": accs.tolist(),
        "thresholds": thresholds,
        "protocol": f"{len(ids)} given folds" if given else f"{len(ids)} stratified random folds",
    }


def _point_metrics(scores: np.ndarray, same: np.ndarray, n_negatives: int) -> dict:
    far, tar, _ = roc_curve(same, scores, drop_intermediate=False)
    # The trapezoid under the full ROC (ties grouped) is roc_auc_score, without computing the curve twice.
    out = {"verif_auc": float(auc(far, tar)), "verif_eer": equal_error_rate(far, tar)}
    for f, column in zip(FARS, TAR_COLUMNS, strict=True):
        out[column] = tar_at_far(far, tar, f, n_negatives)
    return out


def effective_trials(value: float, variance: float, cap: int) -> float:
    """p (1 - p) / Var: the binomial trials with the same variance at this proportion; in [1, cap]."""
    if not math.isfinite(value):
        return math.nan
    spread = value * (1.0 - value)
    if variance <= 0 or spread <= 0:
        return float(cap)
    return float(min(cap, max(1.0, spread / variance)))


def bootstrap(scores, same, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, np.ndarray]:
    """AUC, EER and TAR@FAR recomputed on `n_boot` redraws of the pairs (positives and negatives separately)."""
    scores, same = _check(scores, same)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(same), np.flatnonzero(~same)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for k, v in _point_metrics(scores[idx], same[idx], len(neg)).items():
            draws.setdefault(k, []).append(v)
    return {k: np.asarray(v) for k, v in draws.items()}


def roc_points(far: np.ndarray, tar: np.ndarray, n_negatives: int, points: int = ROC_POINTS) -> dict:
    """TAR at log-spaced FARs from the resolution 1/n_negatives to 1 (the stored curve; a step function)."""
    grid = np.unique(np.geomspace(1.0 / n_negatives, 1.0, points))
    return {"far": grid.tolist(), "tar": [tar_at_far(far, tar, f, n_negatives) for f in grid]}


def verification_metrics(scores, same, folds=None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Every verification metric of one set of pair scores, their noise model (`<metric>_n`), the pair counts,
    the FAR resolution and the stored ROC (module docstring)."""
    scores, same = _check(scores, same)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    point = _point_metrics(scores, same, n_neg)
    acc = pair_accuracy(scores, same, folds, seed)
    out = {**point, "verif_acc": acc["acc"], "verif_acc_se": acc["se"], "verif_acc_std": acc["std"],
           "verif_acc_n": float(len(scores)), "verif_protocol": acc["protocol"], "verif_fold_acc": acc["fold_acc"],
           "n_pairs": len(scores), "n_same": n_pos, "n_different": n_neg,
           "far_resolution": 1.0 / n_neg}  # fmt: skip
    draws = bootstrap(scores, same, n_boot, seed) if n_boot else {}
    for k, v in point.items():
        complement = k == "verif_eer"  # 1 - EER is the proportion the analysis models
        value = 1.0 - v if complement else v
        finite = draws.get(k, np.array([]))
        finite = finite[np.isfinite(finite)]
        var = float(finite.var(ddof=1)) if len(finite) > 1 else math.nan
        out[f"{k}_se"] = math.sqrt(var) if math.isfinite(var) else math.nan
        out[f"{k}_n"] = effective_trials(value, var, len(scores)) if math.isfinite(var) else math.nan
    far, tar, _ = roc_curve(same, scores, drop_intermediate=False)
    out["roc"] = roc_points(far, tar, n_neg)
    out["n_boot"] = n_boot
    return out


def rank1(gallery, gallery_ids, probes, probe_ids) -> float:
    """Share of probes whose most cosine-similar gallery embedding has their identity."""
    gallery, probes = np.asarray(gallery, dtype=np.float64), np.asarray(probes, dtype=np.float64)
    gallery_ids, probe_ids = np.asarray(gallery_ids), np.asarray(probe_ids)
    if gallery.ndim != 2 or probes.ndim != 2 or gallery.shape[1] != probes.shape[1]:
        raise ValueError(f"expected (G, D) gallery and (Q, D) probe embeddings, got {gallery.shape}, {probes.shape}")
    if len(gallery) != len(gallery_ids) or len(probes) != len(probe_ids) or not len(probes):
        raise ValueError("rank1: one identity per embedding and at least one probe")
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True).clip(1e-12)
    p = probes / np.linalg.norm(probes, axis=1, keepdims=True).clip(1e-12)
    return float(np.mean(gallery_ids[np.argmax(p @ g.T, axis=1)] == probe_ids))


def cosine_scores(embeddings, pairs) -> np.ndarray:
    """Cosine similarity of the two embeddings of every pair (rows of `pairs` index `embeddings`)."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True).clip(1e-12)
    pairs = np.asarray(pairs)
    return np.einsum("pd,pd->p", e[pairs[:, 0]], e[pairs[:, 1]])
