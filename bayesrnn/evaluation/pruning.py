"""Signal-to-noise pruning of a Gaussian weight posterior (Fortunato et al. 2017, Fig. 2).

Each weight gets the ratio |μ|/σ of its posterior mean to its posterior standard deviation;
the lowest ``fraction`` of all weights, ranked over every weight site together, have their
mean set to zero and the model is evaluated with the (pruned) posterior mean. Weights the
posterior is unsure about relative to their size carry little signal, which is why the paper
can remove ~80% of them before the perplexity moves.

Ties in the ratio are broken by position: sites in the model's order, elements in row-major
order, earlier first. The number of weights zeroed is ⌊fraction · N⌋ (N all weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from torch import Tensor
from torch.distributions import constraints

from bayesrnn.data.streams import batchify, check_token_ids
from bayesrnn.inference.prediction.predictive import safe_exp
from bayesrnn.inference.runtime.tbptt import detach_state, plan_windows, window_batch

DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

__all__ = [
    "DEFAULT_FRACTIONS",
    "PruningCurve",
    "gaussian_posterior",
    "prune_by_snr",
    "pruning_curve",
]


@dataclass(frozen=True)
class PruningCurve:
    """Posterior-mean perplexity after zeroing each fraction of weights (lowest |μ|/σ first)."""

    fractions: tuple[float, ...]
    perplexities: tuple[float, ...]
    zeroed: tuple[int, ...]
    total: int


def _is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def gaussian_posterior(guide) -> dict[str, tuple[Tensor, Tensor]]:
    """Site → (mean, standard deviation) of a diagonal-Gaussian guide, detached.

    Supports the bayesrnn mean-field guides (``.loc[site]``, ``.scale(site)``; a
    :class:`SharpenedGuide` is pruned on its q(φ)) and Pyro's ``AutoNormal``
    (``.locs.<site>``, ``.scales.<site>``, real-valued sites only). Anything else, e.g. Gal's
    Bernoulli-mixture guide, has no per-weight σ to rank by: ValueError.
    """
    with torch.no_grad():
        names = getattr(guide, "site_names", None)
        if names is not None and hasattr(guide, "loc") and callable(getattr(guide, "scale", None)):
            return {s: (guide.loc[s].detach(), guide.scale(s).detach()) for s in names}
        if isinstance(guide, AutoNormal):
            trace = guide.prototype_trace
            if trace is None:
                raise ValueError("the AutoNormal guide has not been run yet: call it once first")
            posterior = {}
            for name, site in trace.iter_stochastic_nodes():
                if not _is_real(site["fn"].support):
                    raise ValueError(
                        f"site {name!r} is not real-valued; SNR pruning ranks real weights only"
                    )
                loc = attrgetter(name)(guide.locs).detach()
                posterior[name] = (loc, attrgetter(name)(guide.scales).detach())
            if not posterior:
                raise ValueError("the AutoNormal guide has no latent sites to prune")
            return posterior
    raise ValueError(
        "pruning needs a Gaussian guide with a mean and a standard deviation per weight "
        f"(MeanFieldGuide, SharpenedGuide or AutoNormal); got {type(guide).__name__}"
    )


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    if not (0.0 <= fraction <= 1.0):  # also rejects NaN
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    return float(fraction)


def _ranking(posterior: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
    """Global indices of all weights, lowest |μ|/σ first, ties in position order."""
    snr = torch.cat([(loc.abs() / scale).flatten() for loc, scale in posterior.values()])
    if snr.isnan().any():
        raise ValueError("signal-to-noise ratio is NaN for some weight (σ = 0 and μ = 0?)")
    return torch.sort(snr, stable=True).indices


def _zeroed_count(fraction: float, total: int) -> int:
    # The tolerance keeps 0.7 · 10 at 7 despite rounding; it is far below one weight.
    return min(total, math.floor(fraction * total + 1e-6))


def _pruned_means(
    posterior: dict[str, tuple[Tensor, Tensor]], order: Tensor, count: int
) -> dict[str, Tensor]:
    flat = torch.cat([loc.flatten() for loc, _ in posterior.values()]).clone()
    flat[order[:count]] = 0.0
    weights, offset = {}, 0
    for site, (loc, _) in posterior.items():
        weights[site] = flat[offset : offset + loc.numel()].view_as(loc)
        offset += loc.numel()
    return weights


def prune_by_snr(guide, fraction: float) -> dict[str, Tensor]:
    """Posterior means with the ⌊fraction·N⌋ lowest-|μ|/σ weights (over all sites) set to 0."""
    fraction = _check_fraction(fraction)
    posterior = gaussian_posterior(guide)
    total = sum(loc.numel() for loc, _ in posterior.values())
    return _pruned_means(posterior, _ranking(posterior), _zeroed_count(fraction, total))


def _stream_perplexity(model, weights: dict[str, Tensor], data: Tensor, bptt: int) -> float:
    """Perplexity of a batchified stream with fixed weights, the state carried window to window."""
    conditioned = poutine.condition(model, data=weights)
    nll, tokens, state = 0.0, 0, None
    for window in plan_windows(data.shape[0], bptt):
        inputs, targets = window_batch(data, window)
        logits, state = conditioned(inputs, state=state)
        state = detach_state(state)
        log_probs = torch.log_softmax(logits, dim=-1)
        nll -= float(log_probs.gather(-1, targets.unsqueeze(-1)).sum())
        tokens += targets.numel()
    return safe_exp(nll / tokens)


def pruning_curve(
    model,
    guide,
    stream: Tensor,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    batch_size: int = 10,
    bptt: int = 35,
) -> PruningCurve:
    """Perplexity of ``stream`` under the pruned posterior mean, one point per fraction.

    The stream is cut into ``batch_size`` parallel sequences and read in ``bptt`` windows with
    the hidden state carried, as :func:`bayesrnn.inference.evaluate_stream` does, so the
    fraction-0 point equals its posterior-mean perplexity. The ranking is computed once.
    """
    fractions = tuple(_check_fraction(f) for f in fractions)
    if not fractions:
        raise ValueError("fractions must hold at least one value")
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None:
        check_token_ids(stream, vocab, "stream")
    if getattr(model, "batch_first", False):
        raise ValueError("the stream is read in time-major windows: use batch_first=False")
    posterior = gaussian_posterior(guide)
    device = next(iter(posterior.values()))[0].device
    data = batchify(stream, batch_size).to(device)
    if data.shape[0] < 2:
        raise ValueError(
            f"stream of {stream.numel()} tokens gives {batch_size} sequences of "
            f"{data.shape[0]} step(s): nothing to predict"
        )
    bptt = min(bptt, data.shape[0] - 1)
    order = _ranking(posterior)
    total = order.numel()
    perplexities, zeroed = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for fraction in fractions:
                count = _zeroed_count(fraction, total)
                weights = _pruned_means(posterior, order, count)
                perplexities.append(_stream_perplexity(model, weights, data, bptt))
                zeroed.append(count)
    finally:
        model.train(was_training)
    return PruningCurve(fractions, tuple(perplexities), tuple(zeroed), total)
