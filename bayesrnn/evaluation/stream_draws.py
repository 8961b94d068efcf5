"""One pass over a token stream in which each MC draw is one network from start to end.

``evaluate_stream`` redraws a draw's dropout masks at every window; a score of a whole sentence
(its likelihood under each draw, :mod:`bayesrnn.evaluation.text_uncertainty`) needs the draw
that read its first words to read its last ones too. :class:`StreamDraws` makes the masks a
model draws inside itself repeat in every window, and ``redraw="stream"`` keeps the guide's
weight draws; the pass keeps, per prediction, what the sentence scores of
:mod:`bayesrnn.evaluation.sentence_ood` need.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bayesrnn.evaluation.stream_report import TokenAccumulator
from bayesrnn.evaluation.text_uncertainty import (
    mixture_cross_entropy,
    observed_reverse_mutual_information,
)
from bayesrnn.evaluation.uncertainty import categorical_entropy
from bayesrnn.inference import evaluate_stream

__all__ = ["StreamDraws", "stream_token_values"]


class StreamDraws:
    """``evaluate_stream``'s window callback that keeps each MC draw one network for the
    whole stream and collects what the sentence scores need.

    Use as a context over ``model``: a forward pre-hook restores, before each model call of a
    window, the random state the same call of the first window started from, so the masks a
    model draws inside itself repeat in every window (with ``redraw="stream"`` keeping the
    guide's weight draws). Besides a :class:`TokenAccumulator`'s columns it keeps each draw's
    log p of each target and the mixture's cross-entropy against the draws' mean log-probs.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.tokens = TokenAccumulator()
        self._targets: list[Tensor] = []
        self._cross: list[Tensor] = []
        self._states: list[tuple[Tensor, Tensor | None]] = []
        self._call = 0
        self._hook = None

    def __enter__(self) -> StreamDraws:
        self._hook = self.model.register_forward_pre_hook(self._replay)
        return self

    def __exit__(self, *exc) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _replay(self, module, args) -> None:
        device = next(iter(module.parameters()), torch.empty(0)).device
        if self._call < len(self._states):
            cpu, cuda = self._states[self._call]
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, device)
        else:
            cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
            self._states.append((torch.get_rng_state(), cuda))
        self._call += 1

    def __call__(self, targets: Tensor, log_probs: Tensor, draw_log_probs: Tensor | None) -> None:
        self.tokens(targets, log_probs, draw_log_probs)
        if draw_log_probs is None:
            draws = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).unsqueeze(0)
            cross = categorical_entropy(log_probs)
        else:
            index = targets.unsqueeze(-1).expand(draw_log_probs.shape[0], *targets.shape, 1)
            draws = draw_log_probs.gather(-1, index).squeeze(-1)
            cross = mixture_cross_entropy(draw_log_probs, log_probs)
        self._targets.append(draws.reshape(draws.shape[0], -1).to("cpu", torch.float64))
        self._cross.append(cross.reshape(-1).to("cpu", torch.float64))
        self._call = 0  # the next window replays this one's random states

    def values(self) -> tuple[dict[str, Tensor], Tensor]:
        """Every :data:`TOKEN_SCORES` value per prediction, and each draw's log p(target)."""
        entropy = self.tokens.column("entropy")
        expected = self.tokens.column("expected_entropy")
        draws = torch.cat(self._targets, dim=1)
        cross = torch.cat(self._cross)
        values = {
            "predictive_entropy": entropy,
            "mutual_information": (entropy - expected).clamp_min(0.0),
            "expected_pairwise_kl": (cross - expected).clamp_min(0.0),
            "reverse_mutual_information": (cross - entropy).clamp_min(0.0),
            "observed_nll": -self.tokens.column("log_p_target"),
            "observed_token_rmi": observed_reverse_mutual_information(draws),
        }
        return values, draws


def stream_token_values(
    model,
    guide,
    stream: Tensor,
    *,
    num_samples: int | None,
    batch_size: int,
    bptt: int,
) -> tuple[dict[str, Tensor], Tensor]:
    """One pass over a token stream, cut as ``evaluate_stream`` cuts it (MC with
    ``num_samples`` draws, each kept for the whole stream; the posterior mean with None):
    every :data:`TOKEN_SCORES` value per prediction and each draw's (M, predictions) log p of
    the predicted tokens, for :func:`tokens_to_sentences`."""
    if stream.numel() < 2 * batch_size:
        raise ValueError(
            f"a stream of {stream.numel()} tokens cannot be cut into {batch_size} sequences of "
            "at least 2 tokens"
        )
    with StreamDraws(model) as recorder:
        evaluate_stream(
            model,
            guide,
            stream,
            batch_size=batch_size,
            bptt=bptt,
            num_samples=num_samples,
            on_window=recorder,
            redraw="stream",
        )
    return recorder.values()
