r"""How close an approximate posterior's predictive is to a reference posterior's (e.g. NUTS).

Izmailov et al. (2021, "What are Bayesian neural network posteriors really like?") took
full-batch HMC as the ground truth and scored each approximation by how its *predictive*
differs from HMC's on test inputs, not by its own accuracy. The functions here do the same for
both kinds of predictive the package makes. Each takes the approximation (``method``) first and
the reference second.

Categorical predictives (classifiers, next-symbol models) are probabilities over the last dim,
one row per position or example: (N, C), or (S, N, C) per-draw probabilities whose mixture
p̄ = (1/S) Σ_s p_s is the predictive.

- ``total_variation``: (1/N) Σ_n ½ Σ_c |p̄_n(c) − q̄_n(c)|, in [0, 1].
- ``top1_agreement``: (1/N) Σ_n 1{argmax p̄_n = argmax q̄_n}, in [0, 1] (Izmailov's agreement).
- ``entropy_ratio``: the spread ratio of categorical predictives, the mean *predictive*
  entropy (1/N) Σ_n H[p̄_n] of the method over the reference's, in nats; > 1: the method is less
  certain than the reference. Predictive (total) entropy rather than mutual information,
  because it exists for every method, a point estimate included; ``categorical_distances``
  adds the mutual-information ratio when both sides give per-draw probabilities.

Continuous predictives (forecasters) are, per value (N steps × D columns), either a
:class:`~bayesrnn.models.Forecast` of S draws' Gaussian or Student-t parameters (S, N, D), whose
predictive is the equal-weight mixture F = (1/S) Σ_s F_s, or a (S, N, D) tensor of samples
(the empirical distribution; (S, N) is one column).

- ``wasserstein1``: W₁(F, G) = ∫ |F(x) − G(x)| dx = ∫₀¹ |F⁻¹(u) − G⁻¹(u)| du per value,
  averaged over the N·D values; in the data's units. For two Gaussians with one scale it is
  |μ₁ − μ₂|.
- ``crps_gap``: CRPS(method) − CRPS(reference) at the observed values, each the mean over
  values of the mixture's CRPS (:mod:`bayesrnn.evaluation.forecast`); < 0: the method scores
  better than the reference.
- ``coverage_gap``: per central-interval level α, coverage(method) − coverage(reference),
  coverage being the fraction of observed values with |F(y) − ½| ≤ α/2.
- ``sd_ratio``: the spread ratio of continuous predictives, the mean predictive standard
  deviation of the method over the reference's (ratio of the means over values); the mixture
  variance is (1/S) Σ_s (σ_s² v_s + μ_s²) − μ̄², with v_s = ν/(ν − 2) for Student-t, 1 for
  Gaussian.

:func:`bayesrnn.run_predictive` reads these predictives from trained runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from bayesrnn.evaluation.forecast import (
    _check_levels,
    _mixture_samples,
    as_draws,
    crps_gaussian_mixture,
    crps_samples,
    interval_coverage,
    mixture_log_prob,
)
from bayesrnn.models.regressor import Forecast

__all__ = [
    "categorical_distances",
    "categorical_scores",
    "continuous_distances",
    "continuous_scores",
    "coverage_gap",
    "crps_gap",
    "entropy_ratio",
    "predictive_crps",
    "predictive_pit",
    "predictive_sd",
    "sd_ratio",
    "top1_agreement",
    "total_variation",
    "wasserstein1",
]

ContinuousPredictive = Forecast | Tensor
_SUM_TOLERANCE = 1e-4

# ---------------------------------------------------------------------------------------------
# Categorical predictives


def _float_tensor(value: object, name: str, expected: str) -> Tensor:
    """``value`` as a float tensor (arrays and lists as float64), or a ValueError saying
    ``name`` must be ``expected``."""
    if isinstance(value, np.ndarray | list | tuple):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if not isinstance(value, Tensor) or not value.is_floating_point():
        got = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be {expected}, got {got}")
    return value


def _as_probabilities(value: object, name: str) -> Tensor:
    """Per-draw (S, N, C) float64 probabilities; an (N, C) predictive is one draw."""
    value = _float_tensor(value, name, "a float tensor of probabilities")
    if value.dim() == 2:
        value = value.unsqueeze(0)
    if value.dim() != 3 or 0 in value.shape:
        raise ValueError(
            f"{name} must be (N, C) or (S, N, C) probabilities, got shape {tuple(value.shape)}"
        )
    value = value.detach().double()
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ValueError(f"{name} must hold finite, non-negative probabilities")
    worst = float((value.sum(-1) - 1).abs().max())
    if worst > _SUM_TOLERANCE:
        raise ValueError(
            f"{name}'s rows must sum to 1 over the last dim (off by up to {worst:.3g})"
        )
    return value


def _pair(method: object, reference: object) -> tuple[Tensor, Tensor]:
    p = _as_probabilities(method, "method")
    q = _as_probabilities(reference, "reference")
    if p.shape[1:] != q.shape[1:]:
        raise ValueError(
            f"method and reference must have the same (N, C); got {tuple(p.shape[1:])} and "
            f"{tuple(q.shape[1:])}"
        )
    return p, q


def _entropy(probs: Tensor) -> Tensor:
    """H[p] per row (nats), with 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def total_variation(method: Tensor, reference: Tensor) -> float:
    """Mean over rows of ½ Σ_c |p̄(c) − q̄(c)| between the two (mixture) predictives."""
    p, q = _pair(method, reference)
    return float(0.5 * (p.mean(0) - q.mean(0)).abs().sum(-1).mean())


