"""Cheaper weight draws for MC stream prediction with a mean-field guide.

Two levers, both exact for the per-token predictive that :func:`evaluate_stream` averages:

* A draw whose weights serve one window (``redraw="window"``) needs the embedding only at the
  rows that window reads (the model's ``rows_read``): the other rows never reach the output.
  On PTB's 2 × 200 model that is a few hundred of 10,000 rows, 2M of 4.6M Gaussian draws.
* ``decoder="local"`` (local reparameterisation): given the hidden state h, a Gaussian decoder's
  logits are Gaussian, mean h·μᵀ + μ_b and variance h²·(σ²)ᵀ + σ_b², so each token's logits are
  drawn from that marginal instead of drawing the (V, H) weight. Per-token probabilities are
  unchanged in expectation; only correlations across tokens of one draw are lost, which a
  per-token average does not read. It costs a second decoder matmul and V normals per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bayesrnn.inference.distributed import Ranks

DECODER_CHOICES = ("weights", "local")
DECODER_SITES = ("decoder.weight", "decoder.bias")


def is_mean_field(guide) -> bool:
    """Whether ``guide`` draws q(θ) = N(μ, σ²) per site exactly as :class:`MeanFieldGuide` does
    (subclasses that change ``forward``, such as sharpening, are not)."""
    from bayesrnn.inference.guides.mean_field import MeanFieldGuide

    return isinstance(guide, MeanFieldGuide) and type(guide).forward is MeanFieldGuide.forward


def mean_field_draws(
    guide,
    count: int,
    tokens: torch.Tensor,
    *,
    rows_only: bool,
    skip: tuple[str, ...] = (),
    ranks: Ranks | None = None,
) -> dict[str, torch.Tensor]:
    """``count`` draws of every site but ``skip`` for one call of the guide's model on ``tokens``.

    Site by site in the guide's order, so a dense draw (``rows_only=False``) is the one the
    guide's own trace gives for the same random state. ``rows_only=True`` draws only the rows
    the model reads on ``tokens`` (:meth:`MeanFieldGuide.rows_read`; the rest hold μ): exact
    for a single call only; under ``ranks`` every process draws the rows any of them reads, so
    all draw the same. One draw comes unstacked, several stacked on a leading dim, as
    :func:`stacked_draws` does.
    """
    if not is_mean_field(guide):
        raise ValueError(f"mean_field_draws needs a MeanFieldGuide, got {type(guide).__name__}")
    sites = [site for site in guide.site_names if site not in skip]
    rows = {  # the same rows for every draw: read (and gathered over ranks) once
        site: guide.rows_read(site, tokens, ranks=ranks) if rows_only else None for site in sites
    }
    draws = []
    with torch.no_grad():
        for _ in range(count):
            draws.append(
                {site: guide.distribution(site, rows[site]).rsample().detach() for site in sites}
            )
    if count == 1:
        return draws[0]
    return {site: torch.stack([d[site] for d in draws]) for site in draws[0]}


def local_decoder_sites(model, guide) -> tuple[str, ...]:
    """The decoder sites ``decoder="local"`` replaces by their marginal over logits.

    Raises ValueError where that is not exact: a guide other than plain mean-field, or a
    decoder tied to the embedding (its draw is also the input embedding's).
    """
    if not is_mean_field(guide):
        raise ValueError(
            f"decoder='local' needs a MeanFieldGuide (Gaussian weights), got {type(guide).__name__}"
        )
    if getattr(model, "tie_weights", False):
        raise ValueError("decoder='local' needs an untied decoder: tied weights share the draw")
    if not isinstance(getattr(model, "decoder", None), torch.nn.Module):
        name = type(model).__name__
        raise ValueError(f"decoder='local' needs a model with a decoder, got {name}")
    return tuple(site for site in DECODER_SITES if site in guide.site_names)


@contextmanager
def local_decoder(model, guide) -> Iterator[dict[str, torch.Tensor]]:
    """While open, ``model.decoder`` run at the means (the yielded values, to condition on)
    returns logits drawn from their Gaussian marginal given its input h, fresh per token."""
    sites = local_decoder_sites(model, guide)
    with torch.no_grad():
        variance = {s: guide.scale(s).square() for s in sites}
        means = {s: guide.loc[s].detach() for s in sites}
    weight_var = variance.get("decoder.weight")
    bias_var = variance.get("decoder.bias")

    def add_noise(module, args, output):
        if weight_var is not None:
            scale = torch.nn.functional.linear(args[0].square(), weight_var, bias_var).sqrt_()
        elif bias_var is not None:
            scale = bias_var.sqrt()
        else:
            return output
        return output.addcmul_(scale, torch.randn_like(output))

    handle = model.decoder.register_forward_hook(add_noise)
    try:
        yield means
    finally:
        handle.remove()
