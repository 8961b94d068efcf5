"""Multi-step forecasts of a trained forecasting run, in the data's units.

The run's model reads scaled rows; the scaling (training mean and standard deviation of every
column) is stored with the run in ``vocab.json``, so histories and covariates given in the
data's units are scaled here with the run's own numbers, never refitted, and the paths are
scaled back with them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from bayesrnn.app.run_dir import JobError
from bayesrnn.data.lags import insert_lags
from bayesrnn.data.transforms import SeriesTransform
from bayesrnn.evaluation.forecast_paths import sample_paths
from bayesrnn.evaluation.path_forecast import PathForecast

__all__ = ["SeriesScaling", "forecast_run", "next_times"]

_HISTORY_SHOWN = 60  # observed values drawn before the fan


class SeriesScaling:
    """A run's columns (targets first, then the lag columns of its ``lags``, then covariates),
    the transform g of its targets and the training mean and scale: the model sees
    (g(x) − mean)/scale for a target and its lags, (x − mean)/scale for a covariate."""

    def __init__(self, info: Mapping) -> None:
        self.columns = tuple(str(c) for c in info["columns"])
        self.targets = int(info["targets"])
        self.lags = tuple(int(v) for v in info.get("lags", ()))
        self.mean = torch.tensor(info["mean"], dtype=torch.float64)
        self.scale = torch.tensor(info["scale"], dtype=torch.float64)
        self.transform = SeriesTransform.from_dict(info.get("transform"))
        lagged = slice(self.targets, self.targets * (1 + len(self.lags)))
        keep = [i for i in range(len(self.columns)) if not lagged.start <= i < lagged.stop]
        self._data = torch.tensor(keep)  # the columns the data has (no lag columns)

    @classmethod
    def of_corpus(cls, corpus) -> SeriesScaling:
        transform = getattr(corpus, "transform", None)
        return cls(
            {
                "columns": corpus.columns,
                "targets": corpus.targets,
                "mean": [float(v) for v in corpus.mean],
                "scale": [float(v) for v in corpus.scale],
                "transform": None if transform is None else transform.to_dict(),
                "lags": list(getattr(corpus, "lags", ())),
            }
        )

    @property
    def data_columns(self) -> tuple[str, ...]:
        """The columns a history in the data's units has: targets, then covariates."""
        return tuple(self.columns[i] for i in self._data.tolist())

    @property
    def covariates(self) -> tuple[str, ...]:
        return self.data_columns[self.targets :]

    def scaled(self, values: Tensor, first: int = 0) -> Tensor:
        """Raw values of data columns ``first`` … (see :attr:`data_columns`) in the model's
        units."""
        width = values.shape[-1]
        targets = max(0, min(width, self.targets - first))  # target columns in this slice
        if targets and self.transform.kind != "none":
            values = values.double().clone()
            values[..., :targets] = self.transform.forward(values[..., :targets])
        columns = self._data[first : first + width]
        return (values - self.mean[columns]) / self.scale[columns]

    def rows(self, values: Tensor) -> Tensor:
        """A history in the data's units (N, data columns) as the model's rows: scaled, with
        the lag columns of its targets."""
        return insert_lags(self.scaled(values), self.targets, self.lags)

    def raw(self, values: Tensor) -> Tensor:
        """Scaled target values back in the data's units."""
        d = values.shape[-1]
        return self.transform.inverse(values.double() * self.scale[:d] + self.mean[:d])


def next_times(times: np.ndarray, horizon: int) -> np.ndarray | None:
    """The ``horizon`` times after ``times`` when they are evenly spaced numbers, or dates of a
    regular calendar frequency (monthly, weekly, …); None otherwise."""
    times = np.asarray(times)
    if times.ndim != 1 or times.shape[0] < 2:
        return None
    if times.dtype.kind in "iuf":
        steps = np.diff(times)
        if steps[-1] > 0 and np.allclose(steps, steps[-1], rtol=1e-9, atol=0):
            return times[-1] + steps[-1] * np.arange(1, horizon + 1)
        return None
    if times.dtype.kind == "M":
        import pandas

        index = pandas.DatetimeIndex(times[-min(len(times), 50) :])
        freq = pandas.infer_freq(index) if len(index) >= 3 else None
        if freq is None:
            return None
        future = pandas.date_range(index[-1], periods=horizon + 1, freq=freq)[1:]
        return future.to_numpy()
    return None


