"""The statistics a resolution study needs: bootstrap intervals over test images, McNemar's exact
paired test, power-law fits of cost against resolution, and the accuracy/latency Pareto front."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from resomap.evaluate.metrics import per_class_prf

BOOTSTRAP_CHUNK = 256  # resamples weighed at once: bounds memory at CHUNK x N floats


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def macro_f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Macro-F1 over the last axis (classes), exactly as evaluate computes it, on (weighted) counts."""
    return per_class_prf(tp, tp + fp, tp + fn)[2].mean(-1)


def bootstrap_intervals(
    actual: np.ndarray, predicted: np.ndarray, num_classes: int, samples: int, confidence: float, seed: int
) -> dict[str, Interval]:
    """Percentile bootstrap CI of accuracy and macro-F1, resampling test images.

    actual and predicted are (S, N) class codes: S seeds evaluated on the same N test images.
    Each resample draws N images with replacement and scores the mean over seeds, so the
    interval reflects which test images happened to be drawn, paired across seeds."""
    actual, predicted = np.atleast_2d(actual), np.atleast_2d(predicted)
    n = actual.shape[1]
    eye = np.eye(num_classes)
    correct = (actual == predicted).astype(np.float64)  # (S, N)
    hits = eye[actual] * correct[..., None]  # (S, N, C): true positives per image
    truth, guess = eye[actual], eye[predicted]
    rng = np.random.default_rng(seed)
    accuracy, macro_f1 = [], []
    for start in range(0, samples, BOOTSTRAP_CHUNK):
        count = min(BOOTSTRAP_CHUNK, samples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=count).astype(np.float64)  # (B, N)
        accuracy.append((correct @ weights.T).mean(0) / n)
        tp = np.einsum("bn,snc->bsc", weights, hits)
        fp = np.einsum("bn,snc->bsc", weights, guess) - tp
        fn = np.einsum("bn,snc->bsc", weights, truth) - tp
        macro_f1.append(macro_f1_from_counts(tp, fp, fn).mean(1))
    tail = (1 - confidence) / 2
    return {
        name: Interval(*np.quantile(np.concatenate(values), [tail, 1 - tail]).tolist())
        for name, values in (("accuracy", accuracy), ("macro_f1", macro_f1))
    }


@dataclass(frozen=True)
class McNemar:
    gained: int  # images wrong at the first setting and right at the second
    lost: int  # right at the first, wrong at the second
    p_value: float


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's exact test on paired correctness of the same images (two-sided binomial on the
    discordant pairs). Rows of several seeds are pooled: each seed pairs with itself."""
    a, b = np.asarray(correct_a, dtype=bool).ravel(), np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same images on both sides, got {a.size} and {b.size}")
    gained, lost = int((~a & b).sum()), int((a & ~b).sum())
    p_value = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    return McNemar(gained, lost, float(p_value))


@dataclass(frozen=True)
class PowerLaw:
    exponent: float  # k in cost = c * resolution^k
    r2: float  # of the straight-line fit in log-log space


def fit_power_law(resolutions, values) -> PowerLaw:
    """Least-squares line through (log r, log v); NaN when fewer than two positive points."""
    r, v = np.asarray(resolutions, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) & (v > 0) & (r > 0)
    if len(np.unique(r[keep])) < 2:
        return PowerLaw(float("nan"), float("nan"))
    x, y = np.log(r[keep]), np.log(v[keep])
    k, c = np.polyfit(x, y, 1)
    residual = ((y - (k * x + c)) ** 2).sum()
    total = ((y - y.mean()) ** 2).sum()
    return PowerLaw(float(k), float(1 - residual / total) if total > 0 else 1.0)


def pareto_front(accuracy, latency) -> np.ndarray:
    """Mask of the points no other point beats: none is at least as accurate and at least as
    fast while strictly better on one of the two."""
    acc, lat = np.asarray(accuracy, dtype=np.float64), np.asarray(latency, dtype=np.float64)
    no_worse = (acc[None, :] >= acc[:, None]) & (lat[None, :] <= lat[:, None])
    better = (acc[None, :] > acc[:, None]) | (lat[None, :] < lat[:, None])
    return ~(no_worse & better).any(1)
