from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, recall_score, roc_auc_score

from study import metrics


def _predictions(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, imperfect predictions: labels drawn at random, probabilities leaning towards the true class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, labels


@pytest.mark.parametrize("k", [2, 3, 10])
def test_metrics_match_scikit_learn(k):
    probs, labels = _predictions(400, k)
    pred = probs.argmax(1)
    m = metrics.classification_metrics(probs, labels, k)
    assert m["acc"] == pytest.approx(accuracy_score(labels, pred))
    assert m["bacc"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert m["nll"] == pytest.approx(log_loss(labels, probs, labels=list(range(k))))
    assert m["per_class_acc"] == pytest.approx(list(recall_score(labels, pred, average=None, labels=list(range(k)))))
    expected_auc = roc_auc_score(labels, probs[:, 1]) if k == 2 else roc_auc_score(labels, probs, multi_class="ovr")
    assert m["auc"] == pytest.approx(expected_auc)
    assert m["n"] == 400


def test_absent_class_is_left_out_like_scikit_learn():
    probs, labels = _predictions(300, 4, seed=1)
    keep = labels != 2  # class 2 never occurs in the labels but is still predicted sometimes
    probs, labels = probs[keep], labels[keep]
    m = metrics.classification_metrics(probs, labels, 4)
    assert m["per_class_acc"][2] is None
    with pytest.warns(UserWarning):  # scikit-learn warns about the predicted-but-absent class and ignores it
        assert m["bacc"] == pytest.approx(balanced_accuracy_score(labels, probs.argmax(1)))
    present = [c for c in range(4) if c != 2]
    assert m["auc"] == pytest.approx(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))


def test_ece_by_hand():
    # Two bins used: confidences 0.9 (bin (13/15, 14/15]) and 0.6 (bin (8/15, 9/15]).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1, 1, 0])
    # bin 0.9: accuracy 3/4, confidence 0.9 -> gap 0.15, weight 4/6; bin 0.6: accuracy 1/2 -> gap 0.1, weight 2/6
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.1)
    perfect = np.eye(3)[[0, 1, 2, 1]]
    assert metrics.expected_calibration_error(perfect, np.array([0, 1, 2, 1])) == pytest.approx(0.0)