def top1_agreement(method: Tensor, reference: Tensor) -> float:
    """Fraction of rows where the two predictives' most probable classes are the same."""
    p, q = _pair(method, reference)
    return float((p.mean(0).argmax(-1) == q.mean(0).argmax(-1)).double().mean())


def entropy_ratio(method: Tensor, reference: Tensor) -> float:
    """Mean predictive entropy of ``method`` over that of ``reference`` (inf where the
    reference is certain everywhere and the method is not)."""
    p, q = _pair(method, reference)
    return _ratio(float(_entropy(p.mean(0)).mean()), float(_entropy(q.mean(0)).mean()))


def _mutual_information(probs: Tensor) -> float:
    """Mean over rows of H[p̄] − (1/S) Σ_s H[p_s] (0 for one draw)."""
    return float((_entropy(probs.mean(0)) - _entropy(probs).mean(0)).clamp_min(0).mean())


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return math.nan if numerator == 0 else math.inf


def categorical_scores(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """``nll`` (nats, of the mixture), ``accuracy`` and ``predictive_entropy`` of a predictive
    (N, C) or (S, N, C) against N integer labels."""
    p = _as_probabilities(probs, "probs").mean(0)
    labels = torch.as_tensor(labels)
    if labels.shape != p.shape[:1] or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be {p.shape[0]} integers, got shape {tuple(labels.shape)}")
    if bool((labels < 0).any()) or bool((labels >= p.shape[1]).any()):
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}]")
    picked = p.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return {
        "nll": float(-picked.clamp_min(1e-300).log().mean()),
        "accuracy": float((p.argmax(-1) == labels).double().mean()),
        "predictive_entropy": float(_entropy(p).mean()),
    }


def categorical_distances(method: Tensor, reference: Tensor) -> dict[str, float]:
    """``total_variation``, ``agreement``, ``entropy_ratio`` and ``mutual_information_ratio``
    (NaN unless both give several draws: one draw has no epistemic part)."""
    p, q = _pair(method, reference)
    several = p.shape[0] > 1 and q.shape[0] > 1
    return {
        "total_variation": total_variation(p, q),
        "agreement": top1_agreement(p, q),
        "entropy_ratio": entropy_ratio(p, q),
        "mutual_information_ratio": (
            _ratio(_mutual_information(p), _mutual_information(q)) if several else math.nan
        ),
    }


# ---------------------------------------------------------------------------------------------
# Continuous predictives


def _as_continuous(value: object, name: str) -> Forecast | Tensor:
    """A float64 Forecast (S, N, D) of positive scales, or float64 samples (S, N, D)."""
    if isinstance(value, Forecast):
        try:
            return as_draws(value)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    value = _float_tensor(value, name, "a Forecast or a float tensor of samples")
    if value.dim() == 2:
        value = value.unsqueeze(-1)
    if value.dim() != 3 or 0 in value.shape:
        raise ValueError(f"{name} samples must be (S, N) or (S, N, D), got {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} samples contain non-finite values (nan or inf)")
    return value.detach().double()


def _value_shape(predictive: Forecast | Tensor) -> torch.Size:
    loc = predictive.loc if isinstance(predictive, Forecast) else predictive
    return loc.shape[1:]


