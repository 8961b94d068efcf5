"""Export variational posteriors of language models and classifiers to an ArviZ 1.x DataTree.

Guide draws are one chain of S draws, dims ``(chain=1, draw=S)`` (see
:mod:`bayesrnn.evaluation.arviz_tree`). Groups:

- ``posterior``: the chosen weight sites (never all weights by default: a PTB model has 20M),
  named and laid out as :mod:`bayesrnn.evaluation.arviz_layout` says (``rnn.bias_ih_l0`` →
  ``rnn__bias_ih_l0`` with dims (chain, draw, gate, unit));
- ``log_likelihood["obs"]``: log p(y_i | θ_s, y_<i) per observation, dims (chain, draw, token)
  for a language model, (chain, draw, sequence) for a classifier;
- ``posterior_predictive["obs"]``: one token (label) per observation drawn from draw s's
  predictive, integer;
- ``observed_data["obs"]``: the targets, no sample dims;
- ``sample_stats``, for guides with a density (mean-field, sharpened, autoguides): per draw
  ``log_q`` = log q(θ_s), ``log_prior`` = log p(θ_s) and ``kl`` = log_q − log_prior, whose mean
  over draws estimates KL[q‖p]. There is no unnormalised log posterior ``log_p``:
  ``loo_approximate_posterior`` needs log p(θ_s) + Σ log p(y_train | θ_s) over the *training*
  data, which an export of held-out tokens cannot give, and on a mean-field RNN its Pareto k̂
  sits far above 0.7 (15–66 measured) anyway;
- ``optimization``: the training trace (ELBO, NLL, KL per window; validation per epoch).

The root and ``observed_data`` carry ``split`` (when the caller names it) and ``fingerprint``,
a sha256 of the observations and their coordinates
(:func:`~bayesrnn.evaluation.arviz_layout.observations_fingerprint`): two exports with the same
fingerprint were scored on the same token ids, the condition for comparing them. Given the
vocabulary, they also carry ``text_fingerprint``
(:func:`~bayesrnn.evaluation.arviz_layout.text_fingerprint`), of the observed words themselves:
two texts that differ word for word can encode to the same ids under their runs' vocabularies.

What to compute. ``bayesrnn export`` scores held-out tokens, so the elpd estimate is the held-out
log predictive density Σ_i log mean_s p(y_i | θ_s) itself (``bayesrnn compare``, default).
``arviz_stats.loo(tree)`` and ``arviz_stats.compare({...})`` read ``log_likelihood`` (and
``posterior``, for its chain count) and run too, but PSIS-LOO leaves each token out of a
posterior that never held it: its elpd is the held-out value minus loo's ``p``, a gap that grows
with the spread of the draws (larger for a wide mean-field posterior than for Gal's).

Masks. Draws run with the model's dropout-type masks on (MC dropout), as the MC evaluation does.
Gal's guide (:class:`GalDropoutGuide`) has no density: no ``sample_stats``. With mask scope
``"batch"`` draw s is one masked network, held for the whole stream, and ``posterior`` holds
its weights. With scope ``"sequence"`` the masks act inside the model, drawn per sequence at
every window, so draw s is one MC-dropout pass rather than one network; its ``posterior`` entry
is a separate draw of q (the mean M with one fresh column mask, row mask for the embedding, as
:class:`~bayesrnn.inference.estimators.distributions.GalWeight` defines q), not the masks
that scored the tokens. Biases are never dropped: their draws all equal M.

Ensembles (:class:`~bayesrnn.inference.EnsembleGuide`): draw k is member k, so an export of K
draws holds each member once; a point mass has no density, so there is no ``sample_stats``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyro
import torch
import xarray as xr
from pyro import poutine
from pyro.distributions import Independent as PyroIndependent
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Independent

from bayesrnn.data.streams import batchify, check_token_ids
from bayesrnn.evaluation.arviz_layout import (
    SiteLayout,
    exportable_sites,
    observations_fingerprint,
    site_layouts,
    text_fingerprint,
)
from bayesrnn.evaluation.arviz_tree import (
    OPTIMIZATION_GROUP,
    SAMPLED_GROUPS,
    history_traces,
    to_datatree,
)
from bayesrnn.inference.guides.ensemble import EnsembleGuide, check_member_draws
from bayesrnn.inference.guides.gal import GalDropoutGuide
from bayesrnn.inference.guides.mean_field import MeanFieldGuide
from bayesrnn.inference.prediction.predictive import sample_weights
from bayesrnn.inference.runtime.tbptt import detach_state, plan_windows, window_batch
from bayesrnn.models.bayesian import prior_scale_sites, weight_sites
from bayesrnn.models.regularisers import bernoulli_mask, mc_dropout

_SHARED_BUDGET = 2**24  # logits per call when draws share weights (64 MB of float32)

__all__ = [
    "OPTIMIZATION_GROUP",
    "SAMPLED_GROUPS",
    "default_sites",
    "export_classifier",
    "export_language_model",
    "to_datatree",
]


def _log_density(fn, value: Tensor) -> float:
    """Σ log fn(value) accumulated in float64 (millions of weights lose digits in float32)."""
    while isinstance(fn, Independent | PyroIndependent):
        fn = fn.base_dist
    try:
        return float(fn.log_prob(value).double().sum())
    except NotImplementedError as error:
        raise ValueError(f"{type(fn).__name__} has no log density to export") from error


@contextlib.contextmanager
def evaluation_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Modules in ``eval()`` for the block, their modes restored after.

    The guide too: a :class:`SharpenedGuide` in evaluation mode samples q(φ) rather than
    sharpening on the targets, the posterior the export describes.
    """
    modes = [(m, m.training) for m in modules if isinstance(m, torch.nn.Module)]
    for module, _ in modes:
        module.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.train(mode)