def test_binary_auc_needs_both_classes():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert np.isnan(metrics.roc_auc(probs, np.array([1, 1])))


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (np.ones((3, 2)) / 2, np.array([0, 1]), r"probs \(N, K\) and labels \(N,\)"),
        (np.ones((2, 2)) / 2, np.array([0, 2]), r"labels must lie in 0..1"),
        (np.ones((0, 2)), np.array([], dtype=int), "no predictions"),
    ],
)
def test_bad_input_is_named(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        metrics.classification_metrics(probs, labels, probs.shape[1])


def test_num_classes_must_match_columns():
    with pytest.raises(ValueError, match="3 columns but num_classes is 2"):
        metrics.classification_metrics(np.ones((2, 3)) / 3, np.array([0, 1]), 2)


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # N(0, I) vs N(m, 4I) in 3-d: |m|^2 + 3 (1 + 4 - 2 * 2) = |m|^2 + 3
    b = 2.0 * rng.normal(size=(4000, 3)) + np.array([1.0, 2.0, 0.0])
    assert metrics.frechet_distance(a, b) == pytest.approx(5.0 + 3.0, rel=0.05)
    with pytest.raises(ValueError, match="one width"):
        metrics.frechet_distance(a, b[:, :2])


# --- test_auc's noise model: Hanley & McNeil's variance and the effective binomial trials ------------------


def _exponential_aucs(auc: float, n_pos: int, n_neg: int, draws: int, seed: int = 0) -> np.ndarray:
    """Mann-Whitney AUCs of `draws` samples of exponential scores: negatives Exp(1), positives Exp(rate mu) with
    mu = (1 - A) / A, so P(positive > negative) = 1 / (1 + mu) = A. For these scores Hanley & McNeil's
    Q1 = A / (2 - A) and Q2 = 2 A^2 / (1 + A) are exact, hence so is their variance."""
    rng = np.random.default_rng(seed)
    pos = rng.exponential(auc / (1.0 - auc), size=(draws, n_pos))  # numpy's scale is 1 / rate
    neg = rng.exponential(1.0, size=(draws, n_neg))
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg], axis=1), axis=1), axis=1) + 1  # continuous: no ties
    return (ranks[:, :n_pos].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@pytest.mark.parametrize(("auc", "n_pos", "n_neg"), [(0.75, 114, 42), (0.9, 50, 50), (0.6, 20, 200)])
def test_hanley_mcneil_variance_is_the_variance_of_simulated_aucs(auc, n_pos, n_neg):
    draws = _exponential_aucs(auc, n_pos, n_neg, draws=4000)
    assert draws.mean() == pytest.approx(auc, abs=0.005)
    # The sample variance of 4000 near-normal draws has a relative standard error of sqrt(2 / 4000) = 2.2%.
    assert draws.var(ddof=1) == pytest.approx(metrics.hanley_mcneil_variance(auc, n_pos, n_neg), rel=0.08)


def test_hanley_mcneil_variance_at_one_half_is_the_mann_whitney_null_variance():
    # Under no discrimination Var(U / n1 n2) = (n1 + n2 + 1) / (12 n1 n2) for any continuous scores.
    for n_pos, n_neg in [(42, 114), (1, 1), (7, 300)]:
        expected = (n_pos + n_neg + 1) / (12 * n_pos * n_neg)
        assert metrics.hanley_mcneil_variance(0.5, n_pos, n_neg) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        metrics.hanley_mcneil_variance(0.7, 0, 10)
    with pytest.raises(ValueError, match=r"lies in \[0, 1\]"):
        metrics.hanley_mcneil_variance(1.2, 5, 10)


def test_auc_trials_two_classes_count_class_one_as_the_positives():
    probs, labels = _predictions(156, 2, seed=3)
    labels[:40] = 0  # unbalanced, so swapping positives and negatives would change the variance
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    auc = roc_auc_score(labels, probs[:, 1])
    n, note = metrics.auc_trials(probs, labels)
    assert note == "" and n == pytest.approx(auc * (1 - auc) / metrics.hanley_mcneil_variance(auc, n_pos, n_neg))
    assert n != pytest.approx(auc * (1 - auc) / metrics.hanley_mcneil_variance(auc, n_neg, n_pos))
    m = metrics.classification_metrics(probs, labels, 2)
    assert m["auc_n"] == n and m["auc_n_note"] == ""


def test_auc_trials_several_classes_average_the_one_vs_rest_variances():
    probs, labels = _predictions(300, 4, seed=5)
    labels[labels == 2] = 3  # class 2 absent: left out of the mean AUC and of the variance
    present = [0, 1, 3]
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    variances = [metrics.hanley_mcneil_variance(a, int((labels == c).sum()), int((labels != c).sum()))
                 for a, c in zip(aucs, present, strict=True)]  # fmt: skip
    macro = np.mean(aucs)
    n, note = metrics.auc_trials(probs, labels)
    assert note == "" and n == pytest.approx(macro * (1 - macro) / (sum(variances) / 3**2))


def test_auc_trials_several_classes_do_not_understate_a_bootstrap_variance():
    """The independence approximation against a bootstrap over test images (class counts fixed, as the formula
    assumes) on Gaussian-logit predictions: 200 draws estimate a variance to ~10%; the formula is larger."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 60)
    logits = rng.normal(size=(300, 5)) + 1.5 * np.eye(5)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    auc = metrics.roc_auc(probs, labels)
    n, _ = metrics.auc_trials(probs, labels)
    by_class = [np.flatnonzero(labels == c) for c in range(5)]
    draws = []
    for _ in range(200):
        idx = np.concatenate([rng.choice(i, len(i)) for i in by_class])
        draws.append(metrics.roc_auc(probs[idx], labels[idx]))
    assert np.var(draws, ddof=1) < 1.15 * auc * (1 - auc) / n


def test_auc_trials_are_nan_with_the_reason_where_undefined():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    n, note = metrics.auc_trials(probs, np.array([0, 0, 1, 1]))  # perfect separation: A = 1, Var = 0
    assert np.isnan(n) and "AUC is 1" in note
    n, note = metrics.auc_trials(probs, np.array([1, 1, 0, 0]))  # A = 0
    assert np.isnan(n) and "AUC is 0" in note
    n, note = metrics.auc_trials(probs, np.array([1, 1, 1, 1]))  # one class alone: no AUC
    assert np.isnan(n) and "fewer than two classes" in note
    m = metrics.classification_metrics(probs, np.array([0, 0, 1, 1]), 2)
    assert np.isnan(m["auc_n"]) and m["auc"] == 1.0
    n, note = metrics.auc_trials(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2]))  # every one-vs-rest AUC 1
    assert np.isnan(n) and "AUC is 1" in note
    # 0 < A = 2/3 < 1, but every one-vs-rest AUC is 0 or 1 (classes 0 and 2 perfect, class 1 reversed): Var = 0
    n, note = metrics.auc_trials(np.array([[1, 0.5, 0], [0, 0, 0], [0, 0.5, 1.0]]), np.array([0, 1, 2]))
    assert np.isnan(n) and "every one-vs-rest AUC is 0 or 1" in note


# --- test_auc as the analysed metric (study.analysis.metric, the grid's analysis.metric) -----------------------


def test_on_metric_test_auc_is_the_proportion_with_its_trials():
    import pandas as pd

    from study.analysis.metric import on_metric

    # BreastMNIST's test split: 114 benign (class 1, the positives) and 42 malignant.
    trials = [0.75 * 0.25 / metrics.hanley_mcneil_variance(0.75, 114, 42),
              0.8 * 0.2 / metrics.hanley_mcneil_variance(0.8, 114, 42)]  # fmt: skip
    # By hand at A = 3/4: A (1 - A) = 3/16, Q1 - A^2 = A (1 - A)^2 / (2 - A) = 3/80, Q2 - A^2 = A^2 (1 - A) / (1 + A)
    # = 9/112, so n = (3/16) (114 x 42) / (3/16 + 113 x 3/80 + 41 x 9/112) = 116.29: fewer than test_acc's 156.
    by_hand = Fraction(3, 16) * 114 * 42 / (Fraction(3, 16) + 113 * Fraction(3, 80) + 41 * Fraction(9, 112))
    assert trials[0] == pytest.approx(float(by_hand), rel=1e-12) and 116.29 < trials[0] < 116.30
    cells = pd.DataFrame({"cell": ["a", "b", "c"], "status": ["done", "done", "failed"], "test_acc": [0.7, 0.8, None],
                          "n_test": [156, 156, None], "test_auc": [0.75, 0.8, None],
                          "test_auc_n": [*trials, None]})  # fmt: skip
    view = on_metric(cells, "test_auc")
    assert view["test_acc"].tolist()[:2] == [0.75, 0.8] and view["n_test"].tolist()[:2] == [116, round(trials[1])]
    assert (view["metric"] == "test_auc").all()


def test_on_metric_test_auc_names_the_cells_without_trials_and_how_to_rerun_them():
    import pandas as pd

    from study.analysis.metric import MetricError, on_metric
    from study.table import upgrade

    # A table written before test_auc_n existed: reading it adds the column empty (study.table.upgrade).
    old = pd.DataFrame({"cell": ["a", "b"], "status": ["done", "done"], "test_acc": [0.7, 0.8], "n_test": [156, 156],
                        "test_auc": [0.75, 0.8], "cell_key": ["c40a4ae7bb3257a7cc51", "9b48e598c769aa"]})  # fmt: skip
    cells = upgrade(old)
    cells.loc[0, "test_auc_n"] = 116.3  # a table mixing recomputed and cached cells
    with pytest.raises(MetricError) as err:
        on_metric(cells, "test_auc")
    message = str(err.value)
    assert "1 done cells have no test_auc or test_auc_n" in message
    assert "1 (e.g. b) were computed before the column test_auc_n existed" in message
    assert "RESULTS/store/classifier/*__<the first 12 characters of their cell_key> (e.g. *__9b48e598c769)" in message
    # Undefined trials give their own reasons, not the rerun advice.
    cells.loc[1, ["test_auc", "test_auc_n"]] = [1.0, None]
    with pytest.raises(MetricError, match=r"1 \(e\.g\. b\) have test_auc 0 or 1, whose Hanley-McNeil variance is 0"):
        on_metric(cells, "test_auc")
    cells.loc[1, "test_auc"] = None
    with pytest.raises(MetricError, match="have no test_auc .one class alone in the test split."):
        on_metric(cells, "test_auc")


def test_grid_accepts_test_auc_on_classification_datasets_only():
    from study.grid import GridError, validate_grid

    breast = {"name": "b", "dataset": {"name": "medmnist", "flavor": "breastmnist"}, "real": {"base": [10]},
              "seeds": [0], "analysis": {"metric": "test_auc"}}  # fmt: skip
    assert validate_grid(breast).metric == "test_auc"
    assert validate_grid({**breast, "dataset": {"name": "digits"}}).metric == "test_auc"
    face = {**breast, "dataset": {"name": "att"}}
    with pytest.raises(GridError, match="'test_auc' is not measured on a face dataset's verification pairs"):
        validate_grid(face)
