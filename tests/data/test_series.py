"""Series corpora: chronological splits, train-only scaling, CSV and statsmodels loaders, errors."""

import builtins
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bayesrnn.data import DataError, SeriesCorpus, load_csv_series, load_statsmodels_series
from bayesrnn.data.series import split_series


def _raw(rows: int = 40) -> np.ndarray:
    generator = np.random.default_rng(0)
    trend = np.linspace(0.0, 50.0, rows)  # valid and test lie far above train
    return np.stack([trend + generator.normal(size=rows), generator.normal(5.0, 3.0, rows)], 1)


def test_scaling_uses_train_statistics_only():
    raw = _raw()
    corpus = split_series(raw, ("y", "x"), fractions=(0.5, 0.25, 0.25))
    train = raw[:20]
    np.testing.assert_allclose(corpus.mean.numpy(), train.mean(0))
    np.testing.assert_allclose(corpus.scale.numpy(), train.std(0))  # population sd
    expected = (raw - train.mean(0)) / train.std(0)
    np.testing.assert_allclose(corpus.full().numpy(), expected, rtol=1e-5, atol=1e-5)
    # the train split is standardised; the later splits are not (they are shifted up)
    np.testing.assert_allclose(corpus.train.double().mean(0).numpy(), [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(
        corpus.train.double().std(0, correction=0).numpy(), [1, 1], atol=1e-5
    )
    assert float(corpus.test[:, 0].mean()) > 2.0
    # changing valid/test changes nothing about the scaling
    altered = raw.copy()
    altered[20:] *= 100
    other = split_series(altered, ("y", "x"), fractions=(0.5, 0.25, 0.25))
    torch.testing.assert_close(other.mean, corpus.mean)
    torch.testing.assert_close(other.scale, corpus.scale)
    assert corpus.train.dtype == torch.float32


def test_split_is_chronological_and_complete():
    raw = _raw(41)
    times = np.arange(1900, 1941)
    corpus = split_series(raw, ("y", "x"), times=times)  # default 0.7 / 0.15 / 0.15
    assert corpus.sizes() == {"train": 28, "valid": 6, "test": 7}  # floor(28.7), floor(6.15)
    assert sum(corpus.sizes().values()) == 41
    assert corpus.test_start == 34
    back = np.stack([corpus.unscale(corpus.full()[:, c], c).numpy() for c in range(2)], 1)
    np.testing.assert_allclose(back, raw, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(corpus.full_times(), times)
    np.testing.assert_array_equal(corpus.times["valid"], times[28:34])
    assert corpus.columns == ("y", "x") and corpus.targets == 1
    assert corpus.target_columns == ("y",)
    assert float(corpus.unscale_spread(2.0, "y")) == pytest.approx(2 * raw[:28, 0].std())


def test_csv_round_trip(tmp_path):
    raw = _raw(30)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2020-01-01", periods=30, freq="D").astype(str),
            "temperature": raw[:, 1],
            "load": raw[:, 0],
            "ignored": np.arange(30),
        }
    )
    path = tmp_path / "grid.csv"
    frame.to_csv(path, index=False)
    corpus = load_csv_series(path, "load", ["temperature"], time="date")
    assert isinstance(corpus, SeriesCorpus)
    assert corpus.name == "grid" and corpus.columns == ("load", "temperature")
    assert corpus.targets == 1
    full = corpus.full()
    np.testing.assert_allclose(corpus.unscale(full[:, 0], "load").numpy(), raw[:, 0], atol=1e-4)
    np.testing.assert_allclose(corpus.unscale(full[:, 1], 1).numpy(), raw[:, 1], atol=1e-4)
    # dates in text become datetime64, which plots and the export take as times
    np.testing.assert_array_equal(corpus.full_times(), pd.to_datetime(frame["date"]).to_numpy())
    two = load_csv_series(path, ["load", "temperature"])
    assert two.targets == 2 and two.num_features == 2


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_errors_are_one_line_data_errors(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"y": [1.0, 2.0, None, 4.0] * 5, "x": ["a", "b", "c", "d"] * 5}).to_csv(
        path, index=False
    )
    with pytest.raises(DataError) as nan:
        load_csv_series(path, "y")
    assert "'y'" in _one_line(nan) and "missing" in str(nan.value)
    with pytest.raises(DataError) as absent:
        load_csv_series(path, "load", ["y"])
    assert "'load'" in _one_line(absent) and "['y', 'x']" in str(absent.value)
    with pytest.raises(DataError) as text:
        load_csv_series(path, "y", ["x"])
    assert "'x'" in _one_line(text) and "numeric" in str(text.value)
    short = tmp_path / "short.csv"
    pd.DataFrame({"y": np.arange(8.0)}).to_csv(short, index=False)
    with pytest.raises(DataError) as too_short:
        load_csv_series(short, "y")
    assert "too short" in _one_line(too_short)
    with pytest.raises(DataError) as nan_array:
        split_series(np.array([1.0, np.nan, 3.0] * 10), ("y",))
    assert "'y'" in _one_line(nan_array)
    assert issubclass(DataError, ValueError)
    with pytest.raises(FileNotFoundError):
        load_csv_series(tmp_path / "absent.csv", "y")
    with pytest.raises(ValueError, match="fractions"):
        split_series(np.arange(40.0), ("y",), fractions=(0.5, 0.5, 0.5))


