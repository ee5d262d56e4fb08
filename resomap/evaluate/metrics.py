"""Classification metrics from raw logits, in numpy, so evaluation needs no sklearn and no GPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOP_K = 5
DECIMALS = 6


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], ece_bins: int = 15
) -> dict:
    """All metrics of one evaluation as plain python numbers, ready for json.dump and DVC.

    Precision, recall and F1 of a class that has no true and no predicted sample are 0
    (sklearn's ``zero_division=0``); the macro averages still count that class, so they
    average over all C classes. ``balanced_accuracy`` averages recall over the classes
    present in ``labels`` only, as sklearn does. ``per_class_accuracy`` is each class's recall
    (null for a class with no test image), ``per_class_support`` its test image count.
    """
    logits, labels = _checked_inputs(logits, labels, len(class_names))
    preds = logits.argmax(axis=1)
    cm = confusion_matrix(labels, preds, len(class_names))
    precision, recall, f1 = per_class_prf(np.diag(cm).astype(np.float64), cm.sum(axis=0), cm.sum(axis=1))
    support = cm.sum(axis=1)
    weights = support / support.sum()
    metrics = {"accuracy": float(np.mean(preds == labels))}
    if len(class_names) > TOP_K:
        metrics["top5_accuracy"] = top_k_accuracy(logits, labels, TOP_K)
    metrics.update(
        macro_precision=precision.mean(),
        macro_recall=recall.mean(),
        macro_f1=f1.mean(),
        weighted_precision=weights @ precision,
        weighted_recall=weights @ recall,
        weighted_f1=weights @ f1,
        balanced_accuracy=recall[support > 0].mean(),
        ece=expected_calibration_error(logits, labels, ece_bins),
        test_loss=-log_softmax(logits)[np.arange(len(labels)), labels].mean(),
    )
    rounded = {key: round(float(value), DECIMALS) for key, value in metrics.items()}
    rounded["num_samples"] = int(len(labels))
    # a class with no test image has no accuracy (null), not 0: the report says which classes those are
    rounded["per_class_accuracy"] = {
        name: round(float(value), DECIMALS) if count else None for name, value, count in zip(class_names, recall, support)
    }
    rounded["per_class_support"] = {name: int(count) for name, count in zip(class_names, support)}
    return rounded


def _checked_inputs(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Catch shape and label mistakes here, where they are clear, not as a wrong number later."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"logits must have shape (N, {num_classes}), got {logits.shape}")
    if labels.shape != (logits.shape[0],) or len(labels) == 0:
        raise ValueError(f"labels must have shape ({logits.shape[0]},) with N > 0, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be integers in [0, {num_classes}), got {labels.dtype} values")
    return logits, labels.astype(np.int64)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class, as in sklearn."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(preds, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_prf(true_pos: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 per class from counts per class (last axis): true positives, predicted
    and actual. 0 where the denominator is 0. Batches of (bootstrap-weighted) counts work alike."""
    precision = _safe_divide(true_pos, predicted)
    recall = _safe_divide(true_pos, actual)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return precision, recall, f1


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with 0 instead of nan, the zero_division=0 convention."""
    out = np.zeros(np.broadcast_shapes(np.shape(numerator), np.shape(denominator)), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the k highest logits (ties count as hits)."""
    true_logit = logits[np.arange(len(labels)), labels]
    higher = (logits > true_logit[:, None]).sum(axis=1)
    return float(np.mean(higher < k))


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, num_bins: int) -> float:
    """Sample-weighted |accuracy - confidence| over equal-width confidence bins (lower, upper]."""
    probs = np.exp(log_softmax(logits))
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    gap_per_bin = np.bincount(bins, weights=correct - confidence, minlength=num_bins)
    return float(np.abs(gap_per_bin).sum() / len(labels))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities without overflow: shift by the row max before exponentiating."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
