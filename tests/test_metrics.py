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
