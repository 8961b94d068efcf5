"""Dynamic evaluation: score each window of a stream, then adapt the weights to it.

Fortunato et al. (2017, Table 1, "DE" rows: 73.4 / 70.7 with lr 0.1) evaluate their Bayesian
RNN dynamically: the test stream is read window by window with the hidden state carried, each
window is scored with the current weights and only then used for one SGD step, so no window
ever helps to predict itself. Here the adapted weights are the posterior mean μ (the point the
static evaluation scores) and the model's point-estimated parameters (the softmax bias);
``lr`` acts on the trainer's loss, the window's NLL per parallel sequence. The trained model
and guide are left as they were: the adaptation works on copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bayesrnn.data.streams import batchify
from bayesrnn.inference.prediction.predictive import (
    _run,
    _target_log_probs,
    module_device,
    posterior_mean,
    safe_exp,
)
from bayesrnn.inference.runtime.tbptt import detach_state, model_window, plan_windows, window_batch


@dataclass(frozen=True)
class DynamicEvaluation:
    """Summed NLL over ``tokens`` predictions, each window's NLL as scored before its step."""

    nll: float
    tokens: int
    lr: float
    window_nll: list[float] = field(default_factory=list)

    @property
    def nll_per_token(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return safe_exp(self.nll_per_token)


def _check_lr(lr: object) -> float:
    if (
        isinstance(lr, bool)
        or not isinstance(lr, int | float)
        or not (lr >= 0 and math.isfinite(lr))
    ):
        raise ValueError(f"dynamic evaluation lr must be a finite number >= 0, got {lr!r}")
    return float(lr)


def dynamic_evaluate(
    model: torch.nn.Module,
    guide,
    stream: torch.Tensor,
    *,
    lr: float = 0.1,
    batch_size: int = 1,
    bptt: int = 35,
    clip_norm: float | None = None,
) -> DynamicEvaluation:
    """Perplexity of ``stream`` scored window by window, adapting after each window.

    ``lr = 0`` gives the static posterior-mean perplexity. ``clip_norm`` clips each step's
    gradient norm (none by default, as the paper states only the learning rate).
    """
    lr = _check_lr(lr)
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be None or positive, got {clip_norm!r}")
    device = module_device(model, guide)
    data = batchify(stream.to(device), batch_size)
    windows = plan_windows(data.shape[0], bptt)
    inputs0, _ = model_window(model, data, windows[0])
    weights = {
        site: value.detach().clone().requires_grad_(True)
        for site, value in posterior_mean(guide, inputs0).items()
    }
    own = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in own]
    modes = [(m, m.training) for m in (model, guide) if isinstance(m, torch.nn.Module)]
    for module, _ in modes:
        module.eval()
    adapted = list(weights.values()) + own
    total, tokens, window_nll, state = 0.0, 0, [], None
    try:
        for window in windows:
            inputs, targets = window_batch(data, window)
            with torch.enable_grad():
                logits, new_state = _run(model, weights, inputs, state)
                nll = -_target_log_probs(logits, targets).sum()
            score = float(nll.detach())  # scored with the weights of the windows before
            window_nll.append(score)
            total += score
            tokens += targets.numel()
            state = detach_state(new_state)
            if lr == 0.0:
                continue
            grads = torch.autograd.grad(nll / targets.shape[1], adapted, allow_unused=True)
            grads = [
                torch.zeros_like(p) if g is None else g for p, g in zip(adapted, grads, strict=True)
            ]
            factor = 1.0
            if clip_norm is not None:
                norm = float(torch.sqrt(sum(g.square().sum() for g in grads)))
                factor = min(1.0, clip_norm / (norm + 1e-12))
            with torch.no_grad():
                for p, g in zip(adapted, grads, strict=True):
                    p.sub_(g, alpha=lr * factor)
    finally:
        with torch.no_grad():
            for p, value in zip(own, saved, strict=True):
                p.copy_(value)
        for module, training in modes:
            module.train(training)
    return DynamicEvaluation(nll=total, tokens=tokens, lr=lr, window_nll=window_nll)
