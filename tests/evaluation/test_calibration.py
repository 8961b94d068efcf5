"""Calibration metrics against hand-computed values, plus input validation and properties."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesrnn.evaluation.calibration import (
    brier_score,
    calibration_by_position,
    expected_calibration_error,
    flatten_tokens,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    token_positions,
)

# Six items, three classes (float64 so decimal numbers below are exact enough for 1e-12).
#   item  probs               label  conf  prediction  correct
#   0     [0.40, 0.30, 0.30]  0      0.40  0           yes
#   1     [0.20, 0.45, 0.35]  2      0.45  1           no
#   2     [0.80, 0.10, 0.10]  0      0.80  0           yes
#   3     [0.10, 0.90, 0.00]  1      0.90  1           yes
#   4     [0.30, 0.10, 0.60]  0      0.60  2           no
#   5     [0.50, 0.25, 0.25]  1      0.50  0           no
PROBS = torch.tensor(
    [
        [0.40, 0.30, 0.30],
        [0.20, 0.45, 0.35],
        [0.80, 0.10, 0.10],
        [0.10, 0.90, 0.00],
        [0.30, 0.10, 0.60],
        [0.50, 0.25, 0.25],
    ],
    dtype=torch.float64,
)
LABELS = torch.tensor([0, 2, 0, 1, 0, 1])

# Width, 4 bins: (0, .25], (.25, .5], (.5, .75], (.75, 1]; 0.50 sits on an edge -> lower bin.
#   bin 1: items 0, 1, 5  conf (0.40+0.45+0.50)/3 = 0.45  acc 1/3  gap 0.45 - 1/3 = 7/60
#   bin 2: item 4         conf 0.60                       acc 0    gap 0.60
#   bin 3: items 2, 3     conf 0.85                       acc 1    gap 0.15
#   ECE = 3/6 * 7/60 + 1/6 * 0.6 + 2/6 * 0.15 = 7/120 + 0.1 + 0.05 = 0.2083333...
#   MCE = 0.6
WIDTH_ECE = 3 / 6 * 7 / 60 + 1 / 6 * 0.6 + 2 / 6 * 0.15
WIDTH_MCE = 0.6

# Mass, 3 bins: sorted confidences 0.40 0.45 | 0.50 0.60 | 0.80 0.90 (two items each).
#   bin 0: conf 0.425  acc 1/2  gap 0.075
#   bin 1: conf 0.55   acc 0    gap 0.55
#   bin 2: conf 0.85   acc 1    gap 0.15
#   ECE = (0.075 + 0.55 + 0.15) / 3 = 0.258333...,  MCE = 0.55
MASS_ECE = (0.075 + 0.55 + 0.15) / 3
MASS_MCE = 0.55


def test_width_bins_by_hand() -> None:
    bins = reliability_bins(PROBS, LABELS, n_bins=4, strategy="width")
    assert bins.count.tolist() == [0, 3, 1, 2]
    assert bins.lower.tolist() == [0.0, 0.25, 0.5, 0.75]
    assert bins.upper.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert math.isnan(bins.confidence[0]) and math.isnan(bins.accuracy[0])
    assert bins.confidence[1:].tolist() == pytest.approx([0.45, 0.60, 0.85], abs=1e-12)
    assert bins.accuracy[1:].tolist() == pytest.approx([1 / 3, 0.0, 1.0], abs=1e-12)
    assert bins.ece == pytest.approx(WIDTH_ECE, abs=1e-12)
    assert bins.mce == pytest.approx(WIDTH_MCE, abs=1e-12)


def test_ece_and_mce_by_hand_both_strategies() -> None:
    assert expected_calibration_error(PROBS, LABELS, 4, "width") == pytest.approx(WIDTH_ECE)
    assert maximum_calibration_error(PROBS, LABELS, 4, "width") == pytest.approx(WIDTH_MCE)
    assert expected_calibration_error(PROBS, LABELS, 3, "mass") == pytest.approx(MASS_ECE)
    assert maximum_calibration_error(PROBS, LABELS, 3, "mass") == pytest.approx(MASS_MCE)
    assert reliability_bins(PROBS, LABELS, 3, "mass").count.tolist() == [2, 2, 2]


def test_mass_bins_keep_tied_confidences_together() -> None:
    # Confidences 0.6, 0.6, 0.6, 0.9 in 2 mass bins: the runs are {0.6, 0.6} and {0.6, 0.9}, but the
    # three tied 0.6 go to one bin.  Labels: two of the 0.6 items right, the 0.9 item wrong.
    #   bin 0: conf 0.6, acc 2/3, gap 1/15;  bin 1: conf 0.9, acc 0, gap 0.9
    #   ECE = 3/4 * 1/15 + 1/4 * 0.9 = 0.05 + 0.225 = 0.275
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.4, 0.6], [0.9, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    bins = reliability_bins(probs, labels, n_bins=2, strategy="mass")
    assert bins.count.tolist() == [3, 1]
    assert bins.ece == pytest.approx(0.275)
    assert bins.mce == pytest.approx(0.9)


def test_mass_with_more_bins_than_items_leaves_bins_empty() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 0])  # conf 0.7 right (gap 0.3), conf 0.8 wrong (gap 0.8)
    bins = reliability_bins(probs, labels, n_bins=5, strategy="mass")
    assert bins.count.tolist() == [1, 1, 0, 0, 0]
    assert bins.ece == pytest.approx((0.3 + 0.8) / 2)


def test_perfectly_calibrated_and_single_bin() -> None:
    # Confidence 0.75 on all four items and three of them right: no calibration error.
    probs = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0)
    # One bin: ECE = |overall accuracy - mean confidence| = |3/6 - 3.65/6|.
    assert expected_calibration_error(PROBS, LABELS, n_bins=1) == pytest.approx(0.65 / 6)


def test_accepts_numpy_and_float32() -> None:
    value = expected_calibration_error(PROBS.numpy().astype(np.float32), LABELS.numpy(), 4)
    assert isinstance(value, float)
    assert value == pytest.approx(WIDTH_ECE, abs=1e-6)


def test_accepts_half_precision() -> None:
    value = expected_calibration_error(PROBS.to(torch.float16), LABELS, 4)
    assert value == pytest.approx(WIDTH_ECE, abs=1e-3)


def test_brier_by_hand() -> None:
    # [0.7, 0.2, 0.1], label 0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14
    # [0.1, 0.6, 0.3], label 2: 0.1^2 + 0.6^2 + 0.7^2 = 0.86      mean = 0.5
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], dtype=torch.float64)
    assert brier_score(probs, torch.tensor([0, 2])) == pytest.approx(0.5, abs=1e-12)
    assert brier_score(torch.eye(3), torch.tensor([0, 1, 2])) == pytest.approx(0.0, abs=1e-12)
    assert brier_score(torch.eye(3), torch.tensor([1, 2, 0])) == pytest.approx(2.0, abs=1e-12)


def test_nll_by_hand() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], dtype=torch.float64)
    expected = -(math.log(0.7) + math.log(0.3)) / 2  # = 0.7803238...
    assert negative_log_likelihood(probs, torch.tensor([0, 2])) == pytest.approx(expected)


def test_nll_clamps_zero_probability_to_finite() -> None:
    probs = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    value = negative_log_likelihood(probs, torch.tensor([1]))
    assert value == pytest.approx(-math.log(torch.finfo(torch.float64).tiny))
    assert negative_log_likelihood(probs, torch.tensor([1]), min_prob=1e-12) == pytest.approx(
        12 * math.log(10)
    )


def test_calibration_by_position_by_hand() -> None:
    # positions 0 0 1 1 2 5 with max_position=3 -> item 5 (conf 0.5, wrong) is pooled into 3.
    # position 0: items 0, 1 -> conf 0.425, acc 0.5; both in bin (.25, .5] -> ECE 0.075
    # position 1: items 2, 3 -> conf 0.85,  acc 1.0 -> ECE 0.15
    # position 2: item 4     -> conf 0.60,  acc 0   -> ECE 0.6
    # position 3: item 5     -> conf 0.50,  acc 0   -> ECE 0.5
    result = calibration_by_position(
        PROBS, LABELS, torch.tensor([0, 0, 1, 1, 2, 5]), n_bins=4, max_position=3
    )
    assert result.position.tolist() == [0, 1, 2, 3]
    assert result.count.tolist() == [2, 2, 1, 1]
    assert result.confidence.tolist() == pytest.approx([0.425, 0.85, 0.6, 0.5])
    assert result.accuracy.tolist() == pytest.approx([0.5, 1.0, 0.0, 0.0])
    assert result.ece.tolist() == pytest.approx([0.075, 0.15, 0.6, 0.5])


def test_calibration_by_position_marks_empty_positions() -> None:
    result = calibration_by_position(PROBS, LABELS, torch.tensor([0, 0, 0, 2, 2, 2]), n_bins=4)
    assert result.count.tolist() == [3, 0, 3]
    assert math.isnan(result.ece[1]) and not math.isnan(result.ece[0])


def test_flatten_tokens_and_positions_agree() -> None:
    t, b, v = 3, 2, 4
    probs = torch.softmax(torch.randn(t, b, v, generator=torch.Generator().manual_seed(0)), -1)
    labels = torch.arange(t * b).reshape(t, b) % v
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    flat_probs, flat_labels = flatten_tokens(probs, labels, mask)
    assert flat_probs.shape == (3, v)
    assert torch.equal(flat_probs, torch.stack([probs[0, 0], probs[0, 1], probs[1, 0]]))
    assert flat_labels.tolist() == [labels[0, 0], labels[0, 1], labels[1, 0]]
    assert token_positions(labels, mask).tolist() == [0, 0, 1]
    full_probs, full_labels = flatten_tokens(probs, labels)
    assert full_probs.shape == (t * b, v)
    assert torch.equal(full_probs[3], probs[1, 1]) and full_labels[3] == labels[1, 1]
    assert token_positions(labels).tolist() == [0, 0, 1, 1, 2, 2]


GOOD_P = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
GOOD_Y = torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("probs", "labels", "kwargs", "argument"),
    [
        (GOOD_P, torch.tensor([0, 1, 1]), {}, "labels"),  # length mismatch
        (GOOD_P, torch.tensor([0, 2]), {}, "labels"),  # out of range
        (GOOD_P, torch.tensor([0, -1]), {}, "labels"),
        (GOOD_P, torch.tensor([0.0, 1.0]), {}, "labels"),  # not integers
        (torch.tensor([[0.5, 0.6], [0.9, 0.1]]), GOOD_Y, {}, "probs"),  # sum != 1
        (torch.tensor([[1.2, -0.2], [0.9, 0.1]]), GOOD_Y, {}, "probs"),  # negative
        (torch.tensor([[math.nan, 0.5], [0.9, 0.1]]), GOOD_Y, {}, "probs"),
        (torch.tensor([[math.inf, 0.0], [0.9, 0.1]]), GOOD_Y, {}, "probs"),
        (torch.tensor([0.5, 0.5]), torch.tensor([0]), {}, "probs"),  # wrong ndim
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), {}, "probs"),  # empty
        (GOOD_P, GOOD_Y, {"n_bins": 0}, "n_bins"),
        (GOOD_P, GOOD_Y, {"strategy": "quantile"}, "strategy"),
    ],
)
def test_bad_inputs_raise(probs, labels, kwargs, argument) -> None:
    for metric in (expected_calibration_error, maximum_calibration_error, reliability_bins):
        with pytest.raises(ValueError, match=argument):
            metric(probs, labels, **kwargs)
    if not kwargs:
        for metric in (brier_score, negative_log_likelihood):
            with pytest.raises(ValueError, match=argument):
                metric(probs, labels)


def test_bad_position_inputs_raise() -> None:
    with pytest.raises(ValueError, match="positions"):
        calibration_by_position(GOOD_P, GOOD_Y, torch.tensor([0]))
    with pytest.raises(ValueError, match="positions"):
        calibration_by_position(GOOD_P, GOOD_Y, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="max_position"):
        calibration_by_position(GOOD_P, GOOD_Y, torch.tensor([0, 1]), max_position=-1)
    with pytest.raises(ValueError, match="min_prob"):
        negative_log_likelihood(GOOD_P, GOOD_Y, min_prob=0.0)


def test_bad_flatten_inputs_raise() -> None:
    probs = torch.full((2, 3, 4), 0.25)
    labels = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="labels"):
        flatten_tokens(probs, labels[:1])
    with pytest.raises(ValueError, match="probs"):
        flatten_tokens(probs[0], labels)
    with pytest.raises(ValueError, match="mask"):
        flatten_tokens(probs, labels, torch.ones(2, 3))  # not boolean
    with pytest.raises(ValueError, match="mask"):
        flatten_tokens(probs, labels, torch.zeros(2, 3, dtype=torch.bool))  # keeps nothing


@st.composite
def _predictions(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(1, 40))
    k = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    sharpness = draw(st.floats(0.1, 20.0))
    probs = torch.softmax(sharpness * torch.randn(n, k, generator=gen, dtype=torch.float64), -1)
    labels = torch.randint(0, k, (n,), generator=gen)
    return probs, labels


@settings(max_examples=60, deadline=None)
@given(_predictions(), st.integers(1, 20), st.sampled_from(["width", "mass"]))
def test_ece_properties(prediction, n_bins: int, strategy: str) -> None:
    probs, labels = prediction
    bins = reliability_bins(probs, labels, n_bins, strategy)
    assert int(bins.count.sum()) == probs.shape[0]
    assert 0.0 <= bins.ece <= bins.mce <= 1.0
    if strategy == "mass" and probs.max(-1).values.unique().numel() == probs.shape[0]:
        # Without ties, equal-mass bins hold floor(N / n_bins) or ceil(N / n_bins) items.
        assert set(bins.count.tolist()) <= {len(probs) // n_bins, -(-len(probs) // n_bins)}
    # Definition check against a per-item loop: sum over bins of n_b/N * |acc_b - conf_b|.
    conf, pred = probs.max(-1)
    total = 0.0
    for i in range(n_bins):
        lower, upper = float(bins.lower[i]), float(bins.upper[i])
        inside = (conf > lower) & (conf <= upper) if i > 0 else conf <= upper
        if inside.any():
            gap = abs((pred[inside] == labels[inside]).double().mean() - conf[inside].mean())
            total += float(inside.sum()) / len(conf) * float(gap)
    assert bins.ece == pytest.approx(total, abs=1e-12)
