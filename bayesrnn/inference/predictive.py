"""Predictions over a token stream with the hidden state carried: posterior mean or MC.

MC prediction averages *probabilities* over S draws (log-sum-exp of the log-probabilities minus
log S), never log-probabilities. Each draw keeps its own hidden state across windows and its
weights are redrawn every window, as Gal's code redraws its masks every window. Memory stays
bounded: only one window's logits exist at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from bayesrnn.data.streams import batchify
from bayesrnn.inference.guides.sharpened import SHARPENING_SITE
from bayesrnn.inference.tbptt import detach_state, plan_windows, window_batch
from bayesrnn.models.regularisers import mc_dropout

WindowCallback = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], None]


@dataclass(frozen=True)
class StreamEvaluation:
    """Summed NLL (nats) over ``tokens`` predictions; ``extra_kl`` is sharpening's bound term."""

    nll: float
    tokens: int
    extra_kl: float = 0.0

    @property
    def nll_per_token(self) -> float:
        return (self.nll + self.extra_kl) / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token)


def posterior_mean(guide, *args, **kwargs) -> dict[str, torch.Tensor]:
    """The guide's point summary (our guides' means, an autoguide's median)."""
    with torch.no_grad():
        return {k: v.detach() for k, v in guide.median(*args, **kwargs).items()}


def sample_weights(guide, *args, **kwargs) -> dict[str, torch.Tensor]:
    """One posterior draw of every latent site the guide samples."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    return {
        name: site["value"].detach()
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def _token_log_probs(model, weights, inputs, state):
    logits, state = poutine.condition(model, data=weights)(inputs, state=state)
    return torch.log_softmax(logits, dim=-1), detach_state(state)


def evaluate_stream(
    model,
    guide,
    stream: torch.Tensor,
    *,
    batch_size: int = 10,
    bptt: int = 35,
    num_samples: int | None = None,
    sharpened: bool = False,
    on_window: WindowCallback | None = None,
) -> StreamEvaluation:
    """Perplexity of a 1-D token stream split into ``batch_size`` parallel sequences.

    ``num_samples=None`` uses the posterior mean; an integer S ≥ 1 averages the predictive
    probabilities of S draws. ``sharpened=True`` (a :class:`SharpenedGuide`) sharpens the mean
    on each window's targets and adds the extra KL: an upper bound on the perplexity.
    ``on_window(targets, log_probs, draw_log_probs)`` receives each window's (T, B) targets, its
    (T, B, V) predictive log-probabilities (the mixture over draws) and, with MC, the (S, T, B, V)
    log-probabilities of each draw (None otherwise), for entropy and mutual information.
    """
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples must be None or an integer >= 1, got {num_samples!r}")
    device = next((p.device for p in guide.parameters()), torch.device("cpu"))
    data = batchify(stream, batch_size).to(device)
    windows = plan_windows(data.shape[0], min(bptt, data.shape[0] - 1))
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    nll, extra, tokens = 0.0, 0.0, 0
    draws = 1 if num_samples is None else num_samples
    states = [None] * draws
    try:
        with torch.no_grad() if not sharpened else torch.enable_grad():
            for window in windows:
                inputs, targets = window_batch(data, window)
                draw_log_probs = None
                if sharpened:
                    log_probs, states[0], kl = _sharpened_window(
                        model, guide, inputs, targets, states[0]
                    )
                    extra += kl
                elif num_samples is None:
                    weights = posterior_mean(guide, inputs, targets)
                    log_probs, states[0] = _token_log_probs(model, weights, inputs, states[0])
                else:
                    per_draw = []
                    with mc_dropout(model):
                        for s in range(draws):
                            weights = sample_weights(guide, inputs, targets)
                            lp, states[s] = _token_log_probs(model, weights, inputs, states[s])
                            per_draw.append(lp)
                    draw_log_probs = torch.stack(per_draw)
                    log_probs = torch.logsumexp(draw_log_probs, 0) - math.log(draws)
                log_probs = log_probs.detach()
                nll -= float(log_probs.gather(-1, targets.unsqueeze(-1)).sum())
                tokens += targets.numel()
                if on_window is not None:
                    on_window(targets, log_probs, draw_log_probs)
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    return StreamEvaluation(nll=nll, tokens=tokens, extra_kl=extra)


def _sharpened_window(model, guide, inputs, targets, state):
    trace = poutine.trace(guide).get_trace(inputs, targets, state=state)
    weights = {
        name: site["value"].detach()
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    kl = float(trace.nodes[SHARPENING_SITE]["fn"].log_factor.detach())
    with torch.no_grad():
        log_probs, state = _token_log_probs(model, weights, inputs, state)
    return log_probs, state, kl