def _continuous_pair(method: object, reference: object) -> tuple[Forecast | Tensor, ...]:
    p, q = _as_continuous(method, "method"), _as_continuous(reference, "reference")
    if _value_shape(p) != _value_shape(q):
        raise ValueError(
            f"method and reference must forecast the same (N, D) values; got "
            f"{tuple(_value_shape(p))} and {tuple(_value_shape(q))}"
        )
    return p, q


def _observed(observed: object, shape: torch.Size) -> Tensor:
    if isinstance(observed, np.ndarray | list | tuple):
        observed = torch.as_tensor(np.asarray(observed, dtype=np.float64))
    if not isinstance(observed, Tensor) or not observed.is_floating_point():
        raise ValueError("observed must be a float tensor of real values")
    observed = observed.detach().double()
    if observed.dim() == 1 and shape[-1] == 1:
        observed = observed.unsqueeze(-1)
    if observed.shape != shape:
        raise ValueError(f"observed must be (N, D) = {tuple(shape)}, got {tuple(observed.shape)}")
    if not bool(torch.isfinite(observed).all()):
        raise ValueError("observed contains non-finite values (nan or inf)")
    return observed


def _cdf(predictive: Forecast | Tensor, points: Tensor) -> Tensor:
    """F at ``points`` (N, D, K) per value: the mixture CDF, or the empirical one."""
    if isinstance(predictive, Forecast):
        at = points.permute(2, 0, 1).unsqueeze(1)  # (K, 1, N, D) against (S, N, D)
        return predictive.cdf(at).mean(1).permute(1, 2, 0)
    ordered = predictive.permute(1, 2, 0).sort(-1).values.contiguous()  # (N, D, S)
    below = torch.searchsorted(ordered, points.contiguous(), right=True)
    return below.double() / ordered.shape[-1]


# Standard-normal quantiles of the probabilities 1e-9 … 1 − 1e-9: grid points of each component
_GRID_Z = torch.linspace(-6.0, 6.0, 48, dtype=torch.float64)


def _grid_points(predictive: Forecast | Tensor, components: int) -> Tensor:
    """Points (N, D, K) where ``predictive``'s mass lies: quantiles of up to ``components``
    of its draws, or up to 48·components of its samples."""
    if isinstance(predictive, Forecast):
        chosen = torch.linspace(0, predictive.loc.shape[0] - 1, components).round().long()
        part = predictive.map(lambda t: t[chosen.unique()])
        probs = torch.special.ndtr(_GRID_Z).view(-1, 1, 1, 1)
        points = part.icdf(probs)  # (48, S', N, D)
        return points.reshape(-1, *points.shape[2:]).permute(1, 2, 0)
    ordered = predictive.permute(1, 2, 0).sort(-1).values
    count = ordered.shape[-1]
    keep = torch.linspace(0, count - 1, min(count, 48 * components)).round().long().unique()
    return ordered[..., keep]


def wasserstein1(
    method: ContinuousPredictive,
    reference: ContinuousPredictive,
    *,
    components: int = 64,
    per_value: bool = False,
) -> float | Tensor:
    """W₁ = ∫ |F(x) − G(x)| dx between the two predictives of each value, averaged over values.

    The integral is a midpoint sum over the sorted union of points where either side's mass
    lies: 48 quantiles (z from −6 to 6) of each of up to ``components`` of a Forecast's draws,
    or the samples themselves (all of them up to 48·components: then exact between two sample
    sets, whose CDFs are constant between those points). ``per_value=True`` returns the (N, D)
    distances instead of their mean.
    """
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ValueError(f"components must be a positive integer, got {components!r}")
    p, q = _continuous_pair(method, reference)
    points = torch.cat([_grid_points(p, components), _grid_points(q, components)], -1)
    points = points.sort(-1).values
    distances = []
    for n in range(0, points.shape[0], 16):  # a few values at a time bounds the memory
        grid = points[n : n + 16]
        middle = 0.5 * (grid[..., 1:] + grid[..., :-1])
        gaps = _cdf(_rows(p, n), middle) - _cdf(_rows(q, n), middle)
        distances.append((gaps.abs() * grid.diff(dim=-1)).sum(-1))
    result = torch.cat(distances)
    return result if per_value else float(result.mean())


def _rows(predictive: Forecast | Tensor, start: int) -> Forecast | Tensor:
    """Values ``start`` … ``start + 15`` of a predictive."""
    if isinstance(predictive, Forecast):
        return predictive.map(lambda t: t[:, start : start + 16])
    return predictive[:, start : start + 16]


