r"""Classical forecasters to beat first: persistence, seasonal naive, climatology, ARIMA, ETS.

Each is a callable ``(history, horizon) -> paths (S, H)``, the protocol of
:func:`bayesrnn.evaluation.backtest.rolling_origin`, for a univariate series. All five are linear
Gaussian models, so each computes the Gaussian predictive mean m_h and standard deviation s_h of
every lead time h and turns them into S paths m_h + s_h·z_i with the fixed normal scores
z_i = Φ⁻¹((i + ½)/S): the same S quantile-spaced values at every h (a comonotone set of paths).
The per-horizon marginals are thereby represented with no Monte Carlo noise, which is what
per-horizon scores (CRPS, intervals) read; the paths are not draws of the joint distribution
across horizons.

**Fitted once, filtered forward.** Parameters (and the ARIMA order or ETS trend) are estimated
once, on train (+ valid); at each forecast origin the fitted model is *filtered* over the
history it is given, with the parameters held fixed, and forecasts from there: it is never
refitted on the history of an origin, so a backtest costs one fit per method.

- :class:`Persistence`: y_{T+h} = y_T + a random walk, s_h = σ√h, σ the sd of one-step changes.
- :class:`SeasonalNaive`: y_{T+h} = y_{T+h−m(k+1)}, k = ⌊(h − 1)/m⌋, s_h = σ_m√(k + 1), σ_m the
  sd of the m-step changes (Hyndman & Athanasopoulos, "Forecasting: Principles and Practice",
  §5.5).
- :class:`Climatology`: N(mean, sd²) of the fitting data at every step, whatever the history.
- :class:`ARIMA`: statsmodels' ``SARIMAX``, order chosen on the validation split.
- :class:`ETS`: statsmodels' ``ETSModel`` with additive errors, trend chosen on validation.

Model choice scores each candidate, fitted on train, by its one-step log predictive density
of the validation values (filtered through them with the train parameters), then refits the
winner on train + valid. :func:`classical_forecasters` builds all of them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ARIMA",
    "ETS",
    "Climatology",
    "GaussianForecaster",
    "Persistence",
    "SeasonalNaive",
    "arima_orders",
    "classical_forecasters",
    "gaussian_paths",
]

DEFAULT_SAMPLES = 200


def _series(values: object, name: str) -> np.ndarray:
    """A univariate series, (T,) or (T, 1), as a float64 NumPy vector of finite values."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must hold real numbers: {error}") from error
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be a univariate series (T,) or (T, 1), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return array


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def gaussian_paths(mean: object, sd: object, num_samples: int = DEFAULT_SAMPLES) -> Tensor:
    """S paths (S, H) of Gaussian marginals N(mean_h, sd_h²): mean_h + sd_h·Φ⁻¹((i + ½)/S)."""
    num_samples = _positive_int(num_samples, "num_samples")
    mean = torch.as_tensor(np.array(mean, dtype=np.float64))  # copies: statsmodels' arrays
    sd = torch.as_tensor(np.array(sd, dtype=np.float64))  # may be read-only
    if mean.dim() != 1 or sd.shape != mean.shape:
        raise ValueError(f"mean and sd must be (H,), got {tuple(mean.shape)}, {tuple(sd.shape)}")
    if not bool(torch.isfinite(mean).all()) or not bool((torch.isfinite(sd) & (sd >= 0)).all()):
        raise ValueError("mean must be finite and sd finite and non-negative")
    levels = (torch.arange(num_samples, dtype=torch.float64) + 0.5) / num_samples
    scores = torch.special.ndtri(levels)
    return mean + sd * scores[:, None]


