r"""Scoring probabilistic forecasts of real values: CRPS, NLL, RMSE, interval coverage, PIT.

Everything here takes *predictive parameters*, not a model: S posterior draws of per-value
Gaussian or Student-t parameters, a :class:`~bayesrnn.models.Forecast` whose fields are
(S, N, D) (or a list of S Forecasts of (N, D)), and the N × D observed values. The forecast
of a value is the equally weighted mixture of the S draws' distributions,

    F(y) = (1/S) Σ_s F_s(y),

the posterior predictive that the draws approximate. All metrics are *marginal per value*
(each of the D output columns is scored on its own) and averaged over the N·D values:

- ``crps``: the continuous ranked probability score ∫ (F(x) − 1{x ≥ y})² dx (Gneiting &
  Raftery 2007), lower is better, in the units of y. Gaussian mixtures get it exactly:
  CRPS = (1/S) Σ_i A(y − μ_i, σ_i) − (1/2S²) Σ_ij A(μ_i − μ_j, √(σ_i² + σ_j²)), with
  A(m, s) = E|N(m, s²)| = m(2Φ(m/s) − 1) + 2sφ(m/s) (Grimit et al. 2006; one draw gives the
  closed form σ[z(2Φ(z) − 1) + 2φ(z) − 1/√π]). Student-t mixtures are scored on samples of the
  mixture with Pyro's ``crps_empirical``.
- ``nll``: −log F'(y), the negative log density of the mixture (a log-mean-exp over draws of
  each draw's log density).
- ``rmse``: of the mixture mean (1/S) Σ_s μ_s (Pyro's ``eval_rmse`` uses a sample mean; the
  mean is exact here); ``mae``: of the mixture median.
- ``coverage_50``, ``coverage_90`` (one per level α): the fraction of values inside the central
  interval [F⁻¹((1−α)/2), F⁻¹((1+α)/2)] of the mixture. F is continuous and increasing, so
  y lies in that interval exactly when |F(y) − ½| ≤ α/2: coverage is read off the exact
  mixture CDF, no quantile is sampled. ``width_50``, ``width_90``: the mean interval width,
  with the quantiles found by bisection on the exact mixture CDF (:func:`mixture_quantiles`).
- ``pit``: the probability integral transform F(y) of every value, an (N, D) tensor; uniform
  on [0, 1] when the forecasts are calibrated. ``pit_histogram`` summarises it
  (:func:`pit_histogram`: counts per bin, a χ² and a Kolmogorov–Smirnov test of uniformity).

:func:`baselines` scores two naive forecasts on the same steps (persistence and climatology),
and :func:`predict_series` produces the predictive parameters of a trained
:class:`~bayesrnn.models.SequenceRegressor` over a series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from pyro import poutine
from pyro.ops.stats import crps_empirical
from torch import Tensor

from bayesrnn.inference.guides.ensemble import check_member_draws
from bayesrnn.inference.prediction.predictive import module_device, posterior_mean, sample_weights
from bayesrnn.models.regressor import Forecast
from bayesrnn.models.regularisers import mc_dropout

__all__ = [
    "as_draws",
    "baselines",
    "climatology_forecast",
    "crps_gaussian",
    "crps_gaussian_mixture",
    "crps_samples",
    "forecast_metrics",
    "interval_coverage",
    "mixture_cdf",
    "mixture_log_prob",
    "mixture_quantiles",
    "persistence_forecast",
    "pit_histogram",
    "predict_series",
    "series_inputs",
]

_SQRT_PI = math.sqrt(math.pi)


def _as_values(value: object, name: str) -> Tensor:
    if isinstance(value, np.ndarray | list | tuple):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if not isinstance(value, Tensor) or not value.is_floating_point():
        got = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a float tensor of real values, got {got}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return value.double()


def _as_column_values(value: object, name: str) -> Tensor:
    """(N,) or (N, D) real values as (N, D) float64."""
    value = _as_values(value, name)
    if value.dim() == 1:
        value = value.unsqueeze(-1)
    if value.dim() != 2 or value.shape[0] == 0:
        raise ValueError(f"{name} must be (N,) or (N, D) with N ≥ 1, got {tuple(value.shape)}")
    return value


def as_draws(draws: Forecast | Sequence[Forecast]) -> Forecast:
    """S draws as one float64 Forecast (S, N, D), from a stacked Forecast or a list of them.

    A Forecast of (N, D) is one draw. Scales must be positive and everything finite.
    """
    if isinstance(draws, Forecast):
        stacked = draws if draws.loc.dim() == 3 else draws.map(lambda t: t.unsqueeze(0))
    elif isinstance(draws, Sequence) and draws and all(isinstance(d, Forecast) for d in draws):
        stacked = Forecast.stack(draws)
    else:
        raise ValueError(
            f"draws must be a Forecast (S, N, D) or a list of Forecasts, got {type(draws).__name__}"
        )
    if stacked.loc.dim() != 3:
        raise ValueError(f"draws must be (S, N, D) or (N, D), got {tuple(stacked.loc.shape)}")
    stacked = stacked.map(lambda t: t.detach().double())
    for name in ("loc", "scale", "df"):
        value = getattr(stacked, name)
        if value is not None and not bool(torch.isfinite(value).all()):
            raise ValueError(f"draws.{name} contains non-finite values")
    if not bool((stacked.scale > 0).all()):
        raise ValueError("draws.scale must be positive")
    if stacked.df is not None and not bool((stacked.df > 0).all()):
        raise ValueError("draws.df must be positive")
    return stacked


def _draws_and_observed(draws, observed) -> tuple[Forecast, Tensor]:
    stacked = as_draws(draws)
    observed = _as_values(observed, "observed").to(stacked.loc.device)
    if observed.shape != stacked.loc.shape[1:]:
        raise ValueError(
            f"observed must be (N, D) = {tuple(stacked.loc.shape[1:])} like the draws, "
            f"got {tuple(observed.shape)}"
        )
    return stacked, observed


# ---------------------------------------------------------------------------------------------
# CRPS


def _abs_normal_mean(mean: Tensor, scale: Tensor) -> Tensor:
    """E|X| for X ~ N(mean, scale²)."""
    z = mean / scale
    density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return mean * (2 * torch.special.ndtr(z) - 1) + 2 * scale * density


def crps_gaussian(loc: Tensor, scale: Tensor, observed: Tensor) -> Tensor:
    """CRPS of N(loc, scale²) at ``observed``, elementwise (broadcast), in closed form:
    σ[z(2Φ(z) − 1) + 2φ(z) − 1/√π] with z = (y − μ)/σ (Gneiting & Raftery 2007, eq. 21)."""
    loc, scale, observed = (torch.as_tensor(t) for t in (loc, scale, observed))
    if not bool((scale > 0).all()):
        raise ValueError("scale must be positive")
    return _abs_normal_mean(observed - loc, scale) - scale / _SQRT_PI


def crps_gaussian_mixture(loc: Tensor, scale: Tensor, observed: Tensor) -> Tensor:
    """Exact CRPS of the equal-weight mixture of S Gaussians (draws on dim 0) at ``observed``.

    ``loc`` and ``scale`` are (S, …), ``observed`` (…); returns (…). Uses
    CRPS = E|X − y| − ½E|X − X'| with X, X' independent draws of the mixture, both terms in
    closed form; O(S²) per value, looped over draws to keep memory at O(S) per value.
    """
    if loc.shape != scale.shape or loc.shape[1:] != observed.shape:
        raise ValueError(
            f"loc and scale must be (S, *observed.shape); got {tuple(loc.shape)}, "
            f"{tuple(scale.shape)} and {tuple(observed.shape)}"
        )
    if not bool((scale > 0).all()):
        raise ValueError("scale must be positive")
    draws = loc.shape[0]
    spread = torch.zeros_like(observed, dtype=loc.dtype)
    for i in range(draws):
        pair_scale = torch.sqrt(scale[i] ** 2 + scale**2)
        spread = spread + _abs_normal_mean(loc[i] - loc, pair_scale).sum(0)
    return _abs_normal_mean(observed - loc, scale).mean(0) - spread / (2 * draws**2)


def crps_samples(samples: Tensor, observed: Tensor) -> Tensor:
    """CRPS of the empirical distribution of ``samples`` (S, …) at ``observed`` (…):
    ``pyro.ops.stats.crps_empirical`` (E|X − y| − ½E|X − X'| over the samples, n log n)."""
    return crps_empirical(samples, observed)


def _mixture_samples(draws: Forecast, count: int) -> Tensor:
    """About ``count`` samples of the mixture: the same number from every draw (stratified),
    from torch's global generator."""
    per_draw = max(1, math.ceil(count / draws.loc.shape[0]))
    samples = draws.sample((per_draw,))  # (per_draw, S, N, D)
    return samples.reshape(-1, *draws.loc.shape[1:])


# ---------------------------------------------------------------------------------------------
# The mixture's density, CDF and quantiles


def mixture_log_prob(draws: Forecast | Sequence[Forecast], observed: Tensor) -> Tensor:
    """log of the mixture density at each value, (N, D): logsumexp_s log p_s(y) − log S."""
    stacked, observed = _draws_and_observed(draws, observed)
    per_draw = stacked.log_prob(observed)
    return torch.logsumexp(per_draw, 0) - math.log(per_draw.shape[0])


def mixture_cdf(draws: Forecast | Sequence[Forecast], values: Tensor) -> Tensor:
    """The mixture CDF at ``values`` (N, D): the mean over draws of each draw's CDF; at the
    observations these are the PIT values."""
    stacked, values = _draws_and_observed(draws, values)
    return stacked.cdf(values).mean(0)


def mixture_quantiles(
    draws: Forecast | Sequence[Forecast], probs: Sequence[float], *, iterations: int = 64
) -> Tensor:
    """Quantiles of the mixture, (len(probs), N, D), by bisection on its exact CDF.

    The q-quantile of an equal-weight mixture lies between the smallest and the largest of the
    components' q-quantiles, which bracket the search; 64 halvings reach float64 resolution.
    """
    stacked = as_draws(draws)
    probs = [float(p) for p in probs]
    if not probs or not all(0.0 < p < 1.0 for p in probs):
        raise ValueError(f"probs must lie in (0, 1), got {probs!r}")
    result = []
    for p in probs:
        component = stacked.icdf(p)
        low, high = component.min(0).values, component.max(0).values
        for _ in range(iterations):
            middle = 0.5 * (low + high)
            below = stacked.cdf(middle.expand_as(stacked.loc)).mean(0) < p
            low = torch.where(below, middle, low)
            high = torch.where(below, high, middle)
        result.append(0.5 * (low + high))
    return torch.stack(result)


def _check_levels(levels: Sequence[float]) -> list[tuple[str, float]]:
    named = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
            raise ValueError(f"levels must lie in (0, 1), got {level!r}")
        named.append((f"{100 * level:g}".replace(".", "_"), float(level)))
    names = [name for name, _ in named]
    if not named or len(set(names)) != len(names):
        raise ValueError(f"levels must be distinct and non-empty, got {list(levels)!r}")
    return named


def interval_coverage(pit: Tensor, level: float) -> float:
    """Fraction of values inside the central ``level`` interval: |PIT − ½| ≤ level/2."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    pit = torch.as_tensor(pit, dtype=torch.float64)
    return float(((pit - 0.5).abs() <= level / 2).double().mean())


def pit_histogram(pit: Tensor, bins: int = 10) -> dict[str, list | float]:
    """Counts of PIT values in ``bins`` equal bins of [0, 1] and two tests of uniformity.

    Returns ``edges`` (bins + 1), ``counts``, ``expected`` (count per bin if uniform),
    ``chi2`` and ``chi2_p_value`` (Pearson's test, bins − 1 degrees of freedom), ``ks`` and
    ``ks_p_value`` (Kolmogorov–Smirnov against U(0, 1)). A calibrated forecaster gives flat
    counts; a ∪ shape means intervals too narrow, a ∩ shape too wide, a slope a bias.
    """
    from scipy import stats

    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer ≥ 2, got {bins!r}")
    values = torch.as_tensor(pit, dtype=torch.float64).reshape(-1).cpu().numpy()
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("pit must be non-empty and finite")
    if (values < 0).any() or (values > 1).any():
        raise ValueError("pit values must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    expected = values.size / bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    ks = stats.kstest(values, "uniform")
    return {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "expected": float(expected),
        "chi2": chi2,
        "chi2_p_value": float(stats.chi2.sf(chi2, bins - 1)),
        "ks": float(ks.statistic),
        "ks_p_value": float(ks.pvalue),
    }


def forecast_metrics(
    draws: Forecast | Sequence[Forecast],
    observed: Tensor,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    bins: int = 10,
    crps_samples: int = 4000,
) -> dict[str, object]:
    """All scores of the mixture forecast of S draws (N, D) against ``observed`` (N, D).

    Keys: ``crps``, ``nll``, ``rmse``, ``mae`` (floats, means over the N·D values),
    ``coverage_<100·level>`` and ``width_<100·level>`` per level (``coverage_50``,
    ``coverage_90`` by default), ``pit`` (the (N, D) PIT values, a tensor), ``pit_histogram``
    (:func:`pit_histogram`), ``draws`` and ``values``. See the module docstring for each
    definition. Student-t CRPS uses about ``crps_samples`` samples of the mixture (torch's
    global generator: seed it for reproducible numbers); Gaussian CRPS is exact.
    """
    stacked, observed = _draws_and_observed(draws, observed)
    named = _check_levels(levels)
    if isinstance(crps_samples, bool) or not isinstance(crps_samples, int) or crps_samples < 1:
        raise ValueError(f"crps_samples must be a positive integer, got {crps_samples!r}")
    if stacked.df is None:
        crps = crps_gaussian_mixture(stacked.loc, stacked.scale, observed)
    else:
        crps = crps_empirical(_mixture_samples(stacked, crps_samples), observed)
    draws_log_prob = stacked.log_prob(observed)
    nll = -(torch.logsumexp(draws_log_prob, 0) - math.log(draws_log_prob.shape[0]))
    mean = stacked.mean.mean(0)
    pit = stacked.cdf(observed).mean(0)
    tails = sorted({p for _, level in named for p in ((1 - level) / 2, (1 + level) / 2)})
    quantiles = mixture_quantiles(stacked, [0.5, *tails])
    at = {p: quantiles[i + 1] for i, p in enumerate(tails)}
    metrics: dict[str, object] = {
        "crps": float(crps.mean()),
        "nll": float(nll.mean()),
        "rmse": float((mean - observed).pow(2).mean().sqrt()),
        "mae": float((quantiles[0] - observed).abs().mean()),
    }
    for name, level in named:
        metrics[f"coverage_{name}"] = interval_coverage(pit, level)
        width = at[(1 + level) / 2] - at[(1 - level) / 2]
        metrics[f"width_{name}"] = float(width.mean())
    metrics["pit"] = pit
    metrics["pit_histogram"] = pit_histogram(pit, bins)
    metrics["draws"] = int(stacked.loc.shape[0])
    metrics["values"] = int(observed.numel())
    return metrics


# ---------------------------------------------------------------------------------------------
# Naive baselines


def persistence_forecast(train_values: Tensor, previous_values: Tensor) -> Forecast:
    """Tomorrow as today: loc = the previous observed value, scale = the sample standard deviation
    (ddof 1) of the one-step differences of ``train_values``, per column; (1, N, D)."""
    train = _as_column_values(train_values, "train_values")
    previous = _as_column_values(previous_values, "previous_values")
    if train.shape[0] < 3:
        raise ValueError("train_values needs at least 3 steps for the spread of its differences")
    if previous.shape[1] != train.shape[1]:
        raise ValueError("previous_values and train_values have different column counts")
    scale = torch.diff(train, dim=0).std(0, correction=1)
    if not bool((scale > 0).all()):
        raise ValueError("train_values never changes: persistence has no spread")
    return Forecast(previous, scale.expand_as(previous).clone()).map(lambda t: t.unsqueeze(0))


def climatology_forecast(train_values: Tensor, steps: int) -> Forecast:
    """The training distribution every step: N(train mean, train sd²) (sd with ddof 1),
    per column, for ``steps`` steps; (1, steps, D)."""
    train = _as_column_values(train_values, "train_values")
    if train.shape[0] < 2:
        raise ValueError("train_values needs at least 2 steps for a standard deviation")
    mean, sd = train.mean(0), train.std(0, correction=1)
    if not bool((sd > 0).all()):
        raise ValueError("train_values is constant: climatology has no spread")
    shape = (1, steps, train.shape[1])
    return Forecast(mean.expand(shape).clone(), sd.expand(shape).clone())


def baselines(
    train_values: Tensor,
    test_values: Tensor,
    previous_values: Tensor,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    bins: int = 10,
) -> dict[str, dict[str, object]]:
    """:func:`forecast_metrics` of the persistence and climatology forecasts of ``test_values``.

    ``train_values`` (M, D) or (M,) fit the baselines; ``previous_values`` holds, for each test
    step, the value observed just before it (``series[start − 1 : N − 1]`` for test steps
    ``series[start:]``). Returns ``{"persistence": {...}, "climatology": {...}}``.
    """
    test = _as_column_values(test_values, "test_values")
    previous = _as_column_values(previous_values, "previous_values")
    if previous.shape != test.shape:
        raise ValueError(
            f"previous_values must match test_values {tuple(test.shape)}, "
            f"got {tuple(previous.shape)}"
        )
    train = _as_column_values(train_values, "train_values")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_values has {train.shape[1]} columns, test_values {test.shape[1]}")
    forecasts = {
        "persistence": persistence_forecast(train, previous),
        "climatology": climatology_forecast(train, test.shape[0]),
    }
    return {
        name: forecast_metrics(forecast, test, levels=levels, bins=bins)
        for name, forecast in forecasts.items()
    }


# ---------------------------------------------------------------------------------------------
# Predictions of a trained model


def _check_series(model, series: object, start: object) -> tuple[Tensor, int]:
    if not isinstance(series, Tensor) or not series.is_floating_point() or series.dim() != 2:
        got = tuple(series.shape) if isinstance(series, Tensor) else type(series).__name__
        raise ValueError(f"series must be a float (N, F) tensor of rows, got {got}")
    if not bool(torch.isfinite(series).all()):
        raise ValueError("series contains non-finite values (nan or inf)")
    features = getattr(model, "input_size", series.shape[1])
    if series.shape[1] != features:
        raise ValueError(f"series has {series.shape[1]} columns, the model reads {features}")
    steps = series.shape[0]
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start < steps:
        raise ValueError(
            f"start must be an integer in [1, {steps - 1}] (the first forecast step; rows "
            f"before it are history), got {start!r}"
        )
    return series, start


def _forecast_rows(model, weights: dict[str, Tensor], inputs: Tensor, start: int) -> Forecast:
    """Run ``model`` over the whole batch-of-one series with ``weights``; the forecasts of rows
    ``start`` … N − 1 as (N − start, D)."""
    forecast, _ = poutine.condition(model, data=weights)(inputs)
    batch_dim = 0 if getattr(model, "batch_first", False) else 1
    return forecast.map(lambda t: t.select(batch_dim, 0)[start - 1 :].detach())


def series_inputs(model, series: Tensor) -> tuple[Tensor, Tensor]:
    """(inputs, targets) of a whole series as one sequence in ``model``'s layout: rows
    0 … N − 2 predict rows 1 … N − 1."""
    inputs, targets = series[:-1].unsqueeze(1), series[1:].unsqueeze(1)
    if getattr(model, "batch_first", False):
        return inputs.transpose(0, 1), targets.transpose(0, 1)
    return inputs, targets


def predict_series(
    model, guide, series: Tensor, start: int, num_samples: int | None = None
) -> Forecast:
    """One-step-ahead predictive parameters of rows ``start`` … N − 1 of ``series`` (N, F).

    The model reads the whole series as one sequence (batch 1), the hidden state carried from
    row 0, so rows before ``start`` (train and validation) are the warm-up history; the forecast
    of row t uses rows 0 … t − 1. ``num_samples=None`` conditions on the posterior mean
    (masks off) and returns S = 1; an integer S draws S weight sets from the guide, each held for
    the whole series, with the model's dropout masks on (MC dropout: Gal's guide, or a plain
    network with dropout). Returns a Forecast of (S, N − start, D).
    """
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
    ):
        raise ValueError(f"num_samples must be None or an integer >= 1, got {num_samples!r}")
    check_member_draws(guide, num_samples)
    series, start = _check_series(model, series, start)
    device = module_device(model, guide)
    inputs, targets = series_inputs(model, series.to(device))
    was_training = (model.training, getattr(guide, "training", False))
    model.eval()
    if isinstance(guide, torch.nn.Module):
        guide.eval()
    try:
        with torch.no_grad():
            if num_samples is None:
                weights = posterior_mean(guide, inputs, targets)
                return Forecast.stack([_forecast_rows(model, weights, inputs, start)])
            draws = []
            with mc_dropout(model):
                for _ in range(num_samples):
                    weights = sample_weights(guide, inputs, targets)
                    draws.append(_forecast_rows(model, weights, inputs, start))
            return Forecast.stack(draws)
    finally:
        model.train(was_training[0])
        if isinstance(guide, torch.nn.Module):
            guide.train(was_training[1])
