import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from study import verification as v


def _pairs(n_pos: int, n_neg: int, shift: float = 1.5, seed: int = 0):
    """Fixed scores: same-identity pairs score higher on average (a separation of `shift` sd)."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)])
    same = np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])
    return scores, same


def test_columns_are_named_as_the_table_expects():
    assert v.TAR_COLUMNS == ("tar_at_far_1e-1", "tar_at_far_1e-2", "tar_at_far_1e-3")
    assert v.METRIC_COLUMNS[:3] == ("verif_auc", "verif_eer", "verif_acc")


def test_tar_at_far_and_eer_match_roc_curve_by_hand():
    scores, same = _pairs(300, 2000)
    m = v.verification_metrics(scores, same, n_boot=0)
    far, tar, thr = roc_curve(same, scores)
    assert m["verif_auc"] == pytest.approx(roc_auc_score(same, scores))
    neg = np.sort(scores[~same])[::-1]
    for target, column in zip(v.FARS, v.TAR_COLUMNS, strict=True):
        # by hand: the threshold is the k-th highest negative with k = floor(target * n_neg) negatives at or above
        k = int(math.floor(target * len(neg) + 1e-9))
        t = neg[k] if k < len(neg) else -np.inf  # strictly above the (k+1)-th highest negative
        expected = np.mean(scores[same] > t)
        assert m[column] == pytest.approx(expected)
        assert m[column] == pytest.approx(tar[far <= target].max())  # and scikit-learn's ROC agrees
    # EER: where the interpolated FAR and 1 - TAR cross; check against roc_curve with np.interp
    grid = np.linspace(0, 1, 200001)
    frr = 1 - np.interp(grid, far, tar)
    assert m["verif_eer"] == pytest.approx(grid[np.argmin(np.abs(frr - grid))], abs=1e-4)


def test_known_answers_on_tiny_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    same = np.array([1, 1, 0, 1, 0, 0], bool)
    m = v.verification_metrics(scores, same, folds=np.array([0, 1, 0, 1, 0, 1]), n_boot=0)
    assert m["verif_auc"] == pytest.approx(8 / 9)  # 8 of the 9 (positive, negative) pairs are ordered right
    assert m["far_resolution"] == pytest.approx(1 / 3)
    assert math.isnan(m["tar_at_far_1e-1"])  # 0.1 < 1/3: not measurable with 3 negatives
    # ROC corners (0, 2/3) -> (1/3, 1): tar(x) = 2/3 + x on the segment, so 1 - x = tar(x) at x = 1/6
    assert m["verif_eer"] == pytest.approx(1 / 6)


def test_far_below_resolution_is_not_measurable():
    scores, same = _pairs(500, 500)
    m = v.verification_metrics(scores, same, n_boot=20)
    assert m["far_resolution"] == pytest.approx(1 / 500)
    assert not math.isnan(m["tar_at_far_1e-2"])
    assert math.isnan(m["tar_at_far_1e-3"]) and math.isnan(m["tar_at_far_1e-3_n"])
    assert m["roc"]["far"][0] == pytest.approx(1 / 500)


def test_pair_accuracy_uses_held_out_thresholds():
    scores, same = _pairs(300, 300, shift=2.0)
    folds = np.arange(600) % 10
    acc = v.pair_accuracy(scores, same, folds)
    assert len(acc["fold_acc"]) == 10 and acc["protocol"] == "10 given folds"
    for f, t in enumerate(acc["thresholds"]):
        test = folds == f
        assert acc["fold_acc"][f] == pytest.approx(np.mean((scores[test] >= t) == same[test]))
        # the threshold is the best on the other nine folds (no better cut exists there)
        train_scores, train_same = scores[~test], same[~test]
        best = max(np.mean((train_scores >= c) == train_same) for c in np.append(train_scores, np.inf))
        assert np.mean((train_scores >= t) == train_same) == pytest.approx(best)
    assert acc["acc"] == pytest.approx(np.mean(acc["fold_acc"]))
    assert acc["se"] == pytest.approx(np.std(acc["fold_acc"], ddof=1) / math.sqrt(10))
    # without folds: stratified random folds, the same every time
    drawn = v.pair_accuracy(scores, same, seed=3)
    assert drawn == v.pair_accuracy(scores, same, seed=3) and "random" in drawn["protocol"]
    folds = v.stratified_folds(same, 10, seed=3)
    assert all(((folds == f) & same).sum() == 30 for f in range(10))


def test_noise_model_effective_trials():
    scores, same = _pairs(1000, 1000)
    m = v.verification_metrics(scores, same, n_boot=200)
    assert m["verif_acc_n"] == 2000  # binomial over pairs
    for column in ("verif_auc", "verif_eer", "tar_at_far_1e-1"):
        value = 1 - m[column] if column == "verif_eer" else m[column]
        assert 1 <= m[f"{column}_n"] <= 2000
        assert m[f"{column}_n"] == pytest.approx(value * (1 - value) / m[f"{column}_se"] ** 2, rel=1e-6)
    # AUC (Hanley & McNeil 1982): var = [A(1-A) + (n1-1)(Q1-A^2) + (n2-1)(Q2-A^2)] / (n1 n2)
    a = m["verif_auc"]
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    hanley = (a * (1 - a) + 999 * (q1 - a * a) + 999 * (q2 - a * a)) / 1000**2
    assert m["verif_auc_se"] == pytest.approx(math.sqrt(hanley), rel=0.25)


def test_rank1_and_cosine_scores():
    gallery = np.array([[1.0, 0.0], [0.0, 2.0]])
    probes = np.array([[3.0, 0.1], [0.2, 1.0], [1.0, 0.9]])
    assert v.rank1(gallery, ["a", "b"], probes, ["a", "b", "b"]) == pytest.approx(2 / 3)
    scores = v.cosine_scores(np.array([[1.0, 0.0], [0.0, 5.0], [2.0, 2.0]]), np.array([[0, 1], [0, 2]]))
    assert scores == pytest.approx([0.0, math.sqrt(0.5)])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same- and different"):
        v.verification_metrics([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="not finite"):
        v.roc([0.1, np.nan], [True, False])


def test_analysis_metrics_are_the_table_columns():
    import pandas as pd

    from study.analysis.metric import MetricError, on_metric
    from study.grid import ANALYSIS_METRICS

    assert {m for m, spec in ANALYSIS_METRICS.items() if spec.verification} == set(v.METRIC_COLUMNS)
    cells = pd.DataFrame({"cell": ["a", "b"], "status": ["done", "failed"], "test_acc": [None, None],
                          "n_test": [None, None], "verif_eer": [0.25, None], "verif_eer_n": [812.4, None]})  # fmt: skip
    view = on_metric(cells, "verif_eer")
    assert view["test_acc"].iloc[0] == 0.75 and view["n_test"].iloc[0] == 812  # 1 - EER, whole trials
    assert view["metric"].iloc[0] == "verif_eer"
    with pytest.raises(MetricError, match="no column"):
        on_metric(cells, "verif_auc")
    cells.loc[0, "verif_eer"] = None
    with pytest.raises(MetricError, match="1 done cells have no verif_eer"):
        on_metric(cells, "verif_eer")