def predictive_sd(predictive: ContinuousPredictive) -> Tensor:
    """The predictive standard deviation of each value (N, D): of the mixture of the draws, or
    of the samples (the empirical distribution, divisor S)."""
    p = _as_continuous(predictive, "predictive")
    if not isinstance(p, Forecast):
        return p.std(0, correction=0)
    spread = torch.ones_like(p.scale) if p.df is None else p.df / (p.df - 2)
    second = (p.scale**2 * spread + p.loc**2).mean(0)
    return (second - p.loc.mean(0) ** 2).clamp_min(0).sqrt()


def sd_ratio(method: ContinuousPredictive, reference: ContinuousPredictive) -> float:
    """Mean predictive standard deviation of ``method`` over that of ``reference``."""
    p, q = _continuous_pair(method, reference)
    return _ratio(float(predictive_sd(p).mean()), float(predictive_sd(q).mean()))


def predictive_crps(
    predictive: ContinuousPredictive, observed: Tensor, *, samples: int = 4000
) -> float:
    """Mean CRPS of the predictive at ``observed`` (N, D): exact for Gaussian mixtures, from
    about ``samples`` mixture samples for Student-t (torch's global generator), from the
    samples themselves for a sample tensor."""
    p = _as_continuous(predictive, "predictive")
    observed = _observed(observed, _value_shape(p))
    if not isinstance(p, Forecast):
        return float(crps_samples(p, observed).mean())
    if p.df is None:
        return float(crps_gaussian_mixture(p.loc, p.scale, observed).mean())
    return float(crps_samples(_mixture_samples(p, samples), observed).mean())


def crps_gap(
    method: ContinuousPredictive, reference: ContinuousPredictive, observed: Tensor
) -> float:
    """CRPS(method) − CRPS(reference) at the observed values (< 0: the method scores better)."""
    p, q = _continuous_pair(method, reference)
    return predictive_crps(p, observed) - predictive_crps(q, observed)


def predictive_pit(predictive: ContinuousPredictive, observed: Tensor) -> Tensor:
    """F(y) per observed value (N, D): the mixture CDF, or the fraction of samples ≤ y."""
    p = _as_continuous(predictive, "predictive")
    observed = _observed(observed, _value_shape(p))
    return _cdf(p, observed.unsqueeze(-1)).squeeze(-1)


def coverage_gap(
    method: ContinuousPredictive,
    reference: ContinuousPredictive,
    observed: Tensor,
    levels: Sequence[float] = (0.5, 0.9),
) -> dict[str, float]:
    """``coverage_gap_<100·level>``: the method's central-interval coverage of the observed
    values minus the reference's, per level."""
    p, q = _continuous_pair(method, reference)
    pit_p, pit_q = predictive_pit(p, observed), predictive_pit(q, observed)
    return {
        f"coverage_gap_{name}": interval_coverage(pit_p, level) - interval_coverage(pit_q, level)
        for name, level in _check_levels(levels)
    }


def continuous_distances(
    method: ContinuousPredictive,
    reference: ContinuousPredictive,
    observed: Tensor,
    levels: Sequence[float] = (0.5, 0.9),
) -> dict[str, float]:
    """``wasserstein1``, ``crps_gap``, ``coverage_gap_<level>`` and ``sd_ratio`` in one dict."""
    p, q = _continuous_pair(method, reference)
    return {
        "wasserstein1": wasserstein1(p, q),
        "crps_gap": crps_gap(p, q, observed),
        **coverage_gap(p, q, observed, levels),
        "sd_ratio": sd_ratio(p, q),
    }


def continuous_scores(
    predictive: ContinuousPredictive, observed: Tensor, levels: Sequence[float] = (0.5, 0.9)
) -> dict[str, float]:
    """``crps``, ``nll`` (of the mixture density; NaN for samples, which have none),
    ``coverage_<level>`` and ``sd`` (mean predictive standard deviation)."""
    p = _as_continuous(predictive, "predictive")
    pit = predictive_pit(p, observed)
    return {
        "crps": predictive_crps(p, observed),
        "nll": (
            float(-mixture_log_prob(p, _observed(observed, _value_shape(p))).mean())
            if isinstance(p, Forecast)
            else math.nan
        ),
        **{f"coverage_{n}": interval_coverage(pit, lv) for n, lv in _check_levels(levels)},
        "sd": float(predictive_sd(p).mean()),
    }