def _draw(guide, args: tuple, kwargs: dict) -> tuple[dict[str, Tensor], float | None]:
    """One posterior draw θ_s and log q(θ_s) (None for Gal's guide, which has no density).

    Call it under :func:`mc_dropout` so that Gal's batch-scope masks are drawn.
    """
    if isinstance(guide, GalDropoutGuide | EnsembleGuide):  # masks, or a member: no density
        return sample_weights(guide, *args, **kwargs), None
    if isinstance(guide, MeanFieldGuide):
        # SharpenedGuide included: its draw without data is q(φ), the paper's option 1.
        weights, log_q = {}, 0.0
        for site in guide.site_names:
            fn = guide.distribution(site)
            weights[site] = fn.sample()
            log_q += _log_density(fn, weights[site])
        for site in guide.scale_sites:  # hierarchical priors' scales: q(s) is part of the draw
            fn = guide.scale_distribution(site)
            weights[site] = fn.sample()
            log_q += _log_density(fn, weights[site])
        return weights, log_q
    with poutine.block():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    weights, log_q = {}, 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        weights[name] = site["value"].detach()
        log_q += _log_density(site["fn"], site["value"])
    return weights, log_q


def _posterior_value(guide, site: str, value: Tensor) -> Tensor:
    """The value of ``site`` that ``posterior`` records for a draw (see the module docstring)."""
    if not isinstance(guide, GalDropoutGuide) or guide.scope != "sequence":
        return value
    rate = guide.rate(site)
    if rate == 0.0:
        return value
    rows = guide.groups[site] == "embedding"
    shape = (value.shape[0], 1) if rows else (1, value.shape[-1])
    return value * bernoulli_mask(shape, rate, value)


def default_sites(model: torch.nn.Module) -> list[str]:
    """The 1-D weight sites (biases), else the smallest site: small enough for any model; and
    the scales of hierarchical priors, one number each."""
    sizes = {site: value.numel() for site, value in weight_sites(model).items()}
    if not sizes:
        raise ValueError("model has no Bayesian weight sites to export (built with prior=None?)")
    biases = [site for site, value in weight_sites(model).items() if value.dim() == 1]
    return (biases or [min(sizes, key=sizes.__getitem__)]) + list(prior_scale_sites(model))


