"""Lagged target values as input features: built by hand on tiny series, no look-ahead."""

import numpy as np
import pytest
import torch

from bayesrnn.data.lags import (
    auto_lags,
    check_lags,
    insert_lags,
    lag_columns,
    lag_names,
    seasonal_lag,
    with_lags,
)
from bayesrnn.data.series import split_series


def test_lag_columns_of_a_tiny_series_by_hand():
    y = torch.tensor([[10.0], [11.0], [12.0], [13.0], [14.0]])
    got = lag_columns(y, (2, 3))
    # row t of lag ℓ is y[t + 1 − ℓ]; before the series begins, its first value
    expected = torch.tensor([[10.0, 10.0], [10.0, 10.0], [11.0, 10.0], [12.0, 11.0], [13.0, 12.0]])
    torch.testing.assert_close(got, expected)
    assert lag_columns(y, ()).shape == (5, 0)


def test_two_targets_are_laid_out_lag_by_lag_after_the_targets():
    rows = torch.tensor([[1.0, 100.0, 7.0], [2.0, 200.0, 8.0], [3.0, 300.0, 9.0]])
    got = insert_lags(rows, targets=2, lags=(2, 3))
    expected = torch.tensor(
        [
            [1.0, 100.0, 1.0, 100.0, 1.0, 100.0, 7.0],
            [2.0, 200.0, 1.0, 100.0, 1.0, 100.0, 8.0],
            [3.0, 300.0, 2.0, 200.0, 1.0, 100.0, 9.0],
        ]
    )
    torch.testing.assert_close(got, expected)
    assert lag_names(("a", "b"), (2, 3)) == ("a_lag2", "b_lag2", "a_lag3", "b_lag3")


def test_a_lag_column_never_reads_the_row_it_sits_in_or_later():
    y = torch.randn(30, 1, generator=torch.Generator().manual_seed(0))
    before = lag_columns(y, (2, 5, 12))
    for t in range(1, 30):  # row 0 has no past: its lag columns repeat its own value
        poisoned = y.clone()
        poisoned[t:] = 1e6  # every value from row t on
        after = lag_columns(poisoned, (2, 5, 12))
        torch.testing.assert_close(after[: t + 1], before[: t + 1])


def test_a_corpus_with_lags_keeps_its_splits_and_reads_across_them():
    values = np.arange(20, dtype=np.float64) ** 1.5
    corpus = split_series(values, ["y"], name="toy")
    lagged = with_lags(corpus, (2, 4))
    assert lagged.sizes() == corpus.sizes() and lagged.lags == (2, 4)
    assert lagged.columns == ("y", "y_lag2", "y_lag4")
    torch.testing.assert_close(lagged.mean, corpus.mean.repeat(3))
    torch.testing.assert_close(lagged.scale, corpus.scale.repeat(3))
    z = corpus.full()[:, 0]
    # the first valid row's lag 2 is the last train value, lag 4 three rows before it
    first = lagged.sizes()["train"]
    assert float(lagged.valid[0, 1]) == float(z[first - 1])
    assert float(lagged.valid[0, 2]) == float(z[first - 3])
    torch.testing.assert_close(lagged.full()[:, 0], z)
    assert with_lags(corpus, ()) is corpus
    with pytest.raises(ValueError, match="already has lag columns"):
        with_lags(lagged, (3,))


@pytest.mark.parametrize(
    "lags, message",
    [
        ((1,), r"\[2, 10000\]"),
        ((0,), r"\[2, 10000\]"),
        ((2, 2), "distinct"),
        ((True,), "integer"),
        ((2.5,), "integer"),
        (3, "list of integers"),
        ("2,3", "list of integers"),
    ],
)
def test_bad_lags_are_clear_errors(lags, message):
    with pytest.raises(ValueError, match=message):
        check_lags(lags)


def test_the_season_of_a_noisy_cycle_is_read_off_its_changes():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    # a 12-step cycle over a trend, with smooth (short-range correlated) noise
    noise = np.convolve(rng.normal(size=602), [1.0, 1.0, 1.0], "valid")
    series = 0.05 * t + 2 * np.sin(2 * np.pi * t / 12) + 0.2 * noise
    assert seasonal_lag(series) == 12  # not 24 or 36, nor the noise's 1–2
    assert auto_lags(series[:, None]) == (2, 3, 12, 13)
    white = rng.normal(size=600)
    assert seasonal_lag(white) is None and auto_lags(white[:, None]) == (2, 3)


def test_auto_lags_on_the_bundled_series():
    pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")
    from bayesrnn.data.series import load_statsmodels_series

    seasons = {"sunspots": 11, "co2": 53, "elnino": 12}
    for name, season in seasons.items():
        corpus = load_statsmodels_series(name)
        lagged = with_lags(corpus, "auto")
        assert lagged.lags == (2, 3, season, season + 1), name
