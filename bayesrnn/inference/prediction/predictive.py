"""Predictions over a token stream with the hidden state carried: posterior mean or MC.

MC prediction averages *probabilities* over S draws, never log-probabilities. Each draw keeps
its own hidden state across windows. Its weights are redrawn every window by default, as Gal's
code redraws its masks every window; ``redraw="stream"`` keeps each draw's weights for the whole
stream (one network per draw, and no weight sampling after the first window). Dropout masks
that the model itself draws (Zaremba's dropout, zoneout, Gal's sequence masks) are redrawn on
every call either way. Memory stays bounded: only one window's logits exist at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from bayesrnn.data.streams import batchify
from bayesrnn.inference.guides.ensemble import check_member_draws
from bayesrnn.inference.prediction.mc_draws import (
    DECODER_CHOICES,
    is_mean_field,
    local_decoder,
    local_decoder_sites,
    local_logit_noise,
    local_target_log_probs,
    mean_field_draws,
    recurrent_counts,
)
from bayesrnn.inference.runtime.distributed import Ranks, all_reduce_sum, shard
from bayesrnn.inference.runtime.tbptt import (
    detach_state,
    model_window,
    plan_windows,
    time_major_logits,
    to_model_layout,
    window_batch,
)
from bayesrnn.models.regularisers import mc_dropout
from bayesrnn.models.sequence_share import SequenceShare, sequence_share

REDRAW_CHOICES = ("window", "stream")

WindowCallback = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], None]


def safe_exp(value: float) -> float:
    """``math.exp`` that gives ``inf`` where the result exceeds the float range (a perplexity
    of a diverged model) instead of raising ``OverflowError``."""
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


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
        return safe_exp(self.nll_per_token)


def module_device(*modules) -> torch.device:
    """Where the first parameter or buffer of ``modules`` lives (CPU if they hold none)."""
    for module in modules:
        if isinstance(module, torch.nn.Module):
            for tensor in (*module.parameters(), *module.buffers()):
                return tensor.device
    return torch.device("cpu")


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


def stacked_draws(guide, count: int, *args, **kwargs) -> dict[str, torch.Tensor]:
    """``count`` posterior draws stacked on a leading dim, for one batched model call.

    A single draw is returned unstacked, so the model keeps its fused kernel.
    """
    draws = [sample_weights(guide, *args, **kwargs) for _ in range(count)]
    if count == 1:
        return draws[0]
    return {site: torch.stack([d[site] for d in draws]) for site in draws[0]}


def _draws_within(num_samples: int, values_per_draw: int, budget: int = 2**26) -> int:
    """As many of ``num_samples`` draws as keep one call to ``budget`` values (at least 1)."""
    return max(1, min(num_samples, budget // max(1, values_per_draw)))


def draws_per_call(guide, num_samples: int, budget: int = 2**26) -> int:
    """How many draws to batch into one call: as many as fit ``budget`` weight values."""
    return _draws_within(num_samples, sum(p.numel() for p in guide.parameters()), budget)


def draws_share_weights(guide, *args, **kwargs) -> bool:
    """Whether every MC draw has the same weights (only the model's own masks are random).

    True for guides that sample nothing (plain networks with dropout or zoneout) and for guides
    that say so with a ``draws_share_weights`` attribute (Gal's sequence-scope masks).
    """
    if getattr(guide, "draws_share_weights", False):
        return True
    return not sample_weights(guide, *args, **kwargs)


def _run(model, weights, inputs, state):
    """Time-major (T, B) inputs in, time-major (…, T, B, V) logits out, whatever the model's
    ``batch_first``: the model itself sees its own layout."""
    tokens = to_model_layout(model, inputs)
    logits, state = poutine.condition(model, data=weights)(tokens, state=state)
    return time_major_logits(model, logits), detach_state(state)


def _target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) without materialising the (…, V) log-softmax."""
    # cross_entropy's fused log-softmax: half the time of gather − logsumexp over (…, V)
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    nll = torch.nn.functional.cross_entropy(
        flat, targets.expand(lead).reshape(-1), reduction="none"
    )
    return nll.neg_().reshape(lead)


def _mixture_scores(draw_log_probs, probs_sum, targets, draws: int) -> torch.Tensor:
    """log of the mean probability over ``draws`` draws (a dim-0 stack of log-probabilities).

    Target log-probabilities alone, (S, T, B), take a log-sum-exp. With full distributions,
    (S, T, B, V), the mixture is log(Σ_s p_s / S) from the running sum of probabilities: one
    ``exp`` per draw and one ``log`` per window, where a log-sum-exp over draws costs five
    passes over all S·V values. The log is floored at the smallest normal float (probabilities
    below it underflowed in the sum), and each target's entry is overwritten with its exact
    log-sum-exp, so the perplexity never meets that floor.
    """
    if probs_sum is None:
        return torch.logsumexp(draw_log_probs, 0) - math.log(draws)
    tiny = torch.finfo(probs_sum.dtype).tiny
    mixture = probs_sum.div_(draws).clamp_min_(tiny).log_()
    index = targets.unsqueeze(-1)
    picked = draw_log_probs.gather(-1, index.expand(draws, *index.shape))
    return mixture.scatter_(-1, index, torch.logsumexp(picked, 0) - math.log(draws))


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
    draws_per_batch: int | None = None,
    redraw: str = "window",
    ranks: Ranks | None = None,
    decoder: str = "weights",
    recurrent_draws: int | None = None,
) -> StreamEvaluation:
    """Perplexity of a 1-D token stream split into ``batch_size`` parallel sequences.

    ``num_samples=None`` uses the posterior mean; an integer S ≥ 1 averages the predictive
    probabilities of S draws, run ``draws_per_batch`` at a time as one batched call (default:
    one at a time on the CPU, as many as fit 2²⁶ weight values on a GPU). ``sharpened=True``
    (a :class:`SharpenedGuide`) gives :func:`bayesrnn.inference.sharpened_bound` with S paths
    (default 10): an upper bound, from the targets, on the NLL under N(μ, σ0²I), with its
    standard error. ``redraw`` ("window" or "stream") says how often an MC draw's weights are
    resampled.
    ``on_window(targets, log_probs, draw_log_probs)`` receives each window's (T, B) targets, its
    (T, B, V) predictive log-probabilities (the mixture over draws) and, with MC, the (S, T, B, V)
    log-probabilities of each draw (None otherwise), for entropy and mutual information.
    ``ranks`` (every process of a torch.distributed group calling together) shards the B
    sequences over the processes and all-reduces the sums (``on_window`` sees this process's).

    With a :class:`MeanFieldGuide` and ``redraw="window"`` a draw samples the embedding only at
    the rows its window reads (exact: the others are never read). ``decoder="local"`` (MC with
    a mean-field guide, untied decoder) draws the logits from their Gaussian marginal given h
    instead of drawing the decoder weights (:mod:`bayesrnn.inference.prediction.mc_draws`): the same
    per-token predictive in expectation. ``recurrent_draws=K`` (with ``decoder="local"``; default
    S) lets the S decoder draws share K draws of the other weights, one network run each: on
    PTB's 2 × 200 model K = 2 costs 0.5 × S posterior-mean passes against 1.4 × S for the
    default, but doubles the upward bias of S-draw perplexity (README, Benchmarks), so the
    default stays ``decoder="weights"``.
    """
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
    ):
        raise ValueError(f"num_samples must be None or an integer >= 1, got {num_samples!r}")
    if redraw not in REDRAW_CHOICES:
        raise ValueError(f"redraw must be one of {REDRAW_CHOICES}, got {redraw!r}")
    check_member_draws(guide, num_samples)
    if decoder not in DECODER_CHOICES:
        raise ValueError(f"decoder must be one of {DECODER_CHOICES}, got {decoder!r}")
    local = num_samples is not None and decoder == "local"
    if recurrent_draws is not None:
        if not local:
            raise ValueError("recurrent_draws needs MC (num_samples) with decoder='local'")
        whole = isinstance(recurrent_draws, int) and not isinstance(recurrent_draws, bool)
        if not (whole and 1 <= recurrent_draws <= num_samples):
            raise ValueError(
                f"recurrent_draws must be an integer in [1, num_samples={num_samples}], "
                f"got {recurrent_draws!r}"
            )
    if sharpened:
        unused = {
            "on_window": on_window is not None,
            "draws_per_batch": draws_per_batch is not None,
            "redraw": redraw != "window",
            "decoder": decoder != "weights",
            "ranks": ranks is not None and ranks.distributed,
        }
        return _sharpened(model, guide, stream, batch_size, bptt, num_samples, unused)
    skip = local_decoder_sites(model, guide) if local else ()
    data = _my_columns(batchify(stream, batch_size), batch_size, ranks)
    data = data.to(module_device(model, guide))
    windows = plan_windows(data.shape[0], min(bptt, data.shape[0] - 1))
    draws = 1 if num_samples is None else num_samples
    full = on_window is not None
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    nll, tokens = 0.0, 0
    try:
        # Draws that differ only in the model's own masks share one set of weights: they run
        # as one call over S copies of the batch on any device (a masked cell's per-step loop
        # then sees S·B sequences at once). Otherwise, on the CPU S fused calls beat one
        # stacked (bmm-loop) call (benchmarks/eval_cost.py); on a GPU, where per-call overhead
        # dominates, draws are stacked as far as memory allows.
        # decoder="local" with only the decoder random: h is shared by every draw
        noise_only = local and set(guide.site_names) <= set(skip)
        shared = num_samples is not None and (
            not local and draws_share_weights(guide, *model_window(model, data, windows[0]))
        )
        if shared:
            logits_per_draw = windows[0].length * batch_size * getattr(model, "vocab_size", 1)
            chunk = draws_per_batch or _draws_within(draws, logits_per_draw)
        elif num_samples is not None and data.device.type != "cpu":
            chunk = draws_per_batch or draws_per_call(guide, draws)
        else:
            chunk = draws_per_batch or 1
        fast = num_samples is not None and not shared and is_mean_field(guide)
        chunks = [min(chunk, draws - start) for start in range(0, draws, chunk)]
        if local:  # one network run per recurrent draw, its decoder draws from the same h
            chunks = recurrent_counts(draws, 1 if noise_only else recurrent_draws or draws)
        states: list = [None] * len(chunks)
        kept: list = [None] * len(chunks)  # redraw="stream": each chunk's weights, drawn once
        # MC masks: those one process would draw for these sequences
        with torch.no_grad(), sequence_share(_my_share(batch_size, ranks)):
            for window in windows:
                inputs, targets = window_batch(data, window)
                draw_log_probs = None
                if num_samples is None:
                    logits, states[0] = _run(model, posterior_mean(guide), inputs, states[0])
                    scores = (
                        torch.log_softmax(logits, -1)
                        if full
                        else _target_log_probs(logits, targets)
                    )
                elif local:
                    draw_log_probs, probs_sum = _local_window(
                        model, guide, inputs, targets, chunks, states, kept, full, redraw, ranks
                    )
                    scores = _mixture_scores(draw_log_probs, probs_sum, targets, draws)
                else:
                    per_chunk = []
                    probs_sum = None
                    with ExitStack() as scope:
                        scope.enter_context(mc_dropout(model))
                        for c, count in enumerate(chunks):
                            weights = kept[c]
                            if weights is None:
                                tokens_in = to_model_layout(model, inputs)
                                if fast:  # window draws: the embedding rows read, exactly
                                    weights = mean_field_draws(
                                        guide,
                                        1 if shared else count,
                                        tokens_in,
                                        rows_only=redraw == "window",
                                        ranks=ranks,
                                    )
                                else:
                                    weights = stacked_draws(
                                        guide,
                                        1 if shared else count,
                                        tokens_in,
                                        to_model_layout(model, targets),
                                    )
                                if redraw == "stream":
                                    kept[c] = weights
                            # shared weights, random masks: one call over S copies of the batch
                            batch = inputs.repeat(1, count) if shared else inputs
                            logits, states[c] = _run(model, weights, batch, states[c])
                            if full:  # normalised while contiguous, before any reshape
                                logits = torch.log_softmax(logits, -1)
                            if shared:
                                logits = logits.reshape(
                                    *inputs.shape[:1], count, -1, logits.shape[-1]
                                ).movedim(1, 0)
                            elif count == 1:
                                logits = logits.unsqueeze(0)
                            if full:
                                per_chunk.append(logits)
                                probs = logits.exp().sum(0)
                                probs_sum = probs if probs_sum is None else probs_sum.add_(probs)
                            else:
                                per_chunk.append(_target_log_probs(logits, targets))
                    draw_log_probs = per_chunk[0] if len(per_chunk) == 1 else torch.cat(per_chunk)
                    scores = _mixture_scores(draw_log_probs, probs_sum, targets, draws)
                scores = scores.detach()
                picked = scores.gather(-1, targets.unsqueeze(-1)) if full else scores
                nll -= float(picked.sum())
                tokens += targets.numel()
                if full:
                    on_window(targets, scores, draw_log_probs)
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    nll, tokens = all_reduce_sum([nll, float(tokens)], ranks or Ranks())
    return StreamEvaluation(nll=nll, tokens=int(tokens))


