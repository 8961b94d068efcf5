"""Distances between predictives, against hand computations and closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from bayesrnn.evaluation import (
    categorical_distances,
    categorical_scores,
    continuous_distances,
    coverage_gap,
    crps_gap,
    entropy_ratio,
    predictive_sd,
    sd_ratio,
    top1_agreement,
    total_variation,
    wasserstein1,
)
from bayesrnn.models import Forecast

P = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)
Q = torch.tensor([[0.5, 0.4, 0.1], [0.2, 0.5, 0.3]], dtype=torch.float64)


def gaussian(loc, scale, n: int = 1) -> Forecast:
    """One Gaussian per draw, the same for ``n`` values: a Forecast (S, n, 1)."""
    loc = torch.tensor(loc, dtype=torch.float64).view(-1, 1, 1).expand(-1, n, 1)
    scale = torch.tensor(scale, dtype=torch.float64).view(-1, 1, 1).expand(-1, n, 1)
    return Forecast(loc.clone(), scale.clone())


# --- categorical ------------------------------------------------------------------------------


def test_total_variation_of_two_known_categoricals():
    # row 1: ½(0.2 + 0.2 + 0) = 0.2; row 2: ½(0.1 + 0.2 + 0.3) = 0.3
    assert total_variation(P, Q) == pytest.approx(0.25)
    assert total_variation(P, P) == 0.0
    one_hot = torch.eye(3, dtype=torch.float64)
    assert total_variation(one_hot, one_hot.flip(0)) == pytest.approx(2 / 3)


def test_agreement_counted_by_hand():
    # argmaxes: P (0, 2), Q (0, 1): one row of two agrees
    assert top1_agreement(P, Q) == 0.5
    assert top1_agreement(P, P) == 1.0


def test_draws_are_averaged_into_the_mixture_before_comparing():
    # two draws whose mean is Q: the mixture is compared, not the draws
    draws = torch.stack([2 * Q - P, P])
    assert torch.allclose(draws.mean(0), Q)
    assert total_variation(P, draws) == pytest.approx(0.25)
    assert top1_agreement(draws, Q) == 1.0


def test_entropy_ratio_and_mutual_information_ratio():
    uniform = torch.full((1, 2), 0.5, dtype=torch.float64)
    skewed = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert entropy_ratio(skewed, uniform) == pytest.approx(h / math.log(2))
    # reference: draws (1, 0) and (0, 1): MI = log 2; method: draws (0.9, 0.1) and (0.1, 0.9)
    reference = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    method = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]], dtype=torch.float64)
    out = categorical_distances(method, reference)
    assert out["mutual_information_ratio"] == pytest.approx((math.log(2) - h) / math.log(2))
    assert out["entropy_ratio"] == pytest.approx(1.0)
    assert out["total_variation"] == 0.0
    assert math.isnan(categorical_distances(skewed, reference)["mutual_information_ratio"])


def test_categorical_scores_by_hand():
    scores = categorical_scores(P, torch.tensor([0, 1]))
    assert scores["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)
    assert scores["accuracy"] == 0.5


@pytest.mark.parametrize(
    ("method", "reference", "message"),
    [
        (P, Q[:1], "same"),
        (P, torch.tensor([[0.5, 0.6, 0.1], [0.2, 0.5, 0.3]]), "sum to 1"),
        (torch.tensor([[1.2, -0.2, 0.0], [0.2, 0.5, 0.3]]), Q, "non-negative"),
        (torch.ones(3), Q, r"\(N, C\)"),
        (torch.tensor([[1, 0, 0], [0, 1, 0]]), Q, "float"),
    ],
)
def test_bad_categorical_inputs_are_value_errors(method, reference, message):
    with pytest.raises(ValueError, match=message):
        total_variation(method, reference)


# --- continuous -------------------------------------------------------------------------------


def test_wasserstein1_of_gaussians_with_one_scale_is_the_distance_of_the_means():
    assert wasserstein1(gaussian([0.0], [1.0]), gaussian([1.5], [1.0])) == pytest.approx(
        1.5, abs=1e-3
    )
    assert wasserstein1(gaussian([2.0], [0.3]), gaussian([2.0], [0.3])) == pytest.approx(0.0)


def test_wasserstein1_of_gaussians_with_two_scales_is_the_quantile_integral():
    def quantile_gap(u):
        z = stats.norm.ppf(u)
        return abs((0.5 + 2.0 * z) - (-0.3 + 0.7 * z))

    expected, _ = integrate.quad(quantile_gap, 0, 1, points=[stats.norm.cdf(-0.8 / 1.3)])
    got = wasserstein1(gaussian([0.5], [2.0]), gaussian([-0.3], [0.7]))
    assert got == pytest.approx(expected, rel=2e-3)


def test_wasserstein1_of_a_mixture_and_of_samples():
    # mixture ½N(−1, 0.5²) + ½N(1, 0.5²) against N(0, 0.5²): a numeric quantile integral
    mixture, single = gaussian([-1.0, 1.0], [0.5, 0.5]), gaussian([0.0], [0.5])
    xs = np.linspace(-6, 6, 200_001)
    f = 0.5 * (stats.norm.cdf(xs, -1, 0.5) + stats.norm.cdf(xs, 1, 0.5))
    g = stats.norm.cdf(xs, 0, 0.5)
    expected = np.trapezoid(np.abs(f - g), xs)
    assert wasserstein1(mixture, single) == pytest.approx(expected, rel=2e-3)
    # samples {0, 1} against {0, 3}: sorted differences 0 and 2, mean 1 (exact)
    a = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    b = torch.tensor([[3.0], [0.0]], dtype=torch.float64)
    assert wasserstein1(a, b) == pytest.approx(1.0)
    # per value: two values, the second twice as far
    two = gaussian([0.0], [1.0], n=2)
    shifted = Forecast(two.loc + torch.tensor([[[1.0], [2.0]]]), two.scale)
    per_value = wasserstein1(two, shifted, per_value=True)
    assert per_value.shape == (2, 1)
    assert per_value.flatten().tolist() == pytest.approx([1.0, 2.0], abs=2e-3)


def test_crps_gap_against_the_closed_form_gaussian_crps():
    def crps(mu, sigma, y):  # Gneiting & Raftery 2007, eq. 21
        z = (y - mu) / sigma
        return sigma * (
            z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi)
        )

    observed = torch.tensor([[0.4]], dtype=torch.float64)
    got = crps_gap(gaussian([0.0], [1.0]), gaussian([1.0], [0.5]), observed)
    assert got == pytest.approx(crps(0.0, 1.0, 0.4) - crps(1.0, 0.5, 0.4), rel=1e-9)


def test_coverage_gap_counts_observations_inside_central_intervals():
    # N(0, 1): 50% interval ±0.674, 90% ±1.645; N(0, 10²): ±6.74, ±16.4
    observed = torch.tensor([[0.5], [1.0], [3.0], [20.0]], dtype=torch.float64)
    narrow, wide = gaussian([0.0], [1.0], n=4), gaussian([0.0], [10.0], n=4)
    gaps = coverage_gap(narrow, wide, observed)
    assert gaps == pytest.approx(
        {"coverage_gap_50": 1 / 4 - 3 / 4, "coverage_gap_90": 2 / 4 - 3 / 4}
    )


def test_sd_ratio_uses_the_mixture_standard_deviation():
    # ½N(−1, 1) + ½N(1, 1): variance 1 + 1 = 2
    mixture = gaussian([-1.0, 1.0], [1.0, 1.0])
    assert float(predictive_sd(mixture).squeeze()) == pytest.approx(math.sqrt(2))
    assert sd_ratio(mixture, gaussian([0.0], [2.0])) == pytest.approx(math.sqrt(2) / 2)
    # Student-t with ν = 4: variance σ² ν/(ν − 2) = 2σ²
    t = Forecast(torch.ones(1, 1, 1), torch.full((1, 1, 1), 3.0), torch.full((1, 1, 1), 4.0))
    assert float(predictive_sd(t).squeeze()) == pytest.approx(3 * math.sqrt(2))


def test_continuous_distances_of_a_predictive_to_itself_are_nothing():
    observed = torch.tensor([[0.1], [-0.4], [2.0]], dtype=torch.float64)
    p = gaussian([0.0, 0.5], [1.0, 0.7], n=3)
    out = continuous_distances(p, p, observed)
    assert out == pytest.approx(
        {
            "wasserstein1": 0.0,
            "crps_gap": 0.0,
            "coverage_gap_50": 0.0,
            "coverage_gap_90": 0.0,
            "sd_ratio": 1.0,
        }
    )


@pytest.mark.parametrize(
    ("method", "reference", "message"),
    [
        (gaussian([0.0], [1.0], n=2), gaussian([0.0], [1.0], n=3), "same"),
        (gaussian([0.0], [-1.0]), gaussian([0.0], [1.0]), "scale must be positive"),
        (torch.tensor([[math.nan]]), gaussian([0.0], [1.0]), "non-finite"),
        (torch.ones(2, dtype=torch.int64), gaussian([0.0], [1.0]), "float"),
    ],
)
def test_bad_continuous_inputs_are_value_errors(method, reference, message):
    with pytest.raises(ValueError, match=message):
        wasserstein1(method, reference)


def test_observed_values_of_another_shape_are_refused():
    with pytest.raises(ValueError, match="observed must be"):
        crps_gap(gaussian([0.0], [1.0]), gaussian([0.0], [1.0]), torch.zeros(2, 1))


def test_wasserstein1_between_samples_and_a_mixture():
    samples = torch.from_numpy(stats.norm.ppf((np.arange(4000) + 0.5) / 4000)).view(-1, 1, 1)
    assert wasserstein1(samples, gaussian([0.5], [1.0])) == pytest.approx(0.5, abs=5e-3)
