"""Export a forecaster's posterior and its one-step predictions to an ArviZ 1.x ``DataTree``.

Like :mod:`bayesrnn.evaluation.arviz_export` (one chain of S draws), for a
:class:`~bayesrnn.models.SequenceRegressor` walked over a whole series. Each draw θ_s is held
for the whole series (warm-up history included, the hidden state carried from row 0); the
observations are the target values of rows ``start`` … N − 1. Groups:

- ``posterior``: the chosen weight sites (default: the biases), when the model has any;
- ``log_likelihood["obs"]``: log p(y_{t,d} | θ_s, y_{<t}) per value, dims
  (chain, draw, step, target): the D outputs are independent given θ_s, so the per-value terms
  sum to the row's log-likelihood;
- ``posterior_predictive["obs"]``: one value per step and target drawn from draw s's
  predictive, real-valued;
- ``observed_data["obs"]``: the observed values (step, target);
- with one target (D = 1) there is no ``target`` dim: (chain, draw, step) and (step,), the
  layout ArviZ's PPC plots and ``loo_metrics`` expect.

With ``units`` (a :class:`~bayesrnn.data.transforms.TargetUnits`) the three groups are in the
data's units: observations and predictive draws mapped back, and the log-likelihood that of
the data, log p(z(y)) + log dz/dy (see :mod:`bayesrnn.data.transforms`), so ELPD values agree
with the NLL of ``metrics.json``; the attributes record the transform, mean and scale.
Without it they are the model's standardised values.
- ``sample_stats`` (guides with a density: mean-field, sharpened, autoguides): ``log_q``,
  ``log_prior`` and ``kl``, as in :mod:`~bayesrnn.evaluation.arviz_export` (no ``log_p``:
  see there). Gal's Bernoulli mixture has no density: no ``sample_stats`` then.

Coordinate ``step`` is each observation's row in ``series``; ``target`` its column name; the
decoder's ``output`` dim is labelled ``loc_NAME`` then ``scale_NAME``. Weight sites are named
and laid out as in :mod:`~bayesrnn.evaluation.arviz_layout`; root and ``observed_data`` carry
``split`` (when given) and the observations' ``fingerprint``.
``arviz_stats.loo_pit(tree)`` gives the LOO-PIT of every value. Under Gal's guide (or any model
with dropout masks) the masks are on (MC dropout): draw s is one network with one set of masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr
from pyro import poutine

from bayesrnn.data.transforms import TargetUnits
from bayesrnn.evaluation.arviz_export import (
    _attrs,
    _check_complete,
    _check_num_samples,
    _choose_sites,
    _draw,
    _log_density,
    _posterior_value,
    evaluation_mode,
)
from bayesrnn.evaluation.arviz_layout import site_layouts
from bayesrnn.evaluation.arviz_tree import history_traces, to_datatree
from bayesrnn.evaluation.forecast import _check_series, series_inputs
from bayesrnn.inference.guides.ensemble import EnsembleGuide, check_member_draws
from bayesrnn.inference.guides.gal import GalDropoutGuide
from bayesrnn.inference.prediction.predictive import module_device, sample_weights
from bayesrnn.models.bayesian import weight_sites
from bayesrnn.models.regressor import Forecast
from bayesrnn.models.regularisers import mc_dropout

__all__ = ["export_forecaster"]


def _forecast_of(model, trace, start: int) -> Forecast:
    forecast = trace.nodes["_RETURN"]["value"][0]
    batch_dim = 0 if getattr(model, "batch_first", False) else 1
    return forecast.map(lambda t: t.select(batch_dim, 0)[start - 1 :].detach().double())


def export_forecaster(
    model,
    guide,
    series: torch.Tensor,
    start: int,
    num_samples: int = 100,
    *,
    sites: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    history=None,
    split: str | None = None,
    units: TargetUnits | None = None,
    times=None,
    observed_values: np.ndarray | None = None,
) -> xr.DataTree:
    """S posterior draws of a forecaster and their one-step predictions of rows ``start`` …
    N − 1 of ``series`` (N, F), as an ArviZ DataTree (see the module docstring).

    ``sites`` picks the weight sites of ``posterior`` (default: the biases);
    ``target_names`` names the D target columns (default ``y0``, ``y1``, …); ``history`` (a
    trainer ``History``) fills the ``optimization`` group; ``split`` names the data in the
    attributes; ``units`` puts values in the data's units; ``times`` (N,), the rows' times,
    becomes a ``time`` coordinate along ``step``; ``observed_values`` (N − start, D), the
    observations in data units as read (default: mapped back from ``series``).
    ``arviz_stats.loo_pit`` needs the
    draws to be at least 25 or so for its Pareto smoothing.
    """
    num_samples = _check_num_samples(num_samples)
    check_member_draws(guide, num_samples, exact=True)
    series, start = _check_series(model, series, start)
    outputs = int(getattr(model, "output_size", 1))
    names = [f"y{d}" for d in range(outputs)] if target_names is None else list(target_names)
    if len(names) != outputs or not all(isinstance(n, str) for n in names):
        raise ValueError(f"target_names must be {outputs} strings, got {target_names!r}")
    has_sites = bool(weight_sites(model))
    chosen = _choose_sites(model, sites) if has_sites or sites is not None else []
    densities = has_sites and not isinstance(guide, GalDropoutGuide | EnsembleGuide)
    device = module_device(model, guide)
    inputs, targets = series_inputs(model, series.to(device))
    observed = series[start:, :outputs].to(device).double()
    in_data = None if units is None else units.to_data(observed)
    if units is not None and observed_values is not None:
        in_data = torch.as_tensor(np.asarray(observed_values), dtype=torch.float64)
        in_data = in_data.reshape(observed.shape).to(device)

    heads = [f"loc_{n}" for n in names] + [f"scale_{n}" for n in names]
    layouts, site_coords = site_layouts(model, chosen, {"output": heads})
    posterior: dict[str, list[np.ndarray]] = {lay.name: [] for lay in layouts}
    log_lik, predictive, log_q, log_prior = [], [], [], []
    with evaluation_mode(model, guide), torch.no_grad(), mc_dropout(model):
        for _ in range(num_samples):
            if densities:
                weights, lq = _draw(guide, (inputs, targets), {})
                log_q.append(lq)
            else:
                weights = sample_weights(guide, inputs, targets)
            _check_complete(model, weights)
            conditioned = poutine.condition(model, data=weights)
            trace = poutine.trace(conditioned).get_trace(inputs)
            log_prior.append(
                sum(
                    _log_density(site["fn"], site["value"])
                    for name, site in trace.nodes.items()
                    if site["type"] == "sample" and name in weights
                )
            )
            forecast = _forecast_of(model, trace, start)
            value_log_lik = forecast.log_prob(observed)
            drawn = forecast.sample()
            if units is not None:
                value_log_lik = value_log_lik + units.log_jacobian(in_data)
                drawn = units.to_data(drawn)
            log_lik.append(value_log_lik.cpu().numpy())
            predictive.append(drawn.cpu().numpy())
            for lay in layouts:
                value = _posterior_value(guide, lay.site, weights[lay.site])
                posterior[lay.name].append(lay.arrange(value))

    def stacked(per_draw: list) -> np.ndarray:
        return np.stack(per_draw)[np.newaxis]  # (chain=1, draw, ...)

    log_lik_array = stacked(log_lik)
    sample_stats = None
    if densities:
        q, prior = (np.asarray(v, dtype=np.float64)[np.newaxis] for v in (log_q, log_prior))
        sample_stats = {"log_q": q, "log_prior": prior, "kl": q - prior}
    optimization, trace_dims = (None, {}) if history is None else history_traces(history)
    extra = {}
    df = model.df() if hasattr(model, "df") and callable(model.df) else None
    if df is not None:
        extra["df"] = [float(v) for v in df.detach().cpu()]
    if units is not None:
        extra["units"] = "data"
        extra |= {f"scaling_{k}": _attr(v) for k, v in units.to_dict().items()}
    steps = np.arange(start, series.shape[0])
    observed_values = (observed if in_data is None else in_data).cpu().numpy()
    predictive_values = stacked(predictive)
    obs_dims = ["step", "target"]
    coords = {**site_coords, "step": steps, "target": np.asarray(names)}
    if outputs == 1:  # one target: no singleton dim
        obs_dims, coords = ["step"], {**site_coords, "step": steps}
        log_lik_array, predictive_values = log_lik_array[..., 0], predictive_values[..., 0]
        observed_values = observed_values[..., 0]
    tree = to_datatree(
        posterior={name: stacked(v) for name, v in posterior.items()} or None,
        posterior_predictive={"obs": predictive_values},
        log_likelihood={"obs": log_lik_array},
        observed_data={"obs": observed_values},
        sample_stats=sample_stats,
        coords=coords,
        dims={"obs": obs_dims, **{lay.name: list(lay.dims) for lay in layouts}},
        attrs=_attrs(
            model,
            guide,
            {"obs": observed_values, "step": steps, "target": np.asarray(names)},
            split,
            observations="one-step forecasts of rows start … N − 1; coordinate = row",
            start=int(start),
            rows=int(series.shape[0]),
            likelihood=str(getattr(model, "likelihood", "gaussian")),
            target=", ".join(names),
            **extra,
        ),
        optimization=optimization,
        optimization_dims=trace_dims,
    )
    if times is not None:
        return _with_times(tree, np.asarray(times)[start : series.shape[0]])
    return tree


def _attr(value):
    """A netCDF-safe attribute: None as the string "none"."""
    return "none" if value is None else value


def _with_times(tree: xr.DataTree, times: np.ndarray) -> xr.DataTree:
    """``time`` as a coordinate along ``step`` in every group that has the dim."""
    for group in ("posterior_predictive", "log_likelihood", "observed_data"):
        node = tree[group]
        tree[group] = node.to_dataset().assign_coords(time=("step", times))
    return tree