def _local_window(model, guide, inputs, targets, counts, states, kept, full, redraw, ranks):
    """One window of ``decoder="local"`` MC: per recurrent draw, one network run and its
    decoder draws given h. Returns the (S, T, B) target (or (S, T, B, V) full) log-probabilities
    and, with ``full``, the running sum of probabilities."""
    per_draw, probs_sum = [], None
    with ExitStack() as scope:
        scope.enter_context(mc_dropout(model))
        means, captured = scope.enter_context(local_decoder(model, guide))
        skip = tuple(means)  # the decoder sites drawn as logits; the rest are drawn as weights
        recurrent = [s for s in guide.site_names if s not in skip]
        for c, count in enumerate(counts):
            weights = kept[c]
            if weights is None:
                weights = {}
                if recurrent:  # the embedding rows read, exactly, when redrawn per window
                    tokens_in = to_model_layout(model, inputs)
                    rows_only = redraw == "window"
                    weights = mean_field_draws(
                        guide, 1, tokens_in, rows_only=rows_only, skip=skip, ranks=ranks
                    )
                if redraw == "stream":
                    kept[c] = weights
            mean, states[c] = _run(model, {**weights, **means}, inputs, states[c])
            scale = time_major_logits(model, captured.pop("scale"))
            noise = local_logit_noise(mean, count)
            if not full:
                per_draw.append(local_target_log_probs(mean, scale, noise, targets))
                continue
            for draw_noise in noise.unbind(0):
                log_probs = torch.log_softmax(torch.addcmul(mean, scale, draw_noise), -1)
                probs = log_probs.exp()
                probs_sum = probs if probs_sum is None else probs_sum.add_(probs)
                per_draw.append(log_probs.unsqueeze(0))
    return torch.cat(per_draw), probs_sum


