r"""Ancestral sample paths: multi-step forecasts of a trained sequence regressor.

One-step forecasts condition every step on the observed past. H steps ahead nothing is
observed after the history's end, so the predictive of y_{T+1:T+H} is the joint law

    p(y_{T+1:T+H} | y_{1:T}) = ∫ Π_h p(y_{T+h} | y_{1:T+h−1}, w) q(w) dw,

sampled ancestrally: a path draws its weights w once, runs the history to get the hidden
state, then for h = 1 … H samples y_{T+h} from the predictive likelihood and feeds that sampled
value back as the next input. A path keeps its weights for all H steps, so weight uncertainty
compounds along the path as it does in the joint law (redrawing w per step would give a
different, too narrow law). With ``model.residual`` the model adds the change to the input
row's targets, which are the path's own previous value, so the level follows the path.

What a "weight draw" is per guide:

- mean-field, sharpened, autoguides: one draw of q(w) per path (evaluation mode: sharpening
  samples q(φ), as in MC prediction);
- Gal's dropout: one mask draw per path, held for the history and all H steps (with the
  guide's ``"sequence"`` scope the masks live in the model and are drawn once per path here;
  with ``"batch"`` scope the guide masks the weights, one draw per path);
- an ensemble: path i is member i mod K (``num_samples`` a multiple of K, as for MC);
- a deterministic network: the same weights for every path; only the likelihood noise (and
  the model's own dropout masks, if any, one draw per path) differs.

Paths run as one batch: the weight draws ride as the layers' draw dims (one history input
shared, one input per draw afterwards), shared weights as a batch of sequences. Weight-drop
(DropConnect) masks, if a model has them, are redrawn at every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from pyro import poutine
from torch import Tensor

from bayesrnn.evaluation.forecast import series_inputs
from bayesrnn.inference.guides.ensemble import EnsembleGuide, check_member_draws
from bayesrnn.inference.prediction.mc_draws import is_mean_field
from bayesrnn.inference.prediction.predictive import (
    draws_share_weights,
    module_device,
    sample_weights,
)
from bayesrnn.models.regressor import Forecast
from bayesrnn.models.regularisers import mc_dropout
from bayesrnn.models.rnn import BayesianRNNBase

__all__ = ["PathSampler", "sample_paths"]

_WEIGHT_BUDGET = 2**22  # weight values per batched call of draws


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_history(model, history: object) -> Tensor:
    if not isinstance(history, Tensor) or not history.is_floating_point() or history.dim() != 2:
        got = tuple(history.shape) if isinstance(history, Tensor) else type(history).__name__
        raise ValueError(f"history must be a float (N, F) tensor of rows, got {got}")
    features = model.input_size
    if history.shape[1] != features:
        raise ValueError(f"history has {history.shape[1]} columns, the model reads {features}")
    if history.shape[0] < 2:
        raise ValueError(f"history needs at least 2 rows, got {history.shape[0]}")
    if not bool(torch.isfinite(history).all()):
        raise ValueError("history contains non-finite values (nan or inf)")
    return history


def _lags(model) -> tuple[int, ...]:
    return tuple(getattr(model, "lags", ()))


def _check_covariates(model, covariates: object, horizon: int) -> Tensor | None:
    """The (H, C) covariate rows of the forecast steps, or None for a model without any."""
    extra = model.input_size - model.output_size * (1 + len(_lags(model)))
    if extra == 0:
        if covariates is not None:
            raise ValueError("the model reads no covariates; leave covariates out")
        return None
    if covariates is None:
        raise ValueError(
            f"the model reads {extra} covariate column(s) beyond its target(s): give covariates "
            f"as ({horizon}, {extra}) values, one row per forecast step"
        )
    if not isinstance(covariates, Tensor) or not covariates.is_floating_point():
        got = covariates.dtype if isinstance(covariates, Tensor) else type(covariates).__name__
        raise ValueError(f"covariates must be a float tensor, got {got}")
    if covariates.dim() == 1 and extra == 1:
        covariates = covariates.unsqueeze(-1)
    if tuple(covariates.shape) != (horizon, extra):
        raise ValueError(
            f"covariates must be ({horizon}, {extra}): one row per forecast step, one column per "
            f"covariate; got {tuple(covariates.shape)}"
        )
    if not bool(torch.isfinite(covariates).all()):
        raise ValueError("covariates contain non-finite values (nan or inf)")
    return covariates


@contextlib.contextmanager
def held_masks(
    model: torch.nn.Module, caches: dict[int, dict[int, dict[str, Tensor]]] | None = None
) -> Iterator[None]:
    """Masks drawn once per sequence and held across calls: every RNN layer of ``model`` draws
    its locked masks on its first call (one per sequence, whatever its ``mask_scope``) and reuses
    them on every later call with the same batch, so a path stepped one call at a time keeps the
    masks it ran its history with. ``caches`` (filled here) keeps the masks for a later
    ``held_masks`` of the same model."""
    layers = [m for m in model.modules() if isinstance(m, BayesianRNNBase)]
    before = [(m, m.regularisers) for m in layers]
    caches = {} if caches is None else caches
    try:
        for index, layer in enumerate(layers):
            layer.regularisers = dataclasses.replace(layer.regularisers, mask_scope="sequence")
            cache = caches.setdefault(index, {})
            draw = layer.draw_masks

            def held(batch: int, like: Tensor, draw=draw, cache=cache) -> dict[str, Tensor]:
                if batch not in cache:
                    cache[batch] = draw(batch, like)
                return cache[batch]

            layer.draw_masks = held  # an instance attribute: the class's method is untouched
        yield
    finally:
        for layer, regularisers in before:
            layer.__dict__.pop("draw_masks", None)
            layer.regularisers = regularisers


def _last_step(forecast: Forecast, batch_first: bool, paths: int) -> Forecast:
    """The forecast of the last input row of every path, as (paths, D)."""

    def pick(t: Tensor) -> Tensor:
        t = t.transpose(-3, -2) if batch_first else t  # (…, T, B, D)
        return t[..., -1, :, :].reshape(paths, t.shape[-1])

    return forecast.map(pick)


def _per_path(state, paths: int):
    """A (layers, 1, hidden) state (or an LSTM's pair) repeated for ``paths`` paths."""
    if isinstance(state, tuple):
        return tuple(_per_path(part, paths) for part in state)
    if state.shape[1] == 1 and paths > 1:
        return state.expand(-1, paths, -1).contiguous()
    return state


def _weight_draws(guide, paths: range, args: tuple) -> dict[str, Tensor]:
    """One weight draw per path, stacked on a leading dim; an ensemble's path i is member
    i mod K."""
    if isinstance(guide, EnsembleGuide):
        index = torch.tensor([i % guide.members for i in paths])
        return {
            site: guide.weights[site].detach()[index.to(guide.weights[site].device)]
            for site in guide.site_names
        }
    if _draws_q_directly(guide):  # all draws of a site at once, from q itself
        return {
            site: guide.distribution(site).sample((len(paths),)).detach()
            for site in guide.site_names
        }
    draws = [sample_weights(guide, *args) for _ in paths]
    return {site: torch.stack([d[site] for d in draws]) for site in draws[0]}


def _draws_q_directly(guide) -> bool:
    """Mean-field q, and sharpening's q(φ) (what it samples in evaluation mode): draws of its
    ``distribution(site)`` are the guide's draws."""
    from bayesrnn.inference.guides.sharpened import SharpenedGuide

    return is_mean_field(guide) or (isinstance(guide, SharpenedGuide) and not guide.training)


def _chunk(rows: Tensor, paths: int, per_draw: bool, first: bool, batch_first: bool) -> Tensor:
    """Rows (n, F) of the history as the model's input: one sequence the draws share on the
    first call of a per-draw batch, else one sequence per path (the draws' dim in front when
    the draws carry the batch)."""
    sequences = rows.unsqueeze(1)  # (n, 1, F)
    if per_draw and (first or paths == 1):  # one draw is no draw dim (the layers trim it)
        return sequences.transpose(0, 1) if batch_first else sequences
    if per_draw:  # (draws, T, B=1, F) or batch-first (draws, B=1, T, F)
        expanded = sequences.unsqueeze(0).expand(paths, -1, -1, -1)
        return expanded.transpose(1, 2) if batch_first else expanded
    expanded = sequences.expand(-1, paths, -1)
    return expanded.transpose(0, 1) if batch_first else expanded


def _advance(run, rows: Tensor, state, paths: int, per_draw: bool, batch_first: bool):
    """Read the history rows (n, F) from ``state`` (None: the first row): the forecast of the
    next row per path, (paths, D), and the state after them, one per path."""
    forecast, state = run(_chunk(rows, paths, per_draw, state is None, batch_first), state=state)
    if per_draw:  # layers without draws of their own ran the history once: one state per path
        state = _per_path(state, paths)
    return _last_step(forecast, batch_first, paths), state


def _recent_targets(model, history: Tensor, paths: int) -> Tensor | None:
    """(paths, T, D): the history's last targets, as far back as the model's longest lag
    reaches (None without lags); each path extends its copy with its own values."""
    lags = _lags(model)
    if not lags:
        return None
    return history[-max(lags) :, : model.output_size].expand(paths, -1, -1)


def _rollout(
    run, last: Forecast, state, covariates, horizon, paths, per_draw, batch_first, past, lags
):
    """Sample H steps from the forecast ``last`` (paths, D) and ``state``, each fed back as
    the next input (with its lag columns built from ``past``, the path's recent targets):
    (paths, H, D). ``state`` itself is left as it was."""
    sampled = []
    for h in range(horizon):
        y = last.distribution().sample()  # (paths, D)
        sampled.append(y)
        if h == horizon - 1:
            break
        row = y
        if lags:  # lag ℓ of the next forecast: the path's value ℓ − 1 rows before y
            past = torch.cat([past, y.unsqueeze(1)], 1)
            row = torch.cat([y, *(_lagged(past, lag) for lag in lags)], -1)
        if covariates is not None:
            row = torch.cat([row, covariates[h].expand(paths, -1)], -1)
        if per_draw and paths > 1:
            step = row.reshape(paths, 1, 1, -1)  # (draws, T=1, B=1, F): either layout
        elif per_draw:  # one draw is no draw dim (the layers trim it): one sequence
            step = row.reshape(1, 1, -1)
        else:
            step = row.unsqueeze(0) if not batch_first else row.unsqueeze(1)
        forecast, state = run(step, state=state)
        last = _last_step(forecast, batch_first, paths)
    return torch.stack(sampled, 1)


def _lagged(past: Tensor, lag: int) -> Tensor:
    """(paths, D) values ``lag`` − 1 rows before the last of ``past`` (paths, T, D); its first
    row when the series is shorter, as :func:`bayesrnn.data.lags.lag_columns` pads."""
    return past[:, max(0, past.shape[1] - lag), :]


def _run_paths(model, weights, history, covariates, horizon, paths, per_draw) -> Tensor:
    """Paths of one batch: (paths, H, D)."""
    d, batch_first = model.output_size, bool(getattr(model, "batch_first", False))
    run = poutine.condition(model, data=weights)
    last, state = _advance(run, history, None, paths, per_draw, batch_first)
    past = _recent_targets(model, history, paths)
    paths_ = _rollout(
        run, last, state, covariates, horizon, paths, per_draw, batch_first, past, _lags(model)
    )
    return paths_.reshape(paths, horizon, d)


def sample_paths(
    model,
    guide,
    history: Tensor,
    horizon: int,
    num_samples: int,
    covariates: Tensor | None = None,
) -> Tensor:
    """``num_samples`` ancestral sample paths of the next ``horizon`` rows' targets, (S, H, D).

    ``history`` (N, F) holds the model's (scaled) rows, targets first then covariates, N ≥ 2;
    the paths continue it from its last row. A model that reads covariates (F > D) needs
    ``covariates`` (H, F − D) in the same units: row h is read with the path's value of step h
    to forecast step h + 1 (so the last row is not read). A model with lags (``model.lags``)
    reads their columns right after the targets: the history carries them, and each path
    builds them from its own values. Values are in the model's units.
    Each path draws its weights once (see the module notes for each guide) and feeds its own
    samples back; torch's global generator drives every draw, so seed it to repeat paths.
    """
    horizon = _check_int("horizon", horizon)
    num_samples = _check_int("num_samples", num_samples)
    check_member_draws(guide, num_samples)
    history = _check_history(model, history)
    covariates = _check_covariates(model, covariates, horizon)
    device = module_device(model, guide)
    history = history.to(device)
    covariates = None if covariates is None else covariates.to(device, history.dtype)
    args = series_inputs(model, history)
    with _evaluating(model, guide):
        if not isinstance(guide, EnsembleGuide) and draws_share_weights(guide, *args):
            weights = sample_weights(guide, *args)
            with held_masks(model):
                return _run_paths(model, weights, history, covariates, horizon, num_samples, False)
        per_call = max(1, _WEIGHT_BUDGET // max(1, _weights_per_draw(guide, args)))
        parts = []
        for first in range(0, num_samples, per_call):
            paths = range(first, min(num_samples, first + per_call))
            weights = _weight_draws(guide, paths, args)
            with held_masks(model):
                parts.append(
                    _run_paths(model, weights, history, covariates, horizon, len(paths), True)
                )
        return torch.cat(parts)


def _weights_per_draw(guide, args: tuple) -> int:
    if isinstance(guide, EnsembleGuide):
        return sum(guide.weights[s][0].numel() for s in guide.site_names)
    return sum(v.numel() for v in sample_weights(guide, *args).values())


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module, guide) -> Iterator[None]:
    """Evaluation mode and no gradients, with the model's dropout masks on (MC dropout)."""
    was_training = (model.training, getattr(guide, "training", False))
    model.eval()
    if isinstance(guide, torch.nn.Module):
        guide.eval()
    try:
        with torch.no_grad(), mc_dropout(model):
            yield
    finally:
        model.train(was_training[0])
        if isinstance(guide, torch.nn.Module):
            guide.train(was_training[1])


class PathSampler:
    """Sample paths from origin after origin of one series, carrying the state between them.

    :func:`sample_paths` reads a whole history for every forecast; a backtest forecasts from
    origins t₁ < t₂ < … of one series, and rereading rows 1 … t each time costs O(t) per
    origin. A sampler draws its ``num_samples`` weight sets (and dropout masks) once, on its
    first call, and keeps each path's state after the rows it has read: a call whose history
    extends the last one's reads only the new rows, then samples ``horizon`` steps from a copy
    of that state. The paths of each call are those of :func:`sample_paths` on the same history
    with the sampler's weight draws (the same draws at every origin); a history that does not
    extend the last one is read from its first row. Arguments and units are
    :func:`sample_paths`'; draws come from torch's global generator.
    """

    def __init__(self, model, guide, num_samples: int) -> None:
        self.model, self.guide = model, guide
        self.num_samples = _check_int("num_samples", num_samples)
        check_member_draws(guide, self.num_samples)
        self._parts: list[dict] | None = None  # per batch of paths: weights, masks, state
        self._read: Tensor | None = None  # the history rows read so far

    def _draw(self, args: tuple) -> list[dict]:
        guide, count = self.guide, self.num_samples
        if not isinstance(guide, EnsembleGuide) and draws_share_weights(guide, *args):
            weights = sample_weights(guide, *args)
            return [{"weights": weights, "paths": count, "per_draw": False, "masks": {}}]
        per_call = max(1, _WEIGHT_BUDGET // max(1, _weights_per_draw(guide, args)))
        return [
            {
                "weights": _weight_draws(guide, paths, args),
                "paths": len(paths),
                "per_draw": True,
                "masks": {},
            }
            for paths in (
                range(first, min(count, first + per_call)) for first in range(0, count, per_call)
            )
        ]

    def __call__(self, history: Tensor, horizon: int, covariates: Tensor | None = None) -> Tensor:
        """``num_samples`` paths (S, H, D) of the ``horizon`` rows after ``history`` (N, F)."""
        model = self.model
        horizon = _check_int("horizon", horizon)
        history = _check_history(model, history)
        covariates = _check_covariates(model, covariates, horizon)
        device = module_device(model, self.guide)
        history = history.to(device)
        covariates = None if covariates is None else covariates.to(device, history.dtype)
        batch_first = bool(getattr(model, "batch_first", False))
        read = self._read
        extends = (
            read is not None
            and history.shape[0] >= read.shape[0]
            and torch.equal(history[: read.shape[0]], read)
        )
        with _evaluating(model, self.guide):
            if self._parts is None:
                self._parts = self._draw(series_inputs(model, history))
            new = history[read.shape[0] :] if extends else history
            out = []
            for part in self._parts:
                run = poutine.condition(model, data=part["weights"])
                paths, per_draw = part["paths"], part["per_draw"]
                with held_masks(model, part["masks"]):
                    if new.shape[0]:
                        state = part.get("state") if extends else None
                        part["last"], part["state"] = _advance(
                            run, new, state, paths, per_draw, batch_first
                        )
                    sampled = _rollout(
                        run, part["last"], part["state"], covariates, horizon, paths,
                        per_draw, batch_first, _recent_targets(model, history, paths),
                        _lags(model),
                    )  # fmt: skip
                out.append(sampled.reshape(paths, horizon, model.output_size))
        self._read = history.clone()
        return torch.cat(out)
