"""Rolling-origin backtests and the classical forecasters: protocol, no look-ahead, exact paths."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from bayesrnn.evaluation.backtest import backtest_paths, rolling_origin
from bayesrnn.evaluation.classical import (
    ARIMA,
    ETS,
    Climatology,
    Persistence,
    SeasonalNaive,
    classical_forecasters,
    gaussian_paths,
)

pytest.importorskip("statsmodels", reason="ARIMA and ETS need the timeseries extra")


def normal_scores(count: int) -> np.ndarray:
    """Φ⁻¹((i + ½)/S), from SciPy rather than torch."""
    return scipy.stats.norm.ppf((np.arange(count) + 0.5) / count)


def seasonal_series(length: int = 80, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return torch.tensor(10 + 3 * np.sin(2 * np.pi * t / 4) + 0.05 * t + rng.normal(0, 0.5, length))


def test_origins_follow_start_stride_and_whole_horizons():
    series = torch.arange(20.0)
    seen = []

    def spy(history, horizon):
        seen.append(history.clone())
        return torch.zeros(3, horizon)

    origins, paths, observed = backtest_paths(series, spy, start=10, horizon=3, stride=2)
    assert origins == [10, 12, 14, 16]  # 18 + 3 > 20
    assert paths.shape == (4, 3, 3)
    assert observed.tolist() == [[10, 11, 12], [12, 13, 14], [14, 15, 16], [16, 17, 18]]
    for origin, history in zip(origins, seen, strict=True):
        assert history.tolist() == list(range(origin))  # strictly before the origin


def test_persistence_on_a_line_misses_by_h():
    series = torch.arange(30.0)
    metrics = rolling_origin(series, Persistence(series[:10] ** 2), start=10, horizon=3, stride=1)
    # the forecast of y_{t+h−1} from y_{t−1} misses by h; the naive in-sample error is 1
    assert metrics["mae"] == pytest.approx([1.0, 2.0, 3.0])
    assert metrics["mase"] == pytest.approx([1.0, 2.0, 3.0])
    assert metrics["origin_rows"] == list(range(10, 28))
    # a series of one column (rows of a SeriesCorpus) gets paths with a targets dimension
    column = rolling_origin(series[:, None], Persistence(series[:10] ** 2), 10, 3)
    assert column["mae"] == pytest.approx([1.0, 2.0, 3.0])


def test_persistence_and_seasonal_naive_paths_are_exact():
    fit = torch.tensor([1.0, 4.0, 2.0, 5.0, 3.0, 9.0, 4.0], dtype=torch.float64)
    history = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    z = normal_scores(7)
    sigma = np.std(np.diff(fit.numpy()), ddof=1)
    got = Persistence(fit, num_samples=7)(history, 4)
    expected = 4.0 + sigma * np.sqrt(np.arange(1, 5))[None, :] * z[:, None]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)

    # season 2: the last season repeats (3, 4, 3, 4), the spread grows per completed season
    sigma2 = np.std(fit.numpy()[2:] - fit.numpy()[:-2], ddof=1)
    got = SeasonalNaive(fit, season=2, num_samples=7)(history, 5)
    means = np.array([3.0, 4.0, 3.0, 4.0, 3.0])
    spreads = sigma2 * np.sqrt([1, 1, 2, 2, 3])
    np.testing.assert_allclose(got.numpy(), means + spreads * z[:, None], rtol=1e-12)

    got = Climatology(fit, num_samples=7)(history, 2)
    np.testing.assert_allclose(got.numpy()[:, 0], fit.mean().item() + fit.std().item() * z)


def test_gaussian_paths_match_the_normal_quantiles():
    paths = gaussian_paths([1.0, -2.0], [0.5, 2.0], num_samples=1000)
    assert paths.shape == (1000, 2)
    assert paths.mean(0).tolist() == pytest.approx([1.0, -2.0], abs=1e-9)  # symmetric scores
    # the 95th percentile of the scores is the normal's, to the grid's resolution
    assert float(torch.quantile(paths[:, 1], 0.95)) == pytest.approx(-2.0 + 2.0 * 1.6449, abs=0.01)


def test_the_backtest_never_sees_the_future():
    """Poison every value from an origin on: no forecast from that origin may change."""
    series = seasonal_series(48)
    train, valid = series[:24], series[24:32]
    forecasters = {
        "persistence": Persistence(train, num_samples=5),
        "seasonal_naive": SeasonalNaive(train, 4, num_samples=5),
        "arima": ARIMA.select(train, valid, 4, orders=[(1, 0, 0)], num_samples=5),
        "ets": ETS.select(train, valid, 4, trends=["additive"], num_samples=5),
    }
    start, horizon, stride = 32, 4, 4
    clean = {
        name: backtest_paths(series, f, start, horizon, stride)[1]
        for name, f in forecasters.items()
    }
    for index, origin in enumerate(range(start, 48 - horizon + 1, stride)):
        poisoned = series.clone()
        poisoned[origin:] = 1e12 * torch.where(torch.arange(48 - origin) % 2 == 0, 1.0, -1.0)
        for name, forecaster in forecasters.items():
            _, paths, _ = backtest_paths(poisoned, forecaster, origin, horizon, stride=100)
            torch.testing.assert_close(paths[0], clean[name][index], rtol=1e-9, atol=1e-9)


def test_arima_recovers_an_ar1_and_forecasts_phi_to_the_h():
    phi, length = 0.7, 600
    rng = np.random.default_rng(0)  # its first 400 values give the least-squares φ 0.693
    noise = rng.normal(0, 1.0, length)
    values = np.zeros(length)
    for t in range(1, length):
        values[t] = phi * values[t - 1] + noise[t]
    arima = ARIMA.select(values[:400], values[400:500], orders=[(1, 0, 0), (0, 0, 1), (0, 1, 0)])
    assert arima.order == (1, 0, 0)
    assert arima.validation[(1, 0, 0)] > arima.validation[(0, 0, 1)]
    params = dict(zip(arima.results.model.param_names, arima.results.params, strict=True))
    assert params["ar.L1"] == pytest.approx(phi, abs=0.07)
    mean = params["intercept"] / (1 - params["ar.L1"])
    assert abs(mean) < 0.3
    history = values[:550]
    got_mean, got_sd = arima.predict(history, 5)
    h = np.arange(1, 6)
    phi_hat = params["ar.L1"]
    expected = mean + phi_hat**h * (history[-1] - mean)  # = φ^h y when the mean is 0
    np.testing.assert_allclose(got_mean, expected, rtol=1e-8)
    variance = params["sigma2"] * np.cumsum(phi_hat ** (2 * (h - 1)))
    np.testing.assert_allclose(got_sd, np.sqrt(variance), rtol=1e-6)
    # the incremental filter (extend) gives what filtering the whole history again gives
    later = values[:560]
    incremental = arima.predict(later, 3)[0]
    arima._cache = None
    np.testing.assert_allclose(incremental, arima.predict(later, 3)[0], rtol=1e-9)


def test_ets_without_trend_is_simple_exponential_smoothing():
    rng = np.random.default_rng(2)
    values = 5 + np.cumsum(rng.normal(0, 0.3, 200)) + rng.normal(0, 0.5, 200)
    ets = ETS.select(values[:150], values[150:180], trends=["none"])
    alpha, level = (float(v) for v in ets.params)  # smoothing_level, initial_level
    for y in values[:190]:
        level = level + alpha * (y - level)
    mean, sd = ets.predict(values[:190], 4)
    np.testing.assert_allclose(mean, level, rtol=1e-8)
    # ETS(A,N,N): var_h = σ²(1 + (h − 1)α²), so the ratios to h = 1 are free of σ²
    ratios = (sd / sd[0]) ** 2
    np.testing.assert_allclose(ratios, 1 + np.arange(4) * alpha**2, rtol=1e-6)


def test_classical_forecasters_and_their_backtest():
    series = seasonal_series(80)
    forecasters = classical_forecasters(series[:50], series[50:60], season=4, orders=[(0, 1, 1)])
    assert list(forecasters) == ["persistence", "seasonal_naive", "climatology", "arima", "ets"]
    scores = rolling_origin(series, forecasters, start=60, horizon=4, stride=4, season=4)
    assert set(scores) == set(forecasters)
    for metrics in scores.values():
        assert metrics["origins"] == 5 and len(metrics["crps"]) == 4
        assert all(math.isfinite(v) for v in metrics["msis"])
    # a clear season: the seasonal naive forecast beats climatology at every horizon
    assert all(
        s < c
        for s, c in zip(
            scores["seasonal_naive"]["crps"], scores["climatology"]["crps"], strict=True
        )
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 18, "horizon": 3}, "must not exceed the series length"),
        ({"start": 10, "horizon": 0}, "horizon must be an integer"),
        ({"start": 10, "horizon": 2, "stride": 0}, "stride must be an integer"),
        ({"start": 0, "horizon": 2}, "start must be an integer"),
    ],
)
def test_bad_backtest_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rolling_origin(torch.arange(20.0), Persistence(torch.arange(5.0) ** 2), **kwargs)


def test_a_forecaster_with_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"must return paths \(S, 3\) at origin 10"):
        rolling_origin(torch.arange(20.0), lambda h, n: torch.zeros(5, n + 1), 10, 3)
    with pytest.raises(ValueError, match="non-finite"):
        rolling_origin(torch.tensor([1.0, float("nan"), 2.0, 3.0]), lambda h, n: h, 1, 1)