class GaussianForecaster:
    """A forecaster with a Gaussian predictive per lead time: subclasses give :meth:`predict`,
    calling it turns the prediction into paths (:func:`gaussian_paths`)."""

    name = "gaussian"

    def __init__(self, num_samples: int = DEFAULT_SAMPLES) -> None:
        self.num_samples = _positive_int(num_samples, "num_samples")

    def predict(self, history: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and sd of the next ``horizon`` values after ``history``, each (H,)."""
        raise NotImplementedError

    def __call__(self, history: object, horizon: int) -> Tensor:
        """Paths (S, H), or (S, H, 1) for a history of one column (T, 1)."""
        column = np.ndim(history) == 2
        history = _series(history, "history")
        horizon = _positive_int(horizon, "horizon")
        mean, sd = self.predict(history, horizon)
        paths = gaussian_paths(mean, sd, self.num_samples)
        return paths.unsqueeze(-1) if column else paths

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def describe(self) -> str:
        """The fitted choices, in words (for tables and logs)."""
        return ""


def _sd(values: np.ndarray, what: str) -> float:
    if values.size < 2:
        raise ValueError(f"the fitting data is too short for the sd of {what}")
    sd = float(values.std(ddof=1))
    if not sd > 0:
        raise ValueError(f"the fitting data has no spread in {what}")
    return sd


class Persistence(GaussianForecaster):
    """The last value, with a random walk's spread: s_h = σ√h, σ the sd (ddof 1) of the
    one-step changes of the fitting data."""

    name = "persistence"

    def __init__(self, fit_values: object, num_samples: int = DEFAULT_SAMPLES) -> None:
        super().__init__(num_samples)
        self.sigma = _sd(np.diff(_series(fit_values, "fit_values")), "one-step changes")

    def predict(self, history, horizon):
        steps = np.arange(1, horizon + 1)
        return np.full(horizon, history[-1]), self.sigma * np.sqrt(steps)

    def describe(self) -> str:
        return f"σ={self.sigma:.4g}"


class SeasonalNaive(GaussianForecaster):
    """The value one season back: y_{T+h−m(k+1)} with k = ⌊(h − 1)/m⌋, s_h = σ_m√(k + 1),
    σ_m the sd (ddof 1) of the m-step changes of the fitting data. Season 1 is persistence."""

    name = "seasonal_naive"

    def __init__(self, fit_values: object, season: int, num_samples: int = DEFAULT_SAMPLES) -> None:
        super().__init__(num_samples)
        self.season = _positive_int(season, "season")
        values = _series(fit_values, "fit_values")
        if values.size <= self.season + 1:
            raise ValueError(f"fit_values needs more than season + 1 = {self.season + 1} values")
        self.sigma = _sd(values[self.season :] - values[: -self.season], "seasonal changes")

    def predict(self, history, horizon):
        m = self.season
        if history.size < m:
            raise ValueError(f"history needs at least one season ({m} values), got {history.size}")
        cycles = np.arange(horizon) // m  # k = ⌊(h − 1)/m⌋ for h = 1 … H
        index = history.size + np.arange(horizon) - m * (cycles + 1)
        return history[index], self.sigma * np.sqrt(cycles + 1)

    def describe(self) -> str:
        return f"m={self.season}, σ={self.sigma:.4g}"


class Climatology(GaussianForecaster):
    """N(mean, sd²) of the fitting data (sd with ddof 1) at every lead time; ignores history."""

    name = "climatology"

    def __init__(self, fit_values: object, num_samples: int = DEFAULT_SAMPLES) -> None:
        super().__init__(num_samples)
        values = _series(fit_values, "fit_values")
        self.mean = float(values.mean())
        self.sd = _sd(values, "its values")

    def predict(self, history, horizon):
        return np.full(horizon, self.mean), np.full(horizon, self.sd)

    def describe(self) -> str:
        return f"mean={self.mean:.4g}, sd={self.sd:.4g}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """statsmodels' convergence and start-value warnings, silenced around its fits."""
    # imported first: importing statsmodels sets its own warning filters, which would
    # otherwise land inside this context and override it
    import statsmodels.tsa.exponential_smoothing.ets
    import statsmodels.tsa.statespace.sarimax  # noqa: F401

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def arima_orders(
    p: Sequence[int] = (0, 1, 2), d: Sequence[int] = (0, 1), q: Sequence[int] = (0, 1, 2)
) -> list[tuple[int, int, int]]:
    """The (p, d, q) grid that :meth:`ARIMA.select` searches."""
    return [tuple(int(v) for v in order) for order in itertools.product(p, d, q)]


def _split(train: object, valid: object) -> tuple[np.ndarray, np.ndarray]:
    train, valid = _series(train, "train"), _series(valid, "valid")
    if train.size < 3 or valid.size < 1:
        raise ValueError(
            f"need at least 3 train and 1 valid values, got {train.size} and {valid.size}"
        )
    return train, valid


class ARIMA(GaussianForecaster):
    """statsmodels ``SARIMAX`` with fixed parameters, filtered over each history.

    Build it with :meth:`select`. A constant (d = 0) or drift (d = 1) term is included;
    with a season m the seasonal part is (1, 0, 0, m). Forecast means and standard errors are
    the state-space model's (``get_forecast``). Consecutive histories that extend the previous
    one are filtered incrementally (``extend``), which gives the same state as filtering the
    whole history again.
    """

    name = "arima"

    def __init__(self, results, order, season: int | None, num_samples: int = DEFAULT_SAMPLES):
        super().__init__(num_samples)
        self.order = tuple(order)
        self.season = season
        self.results = results
        self.validation: dict[tuple[int, int, int], float] = {}
        self._cache: tuple[np.ndarray, object] | None = None

    @staticmethod
    def _model(values: np.ndarray, order, season: int | None):
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        seasonal = (1, 0, 0, season) if season and season > 1 else (0, 0, 0, 0)
        trend = "c" if order[1] == 0 else "t"
        return SARIMAX(values, order=order, seasonal_order=seasonal, trend=trend)

    @classmethod
    def select(
        cls,
        train: object,
        valid: object,
        season: int | None = None,
        orders: Sequence[tuple[int, int, int]] | None = None,
        num_samples: int = DEFAULT_SAMPLES,
    ) -> ARIMA:
        """The order of ``orders`` (default :func:`arima_orders`) whose train fit gives the
        validation values the highest one-step log predictive density, refitted on train +
        valid. ``validation`` maps each order to that log density (−inf where the fit failed)."""
        train, valid = _split(train, valid)
        season = None if season is None else _positive_int(season, "season")
        orders = arima_orders() if orders is None else [tuple(o) for o in orders]
        if not orders:
            raise ValueError("orders must list at least one (p, d, q)")
        both = np.concatenate([train, valid])
        scores: dict[tuple[int, int, int], float] = {}
        with _quiet():
            for order in orders:
                try:
                    fitted = cls._model(train, order, season).fit(disp=False)
                    density = fitted.apply(both).llf_obs[train.size :].sum()
                except (np.linalg.LinAlgError, ValueError):
                    density = -math.inf
                scores[order] = float(density) if np.isfinite(density) else -math.inf
            best = max(scores, key=scores.get)
            if not np.isfinite(scores[best]):
                raise ValueError("no ARIMA order could be fitted to the training data")
            results = cls._model(both, best, season).fit(disp=False)
        forecaster = cls(results, best, season, num_samples)
        forecaster.validation = scores
        return forecaster

    def _filtered(self, history: np.ndarray):
        """Results filtered over ``history`` with the fitted parameters."""
        if self._cache is not None:
            seen, results = self._cache
            if history.size >= seen.size and np.array_equal(history[: seen.size], seen):
                if history.size > seen.size:
                    results = results.extend(history[seen.size :])
                self._cache = (history.copy(), results)
                return results
        results = self.results.apply(history)
        self._cache = (history.copy(), results)
        return results

    def predict(self, history, horizon):
        forecast = self._filtered(history).get_forecast(horizon)
        return np.asarray(forecast.predicted_mean), np.asarray(forecast.se_mean)

    def describe(self) -> str:
        seasonal = f"×(1,0,0,{self.season})" if self.season and self.season > 1 else ""
        return f"order={self.order}{seasonal}"


class ETS(GaussianForecaster):
    """statsmodels ``ETSModel`` with additive errors and fixed parameters, smoothed over each
    history (``smooth``); forecast means and variances are the model's exact ones.

    Build it with :meth:`select`. The trend is none, additive or damped additive; with a season
    m > 1 the seasonal part is additive with period m.
    """

    name = "ets"
    TRENDS = {"none": (None, False), "additive": ("add", False), "damped": ("add", True)}

    def __init__(self, params, trend: str, season: int | None, num_samples: int = DEFAULT_SAMPLES):
        super().__init__(num_samples)
        self.params = params
        self.trend = trend
        self.season = season
        self.validation: dict[str, float] = {}

    @classmethod
    def _model(cls, values: np.ndarray, trend: str, season: int | None):
        import pandas
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        kind, damped = cls.TRENDS[trend]
        seasonal = season if season and season > 1 else None
        return ETSModel(
            pandas.Series(values),  # statsmodels' prediction intervals need a pandas index
            error="add",
            trend=kind,
            damped_trend=damped,
            seasonal="add" if seasonal else None,
            seasonal_periods=seasonal,
        )

    @staticmethod
    def _log_density(errors: np.ndarray, variance: float) -> float:
        """Sum of log N(e; 0, σ²) over one-step errors: their log predictive density."""
        return float(np.sum(-0.5 * np.log(2 * np.pi * variance) - errors**2 / (2 * variance)))

    @classmethod
    def select(
        cls,
        train: object,
        valid: object,
        season: int | None = None,
        trends: Sequence[str] = ("none", "additive", "damped"),
        num_samples: int = DEFAULT_SAMPLES,
    ) -> ETS:
        """The trend of ``trends`` whose train fit gives the validation values the highest
        one-step log predictive density, refitted on train + valid."""
        train, valid = _split(train, valid)
        season = None if season is None else _positive_int(season, "season")
        unknown = [t for t in trends if t not in cls.TRENDS]
        if unknown or not trends:
            raise ValueError(f"trends must be among {list(cls.TRENDS)}, got {list(trends)}")
        both = np.concatenate([train, valid])
        scores: dict[str, float] = {}
        with _quiet():
            for trend in trends:
                try:
                    fitted = cls._model(train, trend, season).fit(disp=False)
                    smoothed = cls._model(both, trend, season).smooth(fitted.params)
                    errors = np.asarray(smoothed.resid)[train.size :]
                    scores[trend] = cls._log_density(errors, float(fitted.mse))
                except (np.linalg.LinAlgError, ValueError):
                    scores[trend] = -math.inf
            best = max(scores, key=scores.get)
            if not np.isfinite(scores[best]):
                raise ValueError("no ETS model could be fitted to the training data")
            params = cls._model(both, best, season).fit(disp=False).params
        forecaster = cls(params, best, season, num_samples)
        forecaster.validation = scores
        return forecaster

    def predict(self, history, horizon):
        with _quiet():
            results = self._model(history, self.trend, self.season).smooth(self.params)
            prediction = results.get_prediction(start=history.size, end=history.size + horizon - 1)
        mean = np.asarray(prediction.predicted_mean, dtype=np.float64)
        return mean, np.sqrt(np.asarray(prediction.var_pred_mean, dtype=np.float64))

    def describe(self) -> str:
        seasonal = f", additive season {self.season}" if self.season and self.season > 1 else ""
        return f"trend={self.trend}{seasonal}"


def classical_forecasters(
    train: object,
    valid: object,
    season: int | None = None,
    *,
    orders: Sequence[tuple[int, int, int]] | None = None,
    num_samples: int = DEFAULT_SAMPLES,
) -> dict[str, GaussianForecaster]:
    """Every classical forecaster, fitted on train + valid (ARIMA's order and ETS's trend chosen
    on valid): ``persistence``, ``seasonal_naive`` (only with a season > 1), ``climatology``,
    ``arima``, ``ets``."""
    train, valid = _split(train, valid)
    both = np.concatenate([train, valid])
    forecasters: dict[str, GaussianForecaster] = {"persistence": Persistence(both, num_samples)}
    if season is not None and _positive_int(season, "season") > 1:
        forecasters["seasonal_naive"] = SeasonalNaive(both, season, num_samples)
    forecasters["climatology"] = Climatology(both, num_samples)
    forecasters["arima"] = ARIMA.select(train, valid, season, orders, num_samples)
    forecasters["ets"] = ETS.select(train, valid, season, num_samples=num_samples)
    return forecasters