def _choose_sites(model: torch.nn.Module, sites: Sequence[str] | None) -> list[str]:
    available = list(exportable_sites(model))
    if not available:
        raise ValueError("model has no Bayesian weight sites to export (built with prior=None?)")
    if sites is None:
        return default_sites(model)
    if isinstance(sites, str):
        sites = [sites]
    unknown = [s for s in sites if s not in available]
    if unknown:
        raise ValueError(f"unknown weight sites {unknown}; the model has {available}")
    return list(sites)


def _check_complete(model: torch.nn.Module, weights: dict[str, Tensor]) -> None:
    """A draw must fix every weight site, or the model would sample the rest from its prior."""
    missing = [site for site in exportable_sites(model) if site not in weights]
    if missing:
        raise ValueError(f"the guide did not sample the weight sites {missing}")


def _check_num_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    return num_samples


def _sample_categorical(logits: Tensor) -> Tensor:
    """One draw per row by inverting the CDF with one uniform per row.

    ``torch.multinomial`` or Gumbel-max noise cost one random number per class, which dominates
    the export for a 10k-word vocabulary on CPU.
    """
    cdf = torch.softmax(logits, -1).cumsum(-1)
    u = torch.rand((*cdf.shape[:-1], 1), dtype=cdf.dtype, device=cdf.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)


def _run_conditioned(model, weights: dict[str, Tensor], args: tuple, kwargs: dict, prior: bool):
    """Trace the model with θ fixed: (return value, log p(θ) if ``prior`` else None, per-obs
    log-lik, sampled obs). The prior density is computed once per draw, not per window."""
    trace = poutine.trace(poutine.condition(model, data=weights)).get_trace(*args, **kwargs)
    log_prior = None
    if prior:
        log_prior = sum(
            _log_density(site["fn"], site["value"])
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and name in weights and name != "obs"
        )
    obs = trace.nodes["obs"]
    log_lik = obs["fn"].log_prob(obs["value"])
    return (
        trace.nodes["_RETURN"]["value"],
        log_prior,
        log_lik,
        _sample_categorical(obs["fn"].logits),
    )


class _Draws:
    """Per-draw arrays of an export, collected draw by draw."""

    def __init__(self, model, guide, sites: list[str], labels: dict[str, Sequence]) -> None:
        self.guide = guide
        self.layouts: list[SiteLayout]
        self.layouts, self.coords = site_layouts(model, sites, labels)
        self.posterior: dict[str, list[np.ndarray]] = {lay.name: [] for lay in self.layouts}
        self.log_lik, self.predictive = [], []
        self.log_q, self.log_prior = [], []

    def add(self, weights, log_q, log_prior, log_lik: Tensor, predictive: Tensor) -> None:
        for lay in self.layouts:
            value = _posterior_value(self.guide, lay.site, weights[lay.site])
            self.posterior[lay.name].append(lay.arrange(value))
        self.log_lik.append(log_lik.double().cpu().numpy())
        self.predictive.append(predictive.cpu().numpy())
        self.log_q.append(log_q)
        self.log_prior.append(log_prior)

    def groups(self) -> dict[str, Any]:
        def stack(per_draw: list) -> np.ndarray:
            return np.stack(per_draw)[np.newaxis]  # (chain=1, draw, ...)

        stats = None
        if all(q is not None for q in self.log_q):
            q, prior = (
                np.asarray(v, dtype=np.float64)[np.newaxis] for v in (self.log_q, self.log_prior)
            )
            stats = {"log_q": q, "log_prior": prior, "kl": q - prior}
        return {
            "posterior": {name: stack(v) for name, v in self.posterior.items()},
            "posterior_predictive": {"obs": stack(self.predictive)},
            "log_likelihood": {"obs": stack(self.log_lik)},
            "sample_stats": stats,
        }

    def dims(self) -> dict[str, list[str]]:
        return {lay.name: list(lay.dims) for lay in self.layouts}


