"""Scores of forecasts made on transformed targets, in the data's units.

A model trained on z = (g(x) − m)/s predicts a Gaussian (or Student-t) mixture over z; over x
the forecast is that mixture pushed through the increasing map x = g⁻¹(z·s + m). So:

- PIT and interval coverage are those of z at z(x) (an increasing map keeps F(y) unchanged);
- quantiles (the median for MAE, the interval bounds for widths) are back-transformed ones;
- ``nll`` is −log p_Z(z(x)) − log dz/dx (the change of variables: see
  :mod:`bayesrnn.data.transforms`); a value where dz/dx is infinite (x = 0 under √) has no
  density and is left out of the mean (``nll_values`` counts those scored);
- ``crps`` and ``rmse`` come from samples of the mixture mapped to x (Pyro's
  ``crps_empirical``; the mean of the samples for RMSE).

The result has the keys of :func:`bayesrnn.evaluation.forecast.forecast_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pyro.ops.stats import crps_empirical
from torch import Tensor

from bayesrnn.data.transforms import TargetUnits
from bayesrnn.evaluation.forecast import (
    _check_levels,
    _mixture_samples,
    as_draws,
    interval_coverage,
    mixture_quantiles,
    pit_histogram,
)
from bayesrnn.models.regressor import Forecast

__all__ = ["data_unit_log_density", "data_unit_metrics"]


def data_unit_log_density(draws: Forecast, observed: Tensor, units: TargetUnits) -> Tensor:
    """log p_X(x) of the mixture of S draws (over z) at data values ``observed`` (N, D)."""
    stacked = as_draws(draws)
    z = units.to_model(observed.to(stacked.loc))
    per_draw = stacked.log_prob(z)
    log_z = torch.logsumexp(per_draw, 0) - math.log(per_draw.shape[0])
    return log_z + units.log_jacobian(observed.to(stacked.loc))


def data_unit_metrics(
    draws: Forecast,
    observed: Tensor,
    units: TargetUnits,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    bins: int = 10,
    samples: int = 4000,
) -> dict[str, object]:
    """CRPS, NLL, RMSE, MAE, coverage, widths and PIT of model-space ``draws`` (S, N, D)
    against ``observed`` (N, D) in the data's units (see the module docstring). Samples come
    from torch's global generator: seed it for reproducible CRPS and RMSE."""
    stacked = as_draws(draws)
    observed = observed.to(stacked.loc)
    named = _check_levels(levels)
    pit = stacked.cdf(units.to_model(observed)).mean(0)
    log_density = data_unit_log_density(stacked, observed, units)
    scored = torch.isfinite(log_density)
    nll = -log_density[scored]
    tails = sorted({p for _, level in named for p in ((1 - level) / 2, (1 + level) / 2)})
    quantiles = units.to_data(mixture_quantiles(stacked, [0.5, *tails]))
    at = {p: quantiles[i + 1] for i, p in enumerate(tails)}
    drawn = units.to_data(_mixture_samples(stacked, samples))
    metrics: dict[str, object] = {
        "crps": float(crps_empirical(drawn, observed).mean()),
        "nll": float(nll.mean()) if nll.numel() else math.nan,
        "rmse": float((drawn.mean(0) - observed).pow(2).mean().sqrt()),
        "mae": float((quantiles[0] - observed).abs().mean()),
    }
    for name, level in named:
        metrics[f"coverage_{name}"] = interval_coverage(pit, level)
        metrics[f"width_{name}"] = float((at[(1 + level) / 2] - at[(1 - level) / 2]).mean())
    metrics["pit"] = pit
    metrics["pit_histogram"] = pit_histogram(pit, bins)
    metrics["draws"] = int(stacked.loc.shape[0])
    metrics["values"] = int(observed.numel())
    metrics["nll_values"] = int(scored.sum())
    return metrics
