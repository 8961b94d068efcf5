"""Real-valued time series for forecasting: chronological splits, train-only scaling, loaders.

A :class:`SeriesCorpus` holds three float32 tensors of rows (N_split, F): the ``targets``
columns first, then covariates, then covariates known in advance, each column standardised with
the mean and standard deviation of the *training* split only, so nothing about the valid or
test periods leaks into the inputs. Splits are chronological and complete: train, then valid,
then test, every row in exactly one.

The model reads row t to forecast row t + 1. Ordinary covariates therefore enter lagged (row
t's price informs row t + 1's sales); a covariate known in advance (a calendar feature, a
planned promotion) is moved up one row, so that row t carries row t + 1's value and it enters
at the step it applies to (the last row, whose successor is unknown, repeats its own value).
Positive targets may be transformed first (log, √, Box-Cox: :mod:`bayesrnn.data.transforms`).

Loaders: :func:`load_statsmodels_series` (``"sunspots"``, ``"co2"``, ``"elnino"``: data that
ship with statsmodels, no download; needs the ``timeseries`` extra) and
:func:`load_csv_series` (any CSV through pandas). Bad data is a
:class:`~bayesrnn.data.checksums.DataError` with a one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bayesrnn.data.checksums import DataError, DataNotFoundError
from bayesrnn.data.series_csv import csv_values, read_csv_table
from bayesrnn.data.transforms import (
    AUTO_TRANSFORM,
    SeriesTransform,
    TargetUnits,
    auto_transform,
    check_domain,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "MAX_MAGNITUDE",
    "MIN_SPLIT_ROWS",
    "STATSMODELS_SERIES",
    "SeriesCorpus",
    "load_csv_series",
    "load_statsmodels_series",
    "series_matrix",
    "split_series",
]

SPLITS = ("train", "valid", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
MIN_SPLIT_ROWS = 2  # one row to predict from and one to predict, in every split
# The largest magnitude a series value may have: the training statistics square the values,
# and (1e150)² summed over up to 1e8 rows stays below float64's 1.8e308.
MAX_MAGNITUDE = 1e150
STATSMODELS_SERIES = ("sunspots", "co2", "elnino")
_EXTRA_HINT = "install the timeseries extra: pip install 'bayesrnn[timeseries]'"


@dataclass(frozen=True, eq=False)
class SeriesCorpus:
    """Train/valid/test rows of a (multivariate) series, scaled with training statistics.

    ``train``, ``valid``, ``test``: float32 (N_split, F); ``columns``: the F column names, the
    ``targets`` target columns first; ``mean``, ``scale``: (F,) float64, fitted on train
    (population standard deviation; a column constant on train gets scale 1); ``times``: per
    split, the time of each row (years, dates or row numbers) as a NumPy array, for plots.
    ``transform``: g applied to the target columns before scaling; ``future``: how many of the
    last columns are covariates known in advance (moved up one row); ``raw_targets``: the
    target values as read, all rows (the observations scored, free of float32 round trips).
    ``lags``: the lags whose columns follow the targets (:func:`bayesrnn.data.lags.with_lags`).
    A scaled target value v is ``(g(raw) − mean) / scale``, a covariate's
    ``(raw − mean) / scale``.
    """

    train: Tensor
    valid: Tensor
    test: Tensor
    columns: tuple[str, ...]
    targets: int
    mean: Tensor
    scale: Tensor
    times: Mapping[str, np.ndarray]
    name: str
    transform: SeriesTransform = field(default_factory=SeriesTransform)
    future: int = 0
    raw_targets: Tensor | None = None  # (N, targets) float64, the data's own target values
    lags: tuple[int, ...] = ()  # lag columns right after the targets (bayesrnn.data.lags)

    def __post_init__(self) -> None:
        features = len(self.columns)
        if not 1 <= self.targets <= features:
            raise ValueError(f"targets must lie in [1, {features}], got {self.targets!r}")
        for split in SPLITS:
            rows = getattr(self, split)
            if not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[1] != features:
                raise ValueError(f"SeriesCorpus.{split} must be a (N, {features}) tensor")
            if len(self.times[split]) != rows.shape[0]:
                raise ValueError(f"SeriesCorpus.times[{split!r}] must have one time per row")
        for name in ("mean", "scale"):
            if tuple(getattr(self, name).shape) != (features,):
                raise ValueError(f"SeriesCorpus.{name} must have shape ({features},)")
        lagged = self.targets * (1 + len(self.lags))
        if lagged > features:
            raise ValueError(f"{len(self.lags)} lags of {self.targets} targets need more columns")
        if not 0 <= self.future <= features - lagged:
            raise ValueError(f"future must lie in [0, {features - lagged}]")
        rows = sum(getattr(self, split).shape[0] for split in SPLITS)
        if self.raw_targets is not None and tuple(self.raw_targets.shape) != (rows, self.targets):
            raise ValueError(f"SeriesCorpus.raw_targets must have shape ({rows}, {self.targets})")

    @property
    def target_units(self) -> TargetUnits:
        """The map between the model's target values and the data's units."""
        d = self.targets
        return TargetUnits(self.transform, self.mean[:d], self.scale[:d])

    @property
    def future_columns(self) -> tuple[str, ...]:
        """The covariates known in advance (each row holds the next row's value)."""
        return self.columns[len(self.columns) - self.future :] if self.future else ()

    @property
    def num_features(self) -> int:
        return len(self.columns)

    @property
    def target_columns(self) -> tuple[str, ...]:
        return self.columns[: self.targets]

    @property
    def test_start(self) -> int:
        """The row of :meth:`full` where the test split begins."""
        return self.train.shape[0] + self.valid.shape[0]

    def split(self, name: str) -> Tensor:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def full(self) -> Tensor:
        """All rows in time order, (N, F): train, then valid, then test."""
        return torch.cat([self.train, self.valid, self.test])

    def observed(self, start: int, end: int) -> Tensor:
        """The target values of rows ``start`` … ``end`` − 1 of :meth:`full` in the data's
        units (float64): as read when known, else mapped back from the scaled rows."""
        if self.raw_targets is not None:
            return self.raw_targets[start:end].clone()
        return self.target_units.to_data(self.full()[start:end, : self.targets].double())

    def full_times(self) -> np.ndarray:
        return np.concatenate([self.times[split] for split in SPLITS])

    def sizes(self) -> dict[str, int]:
        """Rows per split."""
        return {split: int(getattr(self, split).shape[0]) for split in SPLITS}

    def _column_index(self, column: int | str) -> int:
        if isinstance(column, str):
            if column not in self.columns:
                raise ValueError(f"column {column!r} is not one of {list(self.columns)}")
            return self.columns.index(column)
        if isinstance(column, bool) or not isinstance(column, int):
            raise ValueError(f"column must be an index or a name, got {column!r}")
        if not -len(self.columns) <= column < len(self.columns):
            raise ValueError(f"column {column} is out of range for {len(self.columns)} columns")
        return column % len(self.columns)

    def unscale(self, values: Tensor | np.ndarray | float, column: int | str = 0) -> Tensor:
        """Scaled values of one column back in the data's units: v·scale + mean, then g⁻¹ for
        a transformed target column (float64)."""
        index = self._column_index(column)
        values = torch.as_tensor(values, dtype=torch.float64)
        raw = values * self.scale[index] + self.mean[index]
        if index < self.targets and self.transform.kind != "none":
            one = SeriesTransform(
                self.transform.kind,
                None if self.transform.lmbda is None else (self.transform.lmbda[index],),
            )
            return one.inverse(raw.unsqueeze(-1)).squeeze(-1)
        return raw

    def unscale_spread(self, values: Tensor | np.ndarray | float, column: int | str = 0) -> Tensor:
        """Spreads of one column (scales, interval widths, RMSE, CRPS) in the data's units;
        a transformed target has no such linear map (back-transform quantiles instead)."""
        index = self._column_index(column)
        if index < self.targets and self.transform.kind != "none":
            raise ValueError(
                f"column {self.columns[index]!r} is modelled after a {self.transform.kind} "
                "transform: a spread has no single value in the data's units"
            )
        return torch.as_tensor(values, dtype=torch.float64) * self.scale[index]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or not all(f > 0 for f in values) or not math.isclose(sum(values), 1.0):
        raise ValueError(
            f"fractions must be three positive numbers (train, valid, test) summing to 1, got "
            f"{tuple(fractions)!r}"
        )
    return values  # type: ignore[return-value]


def series_matrix(values: object, columns: Sequence[str]) -> np.ndarray:
    """``values`` as a float64 (N, len(columns)) array whose every value is finite, at most
    :data:`MAX_MAGNITUDE` in size and not subnormal; else a DataError naming column and row."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"series values must be numeric: {error}") from error
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != len(columns):
        raise DataError(
            f"series values must be (N, {len(columns)}) for columns {list(columns)}, "
            f"got shape {array.shape}"
        )
    missing = ~np.isfinite(array)
    if missing.any():
        row, col = (int(i) for i in np.argwhere(missing)[0])
        raise DataError(
            f"column {columns[col]!r} has {int(missing[:, col].sum())} missing or non-finite "
            f"values (first at row {row}); fill or drop them before loading"
        )
    magnitude = np.abs(array)
    for test, why in (
        (magnitude > MAX_MAGNITUDE, f"beyond ±{MAX_MAGNITUDE:g}: its square overflows float64"),
        (
            (magnitude > 0) & (magnitude < np.finfo(np.float64).tiny),
            "subnormal (nonzero, below 2.2e-308): it has lost its precision",
        ),
    ):
        if test.any():
            row, col = (int(i) for i in np.argwhere(test)[0])
            raise DataError(
                f"column {columns[col]!r} row {row}: {float(array[row, col])!r} is {why}; "
                "rescale the column (e.g. to other units) before loading"
            )
    return array


def _check_varies(raw: np.ndarray, columns: Sequence[str], targets: int, n_train: int) -> None:
    """A target constant on train has no scale to learn (and persistence no spread)."""
    for col in range(targets):
        train = raw[:n_train, col]
        if np.all(train == train[0]):
            raise DataError(
                f"column {columns[col]!r} is constant ({float(train[0])!r}) over the {n_train} "
                f"training rows (rows 0 to {n_train - 1}): there is nothing to forecast"
            )


def _check_scaled(scaled: np.ndarray, raw: np.ndarray, columns: Sequence[str]) -> None:
    """Every scaled value must fit the float32 the model reads, named by row."""
    beyond = ~(np.abs(scaled) <= np.finfo(np.float32).max)
    if beyond.any():
        row, col = (int(i) for i in np.argwhere(beyond)[0])
        raise DataError(
            f"column {columns[col]!r} row {row}: {float(raw[row, col])!r} lies "
            f"{abs(scaled[row, col]):.3g} training standard deviations from the training mean, "
            "beyond float32; rescale or drop it"
        )


def split_series(
    values: np.ndarray | Tensor | Sequence,
    columns: Sequence[str],
    *,
    targets: int = 1,
    name: str = "series",
    times: np.ndarray | Sequence | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    transform: str = "none",
    future: int = 0,
) -> SeriesCorpus:
    """Split raw rows (N, F) chronologically and scale them with the training statistics.

    The first ``targets`` columns are the forecast targets. Train gets ``floor(f_train·N)``
    rows, valid ``floor(f_valid·N)``, test the rest; each split needs at least
    :data:`MIN_SPLIT_ROWS` rows. ``times`` (N,) defaults to the row numbers. ``transform``
    (none, log, sqrt, boxcox, or auto: :func:`~bayesrnn.data.transforms.auto_transform`) is
    applied to the targets, its λ fitted on train; the last
    ``future`` columns are covariates known in advance, moved up one row.
    """
    columns = tuple(str(c) for c in columns)
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"columns must be distinct names, got {list(columns)}")
    if (
        isinstance(targets, bool)
        or not isinstance(targets, int)
        or not 1 <= targets <= len(columns)
    ):
        raise ValueError(f"targets must be an integer in [1, {len(columns)}], got {targets!r}")
    f_train, f_valid, _ = _check_fractions(fractions)
    if isinstance(future, bool) or not isinstance(future, int):
        raise ValueError(f"future must be an integer, got {future!r}")
    if not 0 <= future <= len(columns) - targets:
        raise ValueError(
            f"future must lie in [0, {len(columns) - targets}] (covariate columns), got {future}"
        )
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = series_matrix(values, columns)
    raw_targets = torch.from_numpy(array[:, :targets].copy())
    if future:  # row t holds row t + 1's known value; the last row repeats its own
        array = array.copy()
        array[:-1, -future:] = array[1:, -future:]
    total = array.shape[0]
    n_train, n_valid = math.floor(f_train * total), math.floor(f_valid * total)
    sizes = (n_train, n_valid, total - n_train - n_valid)
    if min(sizes) < MIN_SPLIT_ROWS:
        raise DataError(
            f"series {name!r} of {total} rows is too short to split with fractions "
            f"{tuple(fractions)}: got {dict(zip(SPLITS, sizes, strict=True))} rows, each split "
            f"needs at least {MIN_SPLIT_ROWS}"
        )
    stamps = np.arange(total) if times is None else np.asarray(times)
    if stamps.shape != (total,):
        raise ValueError(f"times must have one entry per row ({total}), got {stamps.shape}")
    if transform == AUTO_TRANSFORM:
        transform = auto_transform(array[:, :targets], n_train)
    check_domain(transform, array[:, :targets], columns[:targets])
    _check_varies(array, columns, targets, n_train)
    raw = array
    chosen = SeriesTransform.fit(transform, array[:n_train, :targets], columns[:targets])
    if chosen.kind != "none":
        array = array.copy()
        array[:, :targets] = chosen.forward(torch.from_numpy(array[:, :targets])).numpy()
    train = array[:n_train]
    mean = train.mean(0)
    scale = train.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    scaled = (array - mean) / scale
    _check_scaled(scaled, raw, columns)
    scaled = scaled.astype(np.float32)
    bounds = np.cumsum((0, *sizes))
    parts = {s: slice(int(bounds[i]), int(bounds[i + 1])) for i, s in enumerate(SPLITS)}
    return SeriesCorpus(
        **{s: torch.from_numpy(scaled[parts[s]].copy()) for s in SPLITS},
        columns=columns,
        targets=targets,
        mean=torch.from_numpy(mean),
        scale=torch.from_numpy(scale),
        times={s: stamps[parts[s]] for s in SPLITS},
        name=name,
        transform=chosen,
        future=future,
        raw_targets=raw_targets,
    )


def _pandas():
    try:
        import pandas
    except ImportError as error:
        raise ImportError(f"reading series needs pandas; {_EXTRA_HINT}") from error
    return pandas


def load_statsmodels_series(
    name: str = "sunspots",
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    transform: str = "none",
) -> SeriesCorpus:
    """A real series bundled with statsmodels (no download), split and scaled.

    - ``"sunspots"`` (default): yearly mean sunspot number ``SUNACTIVITY``, 1700–2008, 309
      values; ``times`` are the years.
    - ``"co2"``: weekly atmospheric CO₂ at Mauna Loa (ppm), 1958-03-29 to 2001-12-29, 2284
      weeks; ``times`` are the dates. The 59 weeks without a measurement are **filled by linear
      interpolation** between the nearest measured weeks (the weeks are evenly spaced, so in
      time as in position).
    - ``"elnino"``: monthly sea surface temperature of the El Niño region (°C), January 1950
      to December 2010, 732 months; ``times`` are the first days of the months.

    ``transform``: see :func:`split_series`. Needs statsmodels (the ``timeseries`` extra),
    imported only when called.
    """
    if name not in STATSMODELS_SERIES:
        raise ValueError(f"unknown statsmodels series {name!r}; known: {list(STATSMODELS_SERIES)}")
    try:
        from statsmodels import datasets
    except ImportError as error:
        raise ImportError(f"load_statsmodels_series needs statsmodels; {_EXTRA_HINT}") from error
    if name == "sunspots":
        frame = datasets.sunspots.load_pandas().data
        values = frame["SUNACTIVITY"].to_numpy(dtype=np.float64)
        times = frame["YEAR"].to_numpy().astype(np.int64)
        column = "SUNACTIVITY"
    elif name == "elnino":
        frame = datasets.elnino.load_pandas().data
        values = frame.drop(columns="YEAR").to_numpy(dtype=np.float64).reshape(-1)
        first = f"{int(frame['YEAR'].iloc[0])}-01"
        times = np.arange(np.datetime64(first), np.datetime64(first) + values.shape[0])
        times = times.astype("datetime64[D]")
        column = "temperature"
    else:
        frame = datasets.co2.load_pandas().data
        values = frame["co2"].interpolate(method="linear").to_numpy(dtype=np.float64)
        times = frame.index.to_numpy()
        column = "co2"
    return split_series(
        values, (column,), name=name, times=times, fractions=fractions, transform=transform
    )


def _times_of(column, file: str, pandas) -> np.ndarray:
    """A time column as numbers (years, seconds) or dates (datetime64), for plots and outputs."""
    if pandas.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    try:
        return pandas.to_datetime(column, format="mixed").to_numpy()
    except (ValueError, TypeError) as error:
        raise DataError(
            f"{file}: time column {column.name!r} holds neither numbers nor dates "
            f"(e.g. {str(column.iloc[0])!r})"
        ) from error


def load_csv_series(
    path: str | Path,
    target: str | Sequence[str],
    covariates: Sequence[str] = (),
    *,
    time: str | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    name: str | None = None,
    future_covariates: Sequence[str] = (),
    transform: str = "none",
) -> SeriesCorpus:
    """Any CSV with a header row: the ``target`` column(s), then ``covariates`` (lagged: row t
    informs row t + 1), then ``future_covariates`` (known in advance: they enter at the row
    they apply to), split and scaled; ``transform`` applies to the targets.

    Rows are taken in file order (sort the file by time first). ``time`` names a column to keep
    as the rows' times (not a feature); without it the times are row numbers. Every chosen
    column must be numeric and complete: a missing value is a DataError (fill or drop it
    first), as is a missing column (the message lists those the file has).
    """
    pandas = _pandas()
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"no CSV file at {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; name a CSV file")
    targets = [target] if isinstance(target, str) else list(target)
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    known = [future_covariates] if isinstance(future_covariates, str) else list(future_covariates)
    wanted = targets + covariates + known
    if not targets:
        raise ValueError("target must name at least one column")
    if len(set(wanted)) != len(wanted):
        raise ValueError(
            f"a column is named twice among target, covariates and future covariates: {wanted}"
        )
    if time is not None and time in wanted:
        raise ValueError(f"the time column {time!r} cannot also be a target or covariate")
    frame = read_csv_table(path)
    available = [str(c) for c in frame.columns]
    absent = [c for c in [*wanted, *([time] if time else [])] if c not in available]
    if absent:
        raise DataError(f"{path.name}: no column {absent}; the file has columns {available}")
    values = csv_values(frame, wanted, path.name)
    times = None if time is None else _times_of(frame[time], path.name, pandas)
    try:
        return split_series(
            values,
            wanted,
            targets=len(targets),
            name=name or path.stem,
            times=times,
            fractions=fractions,
            transform=transform,
            future=len(known),
        )
    except DataError as error:
        raise DataError(f"{path.name}: {error}") from error
