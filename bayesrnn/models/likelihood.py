"""A categorical over a large vocabulary whose log-probability is one fused cross-entropy.

``dist.Categorical(logits=…)`` normalises the logits when it is built (a log-sum-exp and a
subtraction over every (token, word) pair, and their backward), then gathers. For a language
model's softmax over 10k words those passes cost about a fifth of a training step;
``F.cross_entropy`` does the same log-likelihood in one fused log-softmax and gather, with a
fused backward. The normalised ``logits`` and ``probs`` stay available (computed on first use),
so sampling, ``enumerate_support`` and the like behave exactly as ``Categorical``'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import Categorical, TorchDistribution
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from torch import Tensor
from torch.distributions.utils import lazy_property, logits_to_probs


class TokenCategorical(Categorical):
    """``Categorical(logits=raw_logits)`` with a fused ``log_prob`` (same values and gradients)."""

    def __init__(self, logits: Tensor, validate_args: bool | None = None) -> None:
        if logits.dim() < 1:
            raise ValueError("logits must have at least one dimension (the categories)")
        self._raw_logits = logits
        self._param = logits
        self._num_events = logits.size(-1)
        # Categorical.__init__ would normalise now; skip to the base class.
        TorchDistribution.__init__(self, logits.shape[:-1], validate_args=validate_args)

    @lazy_property
    def logits(self) -> Tensor:
        return self._raw_logits - self._raw_logits.logsumexp(dim=-1, keepdim=True)

    @lazy_property
    def probs(self) -> Tensor:
        return logits_to_probs(self.logits)

    def expand(self, batch_shape, _instance=None) -> TokenCategorical:
        shape = (*torch.Size(batch_shape), self._num_events)
        return TokenCategorical(self._raw_logits.expand(shape), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if value.shape != self.batch_shape:  # broadcasting: the general (unfused) path
            return super().log_prob(value)
        flat = self._raw_logits.reshape(-1, self._num_events)
        nll = F.cross_entropy(flat, value.reshape(-1).long(), reduction="none")
        return -nll.reshape(value.shape)


def recording() -> bool:
    """Whether a Pyro trace records this call (``Predictive``, ``poutine.trace``, an ELBO).

    Without targets the models sample their ``obs`` site only then: a plain call, or the
    library's own prediction under ``poutine.condition``, wants the logits and would pay a
    softmax and a draw over every token for a value nobody reads.
    """
    return any(isinstance(handler, TraceMessenger) for handler in _PYRO_STACK)