SHARPENED_PATHS = 10  # evaluate_stream(sharpened=True)'s paths when num_samples is None


def _sharpened(model, guide, stream, batch_size, bptt, num_samples, unused: dict[str, bool]):
    """``evaluate_stream(sharpened=True)``: the bound, after refusing the options it ignores
    (``unused``: which of them were given)."""
    from bayesrnn.inference.prediction.sharpened_bound import (
        sharpened_bound,  # it imports this module
    )

    refused = [name for name, given in unused.items() if given]
    if refused:
        raise ValueError(
            f"sharpened=True computes the sharpened bound, which takes no {', '.join(refused)} "
            "(each path redraws θ every window, in one process)"
        )
    paths = SHARPENED_PATHS if num_samples is None else num_samples
    return sharpened_bound(
        model, guide, stream, num_samples=paths, batch_size=batch_size, bptt=bptt
    )


def observed_nll(
    model,
    guide,
    stream: torch.Tensor,
    *,
    batch_size: int = 10,
    bptt: int = 35,
    ranks: Ranks | None = None,
) -> StreamEvaluation:
    """Posterior-mean NLL of any stream model: the negative log-density of its ``obs`` site.

    For models that are not next-token classifiers (a regressor over real-valued rows): the
    stream is cut like :func:`evaluate_stream`, the state carried, and ``tokens`` counts the
    observed values.
    """
    data = _my_columns(batchify(stream, batch_size), batch_size, ranks)
    data = data.to(module_device(model, guide))
    windows = plan_windows(data.shape[0], min(bptt, data.shape[0] - 1))
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    nll, count, state = 0.0, 0, None
    try:
        with torch.no_grad():
            mean = None
            for window in windows:
                inputs, targets = model_window(model, data, window)
                if mean is None:
                    mean = posterior_mean(guide, inputs, targets, state=None)
                conditioned = poutine.condition(model, data=mean)
                trace = poutine.trace(conditioned).get_trace(inputs, targets, state=state)
                site = trace.nodes["obs"]
                log_p = site["fn"].log_prob(site["value"])
                nll -= float(log_p.sum())
                count += site["value"].numel()  # values, also where the site sums D outputs
                state = detach_state(trace.nodes["_RETURN"]["value"][1])
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    nll, count = all_reduce_sum([nll, float(count)], ranks or Ranks())
    return StreamEvaluation(nll, int(count))


def _my_share(batch_size: int, ranks: Ranks | None) -> SequenceShare | None:
    """This process's rows of the B sequences (None: one process scores them all)."""
    if ranks is None or not ranks.distributed:
        return None
    columns = shard(batch_size, ranks, "trainer.eval_batch_size")
    return SequenceShare(batch_size, columns.start, columns.stop)


def _my_columns(data: torch.Tensor, batch_size: int, ranks: Ranks | None) -> torch.Tensor:
    """Under ``ranks`` (all processes calling together), this process's parallel sequences:
    each scores B/R of them and the sums are all-reduced, as one process scoring all B."""
    if ranks is None or not ranks.distributed:
        return data
    return data[:, shard(batch_size, ranks, "trainer.eval_batch_size")]