def test_sunspots_is_the_yearly_series_of_309_values():
    corpus = load_statsmodels_series()
    assert corpus.name == "sunspots" and corpus.columns == ("SUNACTIVITY",)
    assert sum(corpus.sizes().values()) == 309
    years = corpus.full_times()
    assert years[0] == 1700 and years[-1] == 2008
    values = corpus.unscale(corpus.full()[:, 0]).numpy()
    # Wolf's yearly sunspot numbers for 1700–1702 and 2008
    np.testing.assert_allclose(values[:3], [5.0, 11.0, 16.0], atol=1e-4)
    assert values[-1] == pytest.approx(2.9, abs=1e-4)
    train = values[: corpus.sizes()["train"]]
    assert float(corpus.mean[0]) == pytest.approx(train.mean())


def test_co2_fills_its_missing_weeks_by_linear_interpolation():
    from statsmodels import datasets

    raw = datasets.co2.load_pandas().data["co2"].to_numpy()
    assert int(np.isnan(raw).sum()) == 59
    corpus = load_statsmodels_series("co2")
    assert sum(corpus.sizes().values()) == 2284
    values = corpus.unscale(corpus.full()[:, 0]).numpy()
    assert np.isfinite(values).all()
    measured = ~np.isnan(raw)
    np.testing.assert_allclose(values[measured], raw[measured], atol=1e-3)
    assert np.isnan(raw[6]) and values[6] == pytest.approx((raw[5] + raw[7]) / 2, abs=1e-3)
    assert np.isnan(raw[9:14]).all()  # a five-week gap between weeks 8 and 14
    for k, week in enumerate(range(9, 14), start=1):
        assert values[week] == pytest.approx(raw[8] + k * (raw[14] - raw[8]) / 6, abs=1e-3)
    assert corpus.full_times()[0] == np.datetime64("1958-03-29")


def test_missing_statsmodels_names_the_timeseries_extra(monkeypatch):
    real_import = builtins.__import__

    def without_statsmodels(name, *args, **kwargs):
        if name == "statsmodels" or name.startswith("statsmodels."):
            raise ModuleNotFoundError("No module named 'statsmodels'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_statsmodels)
    with pytest.raises(ImportError, match=r"timeseries"):
        load_statsmodels_series("sunspots")
    with pytest.raises(ValueError, match="known"):
        load_statsmodels_series("airline")


def test_corpus_is_frozen_and_checks_its_fields():
    corpus = split_series(np.arange(20.0), ("y",))
    with pytest.raises(AttributeError):
        corpus.name = "other"
    assert math.isclose(float(corpus.unscale(0.0)), float(np.arange(14.0).mean()))
    with pytest.raises(ValueError, match="column"):
        corpus.unscale(1.0, column="nope")


def test_a_time_column_of_neither_numbers_nor_dates_is_a_data_error(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("when,y\n" + "".join(f"day {i},{i}\n" for i in range(20)))
    with pytest.raises(DataError, match=r"odd.csv: time column 'when' holds neither numbers"):
        load_csv_series(path, "y", time="when")


def test_the_auto_transform_takes_the_root_of_count_like_series_only():
    from bayesrnn.data.transforms import auto_transform

    counts = np.array([0.0, 5.0, 40.0, 90.0, 3.0, 60.0, 10.0, 0.0])  # lowest 0 < sd
    assert auto_transform(counts, 6) == "sqrt"
    level = counts + 300.0  # the same spread far from 0: lowest 300 > sd
    assert auto_transform(level, 6) == "none"
    assert auto_transform(counts - 1.0, 6) == "none"  # a value below 0: no root
    # a later negative value rules the root out as well (it would have no inverse there)
    assert auto_transform(np.append(counts[:6], [-1.0, 2.0]), 6) == "none"
    corpus = split_series(counts, ["y"], transform="auto", fractions=(0.5, 0.25, 0.25))
    assert corpus.transform.kind == "sqrt"
    expected = (np.sqrt(counts) - np.sqrt(counts[:4]).mean()) / np.sqrt(counts[:4]).std()
    np.testing.assert_allclose(corpus.full()[:, 0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_elnino_is_read_month_by_month():
    pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")
    from statsmodels import datasets

    frame = datasets.elnino.load_pandas().data
    corpus = load_statsmodels_series("elnino")
    assert sum(corpus.sizes().values()) == 61 * 12 and corpus.columns == ("temperature",)
    values = corpus.observed(0, 24)[:, 0].numpy()
    # January to December of 1950, then of 1951: the table's rows one after the other
    np.testing.assert_array_equal(values[:12], frame.iloc[0, 1:].to_numpy(dtype=float))
    np.testing.assert_array_equal(values[12:], frame.iloc[1, 1:].to_numpy(dtype=float))
    times = corpus.full_times()
    assert str(times[0]) == "1950-01-01" and str(times[13]) == "1951-02-01"
