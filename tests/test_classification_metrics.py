import json

import numpy as np
import pytest
from sklearn import metrics as skm

from resomap.evaluate.metrics import classification_metrics, confusion_matrix

NUM_CLASSES = 8
NAMES = [f"c{i}" for i in range(NUM_CLASSES)]
ALL_LABELS = np.arange(NUM_CLASSES)


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _random_case(seed, num_samples=300):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, num_samples)
    logits = rng.normal(size=(num_samples, NUM_CLASSES))
    logits[np.arange(num_samples), labels] += 1.5  # better than chance, so the metrics differ
    return logits, labels


def _never_predicted_and_absent_case():
    """Class 3 is never predicted; class 6 is neither a label nor a prediction."""
    logits, labels = _random_case(1)
    labels[labels == 6] = 2
    for never in (3, 6):  # below every other logit, yet not so low that sklearn clips the log loss
        logits[:, never] = logits.min(axis=1) - 1.0
    return logits, labels


CASES = {"random": _random_case(0), "never_predicted": _never_predicted_and_absent_case()}


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("case", CASES)
def test_matches_sklearn(case):
    logits, labels = CASES[case]
    preds = logits.argmax(axis=1)
    got = classification_metrics(logits, labels, NAMES)

    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds), abs=1e-6)
    top5 = skm.top_k_accuracy_score(labels, logits, k=5, labels=ALL_LABELS)
    assert got["top5_accuracy"] == pytest.approx(top5, abs=1e-6)
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            labels, preds, labels=ALL_LABELS, average=average, zero_division=0
        )
        assert got[f"{average}_precision"] == pytest.approx(p, abs=1e-6)
        assert got[f"{average}_recall"] == pytest.approx(r, abs=1e-6)
        assert got[f"{average}_f1"] == pytest.approx(f, abs=1e-6)
    balanced = skm.balanced_accuracy_score(labels, preds)
    assert got["balanced_accuracy"] == pytest.approx(balanced, abs=1e-6)
    loss = skm.log_loss(labels, _softmax(logits), labels=ALL_LABELS)
    assert got["test_loss"] == pytest.approx(loss, abs=1e-6)
    recall = skm.recall_score(labels, preds, labels=ALL_LABELS, average=None, zero_division=0)
    support = np.bincount(labels, minlength=NUM_CLASSES)
    assert list(got["per_class_accuracy"]) == NAMES
    assert [v for v in got["per_class_accuracy"].values() if v is not None] == pytest.approx(recall[support > 0], abs=1e-6)
    assert list(got["per_class_support"].values()) == support.tolist()
    assert got["num_samples"] == len(labels)


def test_a_class_with_no_test_image_has_no_accuracy_and_counts_as_zero_in_macro():
    logits, labels = _never_predicted_and_absent_case()
    preds = logits.argmax(axis=1)
    assert 3 in labels and 3 not in preds and 6 not in labels and 6 not in preds
    got = classification_metrics(logits, labels, NAMES)
    assert got["per_class_accuracy"]["c3"] == 0.0  # present, never predicted
    assert got["per_class_accuracy"]["c6"] is None and got["per_class_support"]["c6"] == 0  # absent
    assert got["macro_recall"] < got["balanced_accuracy"]  # macro counts c6 as 0, balanced skips it


def test_confusion_matrix_matches_sklearn():
    logits, labels = CASES["never_predicted"]
    preds = logits.argmax(axis=1)
    expected = skm.confusion_matrix(labels, preds, labels=ALL_LABELS)
    np.testing.assert_array_equal(confusion_matrix(labels, preds, NUM_CLASSES), expected)


def test_result_is_plain_json_and_rounded():
    logits, labels = CASES["random"]
    got = classification_metrics(logits, labels, NAMES)
    assert json.loads(json.dumps(got)) == got
    scalars = [v for v in got.values() if not isinstance(v, dict)]
    assert all(type(v) in (float, int) for v in scalars)
    assert all(round(v, 6) == v for v in scalars)


def test_no_top5_with_five_classes_or_fewer():
    logits, labels = _random_case(2)
    got = classification_metrics(logits[:, :5], labels % 5, NAMES[:5])
    assert "top5_accuracy" not in got


def test_loss_is_finite_for_huge_logits():
    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    got = classification_metrics(logits, np.array([1, 1]), ["a", "b"])
    assert got["test_loss"] == pytest.approx(1000.0)


def _two_class_logits(confidence, predicted):
    """Logits whose softmax gives `confidence` to class `predicted` (0 or 1)."""
    row = np.log([confidence, 1 - confidence])
    return row if predicted == 0 else row[::-1]


def test_ece_zero_when_calibrated():
    # confidence 0.8 in every sample, and 8 of 10 predictions right
    logits = np.stack([_two_class_logits(0.8, 0)] * 10)
    labels = np.array([0] * 8 + [1] * 2)
    assert classification_metrics(logits, labels, ["a", "b"])["ece"] == pytest.approx(0.0, abs=1e-6)


def test_ece_near_one_when_confident_and_wrong():
    logits = np.array([[30.0, 0.0]] * 4)
    assert classification_metrics(logits, np.ones(4, int), ["a", "b"])["ece"] == pytest.approx(1.0, abs=1e-6)


def test_ece_weighs_bins_by_samples():
    # bin of 0.9: 4 samples, 2 right -> gap 0.4; bin of 0.6: 4 samples, all right -> gap 0.4
    logits = np.stack([_two_class_logits(0.9, 0)] * 4 + [_two_class_logits(0.6, 1)] * 4)
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    assert classification_metrics(logits, labels, ["a", "b"])["ece"] == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize(
    "logits, labels",
    [
        (np.zeros((3, 4)), np.zeros(3, int)),  # 4 columns for 2 class names
        (np.zeros((3, 2)), np.zeros(2, int)),  # label count differs from rows
        (np.zeros((3, 2)), np.array([0, 1, 2])),  # label out of range
    ],
)
def test_rejects_inconsistent_inputs(logits, labels):
    with pytest.raises(ValueError):
        classification_metrics(logits, labels, ["a", "b"])
