"""MASE, MSIS and per-horizon scores against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from bayesrnn.evaluation.forecast_scores import horizon_metrics, mase, msis, seasonal_error

HISTORY = [1.0, 3.0, 2.0, 6.0]  # one-step changes 2, -1, 4; two-step changes 1, 3


def test_seasonal_error_is_the_mean_absolute_seasonal_change():
    assert float(seasonal_error(HISTORY, 1)) == pytest.approx(7 / 3)
    assert float(seasonal_error(HISTORY, 2)) == pytest.approx(2.0)
    columns = np.stack([HISTORY, [0.0, 1.0, 3.0, 6.0]], axis=1)  # second: changes 1, 2, 3
    assert seasonal_error(columns, 1).tolist() == pytest.approx([7 / 3, 2.0])


def test_mase_by_hand():
    # errors 1 and 2: mean 1.5, scaled by 7/3
    assert mase([4.0, 5.0], [5.0, 3.0], HISTORY, season=1) == pytest.approx(1.5 / (7 / 3))
    assert mase([4.0, 5.0], [5.0, 3.0], HISTORY, season=2) == pytest.approx(0.75)
    # one scale per column: column errors (1, 2) and (3, 3) over scales 7/3 and 2
    forecast = torch.tensor([[4.0, 0.0], [5.0, 0.0]])
    observed = torch.tensor([[5.0, 3.0], [3.0, 3.0]])
    history = np.stack([HISTORY, [0.0, 1.0, 3.0, 6.0]], axis=1)
    expected = (1 / (7 / 3) + 2 / (7 / 3) + 3 / 2 + 3 / 2) / 4
    assert mase(forecast, observed, history) == pytest.approx(expected)


def test_msis_by_hand():
    # α = 0.2: a miss costs 2/α = 10 per unit. First step: width 2 + 10·(3 − 2) = 12; the
    # second is inside: width 2. Mean 7 over the two-step scale 2.
    got = msis([0.0, 4.0], [2.0, 6.0], [3.0, 5.0], HISTORY, season=2, alpha=0.2)
    assert got == pytest.approx(3.5)
    # below the interval, default α = 0.05: width 1 + 40·0.5, over the naive scale 7/3
    got = msis([1.0], [2.0], [0.5], HISTORY)
    assert got == pytest.approx((1 + 40 * 0.5) / (7 / 3))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mase([1.0], [1.0, 2.0], HISTORY), "shapes must match"),
        (lambda: mase([1.0], [1.0], HISTORY, season=0), "season must be an integer"),
        (lambda: mase([1.0], [1.0], HISTORY, season=4), "T > season"),
        (lambda: mase([1.0], [1.0], [2.0, 2.0, 2.0]), "seasonal-naive error is 0"),
        (lambda: mase([float("nan")], [1.0], HISTORY), "non-finite"),
        (lambda: msis([2.0], [1.0], [1.0], HISTORY), "lower must not exceed upper"),
        (lambda: msis([1.0], [2.0], [1.0], HISTORY, alpha=1.5), "alpha must lie in"),
    ],
)
def test_bad_inputs_are_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _paths() -> tuple[torch.Tensor, torch.Tensor]:
    """Two origins, two horizons, samples 0 … 4 (+10 at the second horizon).

    Sample quantiles (linear interpolation at position 4q): median 2, 25/75% 1 and 3,
    5/95% 0.2 and 3.8, 2.5/97.5% 0.1 and 3.9. Observed, less the shift: 2 and 5 at the first
    horizon, 5 and 2 at the second.
    """
    samples = torch.arange(5.0, dtype=torch.float64)
    paths = torch.stack([samples, samples + 10], dim=-1).expand(2, 5, 2).clone()
    observed = torch.tensor([[2.0, 15.0], [5.0, 12.0]], dtype=torch.float64)
    return paths, observed


def test_horizon_metrics_by_hand():
    paths, observed = _paths()
    got = horizon_metrics(paths, observed, insample=[0.0, 2.0], season=1)  # scale 2
    # CRPS = mean|x − y| − ½ mean|x − x'|; mean|x − x'| over 0 … 4 is 40/25 = 1.6.
    # y = 2: 1.2 − 0.8 = 0.4; y = 5: 3 − 0.8 = 2.2.
    expected = {
        "crps": (0.4 + 2.2) / 2,
        "mae": (0 + 3) / 2,
        "rmse": math.sqrt((0 + 9) / 2),
        "mase": (0 / 2 + 3 / 2) / 2,
        "msis": ((3.8 + 3.8 + 40 * (5 - 3.9)) / 2) / 2,
        "coverage_50": 0.5,
        "coverage_90": 0.5,
    }
    assert got["horizon"] == [1, 2]
    assert (got["origins"], got["samples"]) == (2, 5)
    for name, value in expected.items():
        assert got[name] == pytest.approx([value, value]), name


def test_horizon_metrics_scales_each_origin_by_its_own_history():
    paths, observed = _paths()
    histories = [torch.tensor([0.0, 1.0]), torch.tensor([0.0, 3.0])]  # scales 1 and 3
    got = horizon_metrics(paths, observed, histories)
    assert got["mase"] == pytest.approx([(0 / 1 + 3 / 3) / 2, (3 / 1 + 0 / 3) / 2])


def test_horizon_metrics_with_targets_averages_over_them():
    paths, observed = _paths()
    two = torch.stack([paths, paths], dim=-1)
    got = horizon_metrics(two, torch.stack([observed, observed], -1), np.array([[0, 0], [2, 2.0]]))
    one = horizon_metrics(paths, observed, [0.0, 2.0])
    for name in ("crps", "mae", "rmse", "mase", "msis", "coverage_90"):
        assert got[name] == pytest.approx(one[name])


def test_horizon_metrics_rejects_mismatched_shapes():
    paths, observed = _paths()
    with pytest.raises(ValueError, match="observed must be"):
        horizon_metrics(paths, observed[:, :1], [0.0, 2.0])
    with pytest.raises(ValueError, match="one per origin"):
        horizon_metrics(paths, observed, [torch.tensor([0.0, 1.0])])
    with pytest.raises(ValueError, match="paths must be"):
        horizon_metrics(paths[0], observed, [0.0, 2.0])