def _attrs(
    model,
    guide,
    observed: dict,
    split: str | None,
    text: Sequence[Sequence[str]] | None = None,
    **extra,
) -> dict[str, dict]:
    """Root and observed_data attributes: who made the draws, which data, its fingerprint (and
    that of the observed text, when its words are known)."""
    data = {"fingerprint": observations_fingerprint(*observed.values())}
    if text is not None:
        data["text_fingerprint"] = text_fingerprint(text)
    if split is not None:
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string or None, got {split!r}")
        data["split"] = split
    root = {
        "inference_library": "pyro",
        "inference_library_version": pyro.__version__,
        "model": type(model).__name__,
        "guide": type(guide).__name__,
        "variable_names": "weight site 'a.b' is variable 'a__b'",
        **data,
        **extra,
    }
    return {"/": root, "observed_data": data}


def export_language_model(
    model,
    guide,
    stream: Tensor,
    num_samples: int = 100,
    sites: Sequence[str] | None = None,
    batch_size: int = 10,
    bptt: int = 35,
    history=None,
    *,
    split: str | None = None,
    vocabulary: Sequence[str] | None = None,
) -> xr.DataTree:
    """Posterior draws of a language model and their per-token fit to ``stream``.

    Each of the S draws θ_s is held fixed over the whole stream (Gal's sequence-scope masks
    excepted: see the module docstring), which is cut into ``batch_size`` parallel sequences and
    read in ``bptt`` windows with the hidden state carried. Token order: the targets of
    sequence 0, then of sequence 1, ..., i.e. stream order; coordinate ``token`` is each
    target's index in ``stream`` (the first token of every sequence and the remainder past
    ``batch_size``·steps are never predicted). ``sites`` picks the weight sites of the
    ``posterior`` group (default :func:`default_sites`); ``history`` (a trainer ``History``)
    fills ``optimization``; ``split`` names the data for the attributes; ``vocabulary`` (the
    tokens in id order) labels the ``vocab`` dim. arviz_stats' PSIS needs at least 25 draws
    (a Pareto tail of 5); fewer export fine but ``loo`` refuses them.
    """
    num_samples = _check_num_samples(num_samples)
    check_member_draws(guide, num_samples, exact=True)
    chosen = _choose_sites(model, sites)
    if not isinstance(stream, Tensor) or stream.numel() == 0:
        raise ValueError("stream must be a non-empty 1-D tensor of token ids")
    check_token_ids(stream, model.vocab_size, "stream")
    if getattr(model, "batch_first", False):
        raise ValueError("the stream is read in time-major windows: use batch_first=False")
    device = next(iter(weight_sites(model).values())).device
    data = batchify(stream, batch_size).to(device)
    steps = data.shape[0]
    if steps < 2:
        raise ValueError(
            f"stream of {stream.numel()} tokens gives {batch_size} sequences of {steps} step(s): "
            "nothing to predict"
        )
    windows = plan_windows(steps, min(bptt, steps - 1))
    first_inputs, first_targets = window_batch(data, windows[0])
    draws = _Draws(model, guide, chosen, {"vocab": vocabulary} if vocabulary is not None else {})
    # Draws that differ only in the model's own masks (Gal's sequence scope) share the weights:
    # k of them run as one call over k copies of the batch, each copy with its own masks.
    per_call = 1
    if getattr(guide, "draws_share_weights", False):
        logits = windows[0].length * data.shape[1] * model.vocab_size
        per_call = max(1, min(num_samples, _SHARED_BUDGET // logits))
    with evaluation_mode(model, guide), torch.no_grad(), mc_dropout(model):
        for start in range(0, num_samples, per_call):
            k = min(per_call, num_samples - start)
            weights, log_q = _draw(guide, (first_inputs, first_targets), {"state": None})
            _check_complete(model, weights)
            state, prior, lls, pps = None, None, [], []
            for index, window in enumerate(windows):
                inputs, targets = window_batch(data, window)
                (_, state), lp, ll, sampled = _run_conditioned(
                    model,
                    weights,
                    (inputs.repeat(1, k), targets.repeat(1, k)),
                    {"state": state},
                    prior=index == 0,
                )
                state = detach_state(state)
                prior = lp if index == 0 else prior
                lls.append(ll)
                pps.append(sampled)
            # (steps−1, k·B) → per copy, sequence-major (stream order)
            log_lik, sampled = (
                torch.cat(x).reshape(steps - 1, k, -1).permute(1, 2, 0).reshape(k, -1)
                for x in (lls, pps)
            )
            for copy in range(k):
                draws.add(weights, log_q, prior, log_lik[copy], sampled[copy])

    targets = data[1:].t().reshape(-1).cpu().numpy()
    starts = np.arange(data.shape[1])[:, None] * steps  # sequence j begins at stream[j·steps]
    positions = (starts + np.arange(1, steps)[None, :]).reshape(-1)
    optimization, trace_dims = (None, {}) if history is None else history_traces(history)
    return to_datatree(
        **draws.groups(),
        observed_data={"obs": targets},
        coords={"token": positions, **draws.coords},
        dims={"obs": ["token"], **draws.dims()},
        attrs=_attrs(
            model,
            guide,
            {"obs": targets, "token": positions},
            split,
            None if vocabulary is None else [[vocabulary[int(i)] for i in targets]],
            observations="tokens of the stream in stream order; coordinate = stream index",
            batch_size=int(data.shape[1]),
            bptt=int(windows[0].length),
        ),
        optimization=optimization,
        optimization_dims=trace_dims,
    )


def _sentences(
    tokens: Tensor, lengths: Tensor | None, batch_first: bool, vocabulary: Sequence[str]
) -> list[list[str]]:
    """The words of each padded sequence of a batch, its padding left out."""
    rows = (tokens if batch_first else tokens.t()).cpu().tolist()
    sizes = [len(row) for row in rows] if lengths is None else lengths.cpu().tolist()
    return [[vocabulary[i] for i in row[:size]] for row, size in zip(rows, sizes, strict=True)]


def export_classifier(
    model,
    guide,
    tokens: Tensor,
    lengths: Tensor | None,
    labels: Tensor,
    num_samples: int = 100,
    sites: Sequence[str] | None = None,
    *,
    split: str | None = None,
    vocabulary: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> xr.DataTree:
    """Like :func:`export_language_model` for a :class:`SequenceClassifier` batch.

    One observation per sequence: ``log_likelihood["obs"]`` has dims (chain, draw, sequence)
    in batch order. ``label_names`` labels the ``class`` dim of the decoder's sites.
    """
    num_samples = _check_num_samples(num_samples)
    check_member_draws(guide, num_samples, exact=True)
    chosen = _choose_sites(model, sites)
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.numel() == 0:
        raise ValueError("labels must be a non-empty 1-D tensor")
    names = {"vocab": vocabulary, "class": label_names}
    draws = _Draws(model, guide, chosen, {k: v for k, v in names.items() if v is not None})
    with evaluation_mode(model, guide), torch.no_grad(), mc_dropout(model):
        for _ in range(num_samples):
            weights, log_q = _draw(guide, (tokens, labels), {"lengths": lengths})
            _check_complete(model, weights)
            _, prior, ll, sampled = _run_conditioned(
                model, weights, (tokens, labels, lengths), {}, prior=True
            )
            draws.add(weights, log_q, prior, ll, sampled)
    observed = labels.cpu().numpy()
    sequence = np.arange(labels.numel())
    text = None
    if vocabulary is not None:
        text = _sentences(tokens, lengths, getattr(model, "batch_first", False), vocabulary)
        if label_names is not None:  # the label's name too: ids alone may name other classes
            text = [[*words, label_names[int(y)]] for words, y in zip(text, observed, strict=True)]
    return to_datatree(
        **draws.groups(),
        observed_data={"obs": observed},
        coords={"sequence": sequence, **draws.coords},
        dims={"obs": ["sequence"], **draws.dims()},
        attrs=_attrs(
            model,
            guide,
            {"obs": observed, "sequence": sequence},
            split,
            text,
            observations="sequences in batch order",
        ),
    )
