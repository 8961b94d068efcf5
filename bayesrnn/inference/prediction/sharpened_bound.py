"""The sharpened upper bound on a stream's NLL (Fortunato et al. 2017, §4, the "≤" rows).

Take φ = μ, the mean of q(φ), and the hierarchical prior p(θ | φ = μ) = N(μ, σ0²I), with θ
drawn afresh for every window and the hidden state carried along the draws. For any q,
−log p(y) ≤ E_q[−log p(y | θ)] + KL[q ‖ p(θ | φ = μ)] (Jensen). Sharpening picks, window by
window, q(θ | φ = μ, x, y) = N(μ − η⊙g, σ0²I), with g the gradient of the window's NLL at μ
given the state so far (so q reads the targets, which is why the result is only a bound), and
KL = ‖η⊙g‖²/(2σ0²) (equal variances). Summed over windows this bounds

    −log E_{θ_1, …, θ_W ~ N(μ, σ0²I)} Π_w p(y_w | x_w, θ_w, h_{w−1}),

h_{w−1} the state the same draws left. The expectation over the σ0 noise has no closed form:
each of S independent paths draws θ_w = μ − η⊙g_w + σ0·ε_w per window and carries its own
state; the mean over paths of NLL + KL is an unbiased estimate of the bound, and the spread
over paths gives its standard error. The NLL at the noiseless centre μ − η⊙g plus the KL is
*not* a bound: it leaves out the noise, and is typically below the quantity above.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
from pyro import poutine

from bayesrnn.data.streams import batchify
from bayesrnn.inference.guides.sharpened import SharpenedGuide
from bayesrnn.inference.prediction.predictive import StreamEvaluation, module_device, safe_exp
from bayesrnn.inference.runtime.tbptt import (
    detach_state,
    plan_windows,
    to_model_layout,
    window_batch,
)


@dataclass(frozen=True)
class SharpenedBound(StreamEvaluation):
    """Monte Carlo estimate of the sharpened bound: ``nll`` and ``extra_kl`` are means over
    ``num_samples`` paths of the summed NLL and KL; ``se`` is the standard error of
    ``nll_per_token`` (nats per token) over those paths."""

    num_samples: int = 0
    se: float = math.nan

    def metrics(self) -> dict[str, object]:
        """The bound for a run's metrics: per-token NLL with its standard error, perplexity
        with the 95% interval of the Monte Carlo estimate (normal approximation)."""
        low, high = (self.nll_per_token + z * self.se for z in (-1.96, 1.96))
        return {
            "nll_sharpened_bound": self.nll_per_token,
            "nll_sharpened_bound_se": self.se,
            "perplexity_sharpened_bound": self.perplexity,
            "perplexity_sharpened_bound_ci95": [safe_exp(low), safe_exp(high)],
            "sharpened_bound_samples": self.num_samples,
        }


def sharpened_bound(
    model,
    guide: SharpenedGuide,
    stream: torch.Tensor,
    *,
    num_samples: int = 10,
    batch_size: int = 10,
    bptt: int = 35,
) -> SharpenedBound:
    """Upper bound on the per-token NLL of ``stream`` under N(μ, σ0²I) (module docstring).

    ``num_samples`` (at least 2, for a standard error) independent paths, each one gradient and
    one sharpened forward pass per window. The bound holds in expectation over the draws: read
    it with its ``se``.
    """
    if not isinstance(guide, SharpenedGuide):
        raise ValueError(f"the sharpened bound needs a SharpenedGuide, got {type(guide).__name__}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(
            f"num_samples must be an integer >= 2 (a standard error needs two draws), "
            f"got {num_samples!r}"
        )
    data = batchify(stream, batch_size).to(module_device(model, guide))
    windows = plan_windows(data.shape[0], min(bptt, data.shape[0] - 1))
    nll, kl = [0.0] * num_samples, [0.0] * num_samples
    states: list = [None] * num_samples
    tokens = 0
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    try:
        for window in windows:
            inputs, targets = window_batch(data, window)
            args = (to_model_layout(model, inputs), to_model_layout(model, targets))
            for path in range(num_samples):
                path_nll, path_kl, states[path] = _path_window(model, guide, args, states[path])
                nll[path] += path_nll
                kl[path] += path_kl
            tokens += targets.numel()
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    totals = [a + b for a, b in zip(nll, kl, strict=True)]
    return SharpenedBound(
        nll=statistics.fmean(nll),
        tokens=tokens,
        extra_kl=statistics.fmean(kl),
        num_samples=num_samples,
        se=statistics.stdev(totals) / math.sqrt(num_samples) / tokens,
    )


def _path_window(model, guide, args, state) -> tuple[float, float, object]:
    """One window of one path: θ ~ N(μ − η⊙g, σ0²I) with g from this path's ``state``; the
    window's summed NLL at θ, the KL ‖η⊙g‖²/(2σ0²), and the state θ leaves (detached).
    ``args``: (tokens, targets) in the model's layout."""
    centre, kl = guide.sharpened_weights(*args, state=state)
    with torch.no_grad():
        theta = {s: c + guide.sigma0 * torch.randn_like(c) for s, c in centre.items()}
        logits, state = poutine.condition(model, data=theta)(args[0], state=state)
        nll = torch.nn.functional.cross_entropy(  # logits and targets in the model's layout
            logits.reshape(-1, logits.shape[-1]), args[1].reshape(-1), reduction="sum"
        )
    return float(nll), float(kl), detach_state(state)
