"""Predictive class distributions of labelled sequences (the classifier's MC evaluation)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro import poutine

from bayesrnn.inference.guides.ensemble import check_member_draws
from bayesrnn.inference.prediction.predictive import posterior_mean, sample_weights
from bayesrnn.models.regularisers import mc_dropout

__all__ = ["SequencePrediction", "predict_sequences"]


@dataclass(frozen=True)
class SequencePrediction:
    """Class log-probabilities of a batch: the mixture (B, C) and, with MC, each draw (S, B, C)."""

    log_probs: torch.Tensor
    draw_log_probs: torch.Tensor | None = None


def predict_sequences(
    model,
    guide,
    tokens: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    num_samples: int | None = None,
) -> SequencePrediction:
    """Predictive class distribution for a batch of (variable-length) labelled sequences.

    Posterior mean with ``num_samples=None``; otherwise the average of the probabilities of S
    draws (masks on under MC dropout). Draws run one call each: the classifier takes one weight
    draw per call.
    """
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
    ):
        raise ValueError(f"num_samples must be None or an integer >= 1, got {num_samples!r}")
    check_member_draws(guide, num_samples)
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    try:
        with torch.no_grad():
            if num_samples is None:
                logits = poutine.condition(model, data=posterior_mean(guide))(tokens, None, lengths)
                return SequencePrediction(torch.log_softmax(logits, -1))
            draws = []
            with mc_dropout(model):
                for _ in range(num_samples):
                    weights = sample_weights(guide, tokens, None, lengths)
                    logits = poutine.condition(model, data=weights)(tokens, None, lengths)
                    draws.append(torch.log_softmax(logits, -1))
            stacked = torch.stack(draws)
            return SequencePrediction(torch.logsumexp(stacked, 0) - math.log(num_samples), stacked)
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