def _as_rows(values: object, name: str, width: int) -> Tensor:
    """(N, width) float64 values from a tensor, array, sequence or DataFrame; (N,) when
    ``width`` is 1."""
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric: {error}") from None
    if array.ndim == 1 and width == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must be (N, {width}) values, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains missing or non-finite values")
    return torch.from_numpy(array.copy())


def _run_history(run, scaling: SeriesScaling) -> tuple[Tensor, np.ndarray]:
    """The run's whole series (train, valid, test) in the data's units, with its times."""
    from bayesrnn.app.setup import load_data

    corpus = load_data(run.config)
    same = tuple(corpus.columns) == scaling.columns and all(
        torch.allclose(now.double(), then, rtol=1e-6, atol=0)
        for now, then in ((corpus.mean, scaling.mean), (corpus.scale, scaling.scale))
    )
    if not same:
        raise JobError(
            f"the data {run.config.data.source!r} now differs from the series {run.path} was "
            "trained on (other columns or training statistics); give the history yourself"
        )
    full = corpus.full().double()
    first = scaling.targets * (1 + len(scaling.lags))  # the covariates follow the lag columns
    covariates = full[:, first:] * corpus.scale[first:] + corpus.mean[first:]
    targets = corpus.observed(0, full.shape[0])  # as read: no transform, no lag columns
    return torch.cat([targets, covariates], -1), corpus.full_times()


def _checked_rows(scaling, raw: Tensor) -> Tensor:
    """A history's model rows (scaled, with its lag columns), after checking that every scaled
    value fits float32."""
    scaled = _in_float32(scaling.scaled(raw), scaling.columns, "history")
    return insert_lags(scaled, scaling.targets, scaling.lags)


def _in_float32(scaled: Tensor, columns: tuple[str, ...], what: str) -> Tensor:
    """Scaled rows as the float32 the model reads; a value that does not fit (it lies beyond
    ~10³⁸ training standard deviations) is a ValueError naming its column and row."""
    rows = scaled.float()
    beyond = ~torch.isfinite(rows)
    if bool(beyond.any()):
        row, col = (int(i) for i in beyond.nonzero()[0])
        raise ValueError(
            f"{what} column {columns[col]!r} row {row} lies {float(scaled[row, col]):.3g} training "
            "standard deviations from the training mean, beyond float32; rescale or drop it"
        )
    return rows


def forecast_run(
    run,
    horizon: int,
    num_samples: int,
    history: object = None,
    covariates: object = None,
) -> PathForecast:
    """:meth:`TrainedRun.forecast`'s work: scale, sample paths, scale back, time the steps."""
    if run.config.task != "forecast":
        raise JobError(f"forecast needs a forecasting run; this is a {run.config.task} run")
    for name, value in (("horizon", horizon), ("num_samples", num_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    scaling: SeriesScaling = run.series
    width = len(scaling.data_columns)
    if history is None:
        raw, times = _run_history(run, scaling)
        future = next_times(times, horizon)
    else:
        raw = _as_rows(history, "history", width)
        times = np.arange(raw.shape[0])
        future = None
    if future is None:
        future = np.arange(raw.shape[0], raw.shape[0] + horizon)
    scaled_covariates = None
    if scaling.covariates:
        if covariates is None:
            raise ValueError(
                f"the run reads covariates {list(scaling.covariates)}: give their values for "
                f"the {horizon} forecast steps as covariates ({horizon} rows)"
            )
        extra = _as_rows(covariates, "covariates", len(scaling.covariates))
        if extra.shape[0] != horizon:
            raise ValueError(
                f"covariates must have one row per forecast step ({horizon}), got {extra.shape[0]}"
            )
        scaled_covariates = _in_float32(
            scaling.scaled(extra, scaling.targets), scaling.covariates, "covariates"
        )
    elif covariates is not None:
        raise ValueError("the run reads no covariates; leave covariates out")
    paths = sample_paths(
        run.model,
        run.guide,
        _checked_rows(scaling, raw),
        horizon,
        num_samples,
        covariates=scaled_covariates,
    )
    shown = min(raw.shape[0], max(_HISTORY_SHOWN, 4 * horizon))
    return PathForecast(
        paths=scaling.raw(paths.cpu()),
        times=future,
        columns=scaling.columns[: scaling.targets],
        history=raw[-shown:, : scaling.targets],
        history_times=np.asarray(times)[-shown:],
    )
