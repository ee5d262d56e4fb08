"""The study statistics against answers worked out by hand."""

import numpy as np
import pytest

from resomap.report.stats import bootstrap_intervals, fit_power_law, macro_f1_from_counts, mcnemar, pareto_front


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    # 10 images fixed, 2 broken, 88 unchanged: p = 2 * P(X <= 2 | n = 12, 1/2) = 2 * 79 / 4096
    a = np.array([0] * 10 + [1] * 2 + [1] * 50 + [0] * 38, dtype=bool)
    b = np.array([1] * 10 + [0] * 2 + [1] * 50 + [0] * 38, dtype=bool)
    result = mcnemar(a, b)
    assert (result.gained, result.lost) == (10, 2)
    assert result.p_value == pytest.approx(158 / 4096)


def test_mcnemar_without_discordant_pairs_finds_no_difference():
    same = np.array([1, 0, 1], dtype=bool)
    assert mcnemar(same, same).p_value == 1.0


def test_mcnemar_refuses_unpaired_samples():
    with pytest.raises(ValueError, match="same images"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


def test_bootstrap_of_a_perfect_classifier_is_a_point():
    labels = np.arange(50) % 5
    ci = bootstrap_intervals(labels[None], labels[None], 5, 300, 0.95, 0)
    assert (ci["accuracy"].low, ci["accuracy"].high) == (1.0, 1.0)
    assert (ci["macro_f1"].low, ci["macro_f1"].high) == (1.0, 1.0)


def test_bootstrap_accuracy_interval_matches_the_normal_approximation():
    # 400 images, half right: the 95% interval is 0.5 +- 1.96 * sqrt(0.25 / 400) = 0.5 +- 0.049
    labels = np.zeros(400, dtype=int)
    predicted = np.where(np.arange(400) < 200, 0, 1)
    ci = bootstrap_intervals(labels[None], predicted[None], 2, 4000, 0.95, 0)["accuracy"]
    assert ci.low == pytest.approx(0.451, abs=0.008) and ci.high == pytest.approx(0.549, abs=0.008)


def test_bootstrap_is_seeded_and_pairs_seeds_on_the_same_images():
    labels = np.arange(100) % 4
    wrong = (labels + 1) % 4
    seeds = np.stack([np.where(np.arange(100) < 70, labels, wrong), np.where(np.arange(100) < 50, labels, wrong)])
    first = bootstrap_intervals(np.stack([labels, labels]), seeds, 4, 500, 0.9, 7)
    again = bootstrap_intervals(np.stack([labels, labels]), seeds, 4, 500, 0.9, 7)
    assert first == again
    assert first["accuracy"].low < 0.6 < first["accuracy"].high  # mean of 0.7 and 0.5


def test_macro_f1_counts_match_the_definition():
    # class 0: tp 2, fp 1, fn 0 -> 0.8; class 1: tp 0, fp 0, fn 1 -> 0; class 2: absent -> 0
    f1 = macro_f1_from_counts(np.array([2.0, 0, 0]), np.array([1.0, 0, 0]), np.array([0.0, 1, 0]))
    assert f1 == pytest.approx(0.8 / 3)


def test_power_law_recovers_the_exponent():
    resolutions = [32, 64, 128, 256]
    fit = fit_power_law(resolutions, [3.0 * r**2 for r in resolutions])
    assert fit.exponent == pytest.approx(2.0) and fit.r2 == pytest.approx(1.0)


def test_power_law_needs_two_measured_points():
    assert np.isnan(fit_power_law([32, 64], [1.0, float("nan")]).exponent)


def test_pareto_front_keeps_only_undominated_points():
    accuracy = [0.5, 0.6, 0.55, 0.7, 0.6]
    latency = [1.0, 2.0, 3.0, 4.0, 2.5]
    assert pareto_front(accuracy, latency).tolist() == [True, True, False, True, False]
