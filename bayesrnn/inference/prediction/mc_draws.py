"""Cheaper weight draws for MC stream prediction with a mean-field guide.

Two levers, both exact for the per-token predictive that :func:`evaluate_stream` averages:

* A draw whose weights serve one window (``redraw="window"``) needs the embedding only at the
  rows that window reads (the model's ``rows_read``): the other rows never reach the output.
  On PTB's 2 × 200 model that is a few hundred of 10,000 rows, 2M of 4.6M Gaussian draws.
* ``decoder="local"`` (local reparameterisation): given the hidden state h, a Gaussian decoder's
  logits are Gaussian, mean m = h·μᵀ + μ_b and variance s² = h²·(σ²)ᵀ + σ_b², so a draw's
  logits are m + s⊙ε instead of a product with a drawn (V, H) weight. ε is one standard
  normal V-vector per sequence and draw, shared over the window's steps: every token's logits
  still have exactly their marginal law, which is all a per-token average reads (a weight draw
  also correlates the tokens of a window). m and s cost two decoder matmuls once; each further
  draw of the decoder given the same h is one multiply-add and one normaliser over (T, B, V).
  With ``recurrent_draws=K`` < S the S draws share K draws of the other weights (each runs the
  network once): a nested Monte Carlo average, unbiased for every token's predictive
  probability like S joint draws, with more variance than S independent ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bayesrnn.inference.estimators.compiled import maybe_compiled
from bayesrnn.inference.runtime.distributed import Ranks

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
def local_decoder(
    model, guide
) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """While open, ``model.decoder`` runs at the means (the first yielded dict, to condition
    on) and each call leaves the logits' standard deviation given h in the second dict, under
    ``"scale"`` (the model's layout), for :func:`local_target_log_probs`."""
    sites = local_decoder_sites(model, guide)
    with torch.no_grad():
        variance = {s: guide.scale(s).square() for s in sites}
        means = {s: guide.loc[s].detach() for s in sites}
    weight_var = variance.get("decoder.weight")
    bias_var = variance.get("decoder.bias")
    captured: dict[str, torch.Tensor] = {}

    def keep_scale(module, args, output):
        if weight_var is not None:
            captured["scale"] = torch.nn.functional.linear(
                args[0].square(), weight_var, bias_var
            ).sqrt_()
        elif bias_var is not None:
            captured["scale"] = bias_var.sqrt().expand_as(output)
        else:
            captured["scale"] = torch.zeros_like(output)
        return output

    handle = model.decoder.register_forward_hook(keep_scale)
    try:
        yield means, captured
    finally:
        handle.remove()


def local_logit_noise(mean: torch.Tensor, count: int) -> torch.Tensor:
    """Standard normals for ``count`` draws of time-major (T, B, V) logits: (count, 1, B, V).

    One V-vector per sequence and draw, shared over the T steps: exact per token.
    """
    return torch.randn((count, 1, *mean.shape[-2:]), dtype=mean.dtype, device=mean.device)


def _log_normaliser_formula(mean, scale, noise):
    logits = mean + scale * noise
    top = logits.amax(-1, keepdim=True)
    return torch.log(torch.exp(logits - top).sum(-1)) + top.squeeze(-1)


def _log_normaliser_eager(mean, scale, noise):
    return torch.stack(
        [torch.logsumexp(torch.addcmul(mean, scale, n), -1) for n in noise.unbind(0)]
    )


_log_normaliser = maybe_compiled(_log_normaliser_formula, _log_normaliser_eager)


def local_target_log_probs(
    mean: torch.Tensor, scale: torch.Tensor, noise: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """(S, T, B) log-probabilities of ``targets`` under logits mean + scale⊙noise[s].

    Compiled, the S normalisers are one pass over (mean, scale) that never stores the
    (S, T, B, V) logits (:mod:`bayesrnn.inference.estimators.compiled`).
    """
    index = targets.unsqueeze(-1)
    picked_noise = noise.expand(-1, *mean.shape).gather(-1, index.expand(len(noise), *index.shape))
    target_logits = mean.gather(-1, index) + scale.gather(-1, index) * picked_noise
    return target_logits.squeeze(-1) - _log_normaliser(mean, scale, noise)


def recurrent_counts(num_samples: int, recurrent_draws: int) -> list[int]:
    """How many of ``num_samples`` decoder draws each of ``recurrent_draws`` draws serves."""
    base, extra = divmod(num_samples, recurrent_draws)
    return [base + (k < extra) for k in range(recurrent_draws)]
