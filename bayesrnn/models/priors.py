"""Weight priors: an isotropic Gaussian and the scale mixture (per weight or per group).

A prior is a small frozen description that builds, for a weight of a given shape, the Pyro
distribution of that weight site. Keeping the description separate from the distribution lets
guides read the hyperparameters (the Gal guide needs the Gaussian's length-scale, Fortunato's
initialisation needs the mixture's standard deviation) without inspecting distribution objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from pyro.distributions import Independent, Normal, TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from bayesrnn.models.grouped_mixture import GROUPINGS, GroupedScaleMixture


class ScaleMixtureNormal(TorchDistribution):
    """π·N(0, σ1²) + (1−π)·N(0, σ2²), elementwise (Blundell et al. 2015, eq. 7).

    There is no closed-form KL against a Gaussian posterior, so ELBOs use the single-sample
    estimate log q(θ) − log p(θ) for sites with this prior.
    """

    arg_constraints = {
        "pi": constraints.unit_interval,
        "sigma1": constraints.positive,
        "sigma2": constraints.positive,
    }
    support = constraints.real
    has_rsample = False

    def __init__(self, pi, sigma1, sigma2, validate_args=None):
        self.pi, self.sigma1, self.sigma2 = broadcast_all(pi, sigma1, sigma2)
        self._compact = (self.pi, self.sigma1, self.sigma2)  # unexpanded, for cheap constants
        super().__init__(self.pi.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ScaleMixtureNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.pi = self.pi.expand(batch_shape)
        new.sigma1 = self.sigma1.expand(batch_shape)
        new.sigma2 = self.sigma2.expand(batch_shape)
        new._compact = self._compact
        super(ScaleMixtureNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros_like(self.pi)

    @property
    def variance(self) -> torch.Tensor:
        return self.pi * self.sigma1**2 + (1 - self.pi) * self.sigma2**2

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return mixture_log_density(value, *self._compact)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            first = torch.rand(shape, dtype=self.pi.dtype, device=self.pi.device) < self.pi
            scale = torch.where(first, self.sigma1.expand(shape), self.sigma2.expand(shape))
            return torch.randn(shape, dtype=self.pi.dtype, device=self.pi.device) * scale


def mixture_log_density(value, pi, sigma1, sigma2) -> torch.Tensor:
    """log(π N(x;0,σ1²) + (1−π) N(x;0,σ2²)), stable, in a few elementwise passes.

    The constants are computed on the (small, unexpanded) parameters, so a 20M-weight network
    pays for x², two scaled copies and one ``logaddexp``, not for two Gaussian densities over
    expanded parameter tensors.
    """
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    a1 = torch.log(pi) - torch.log(sigma1) - half_log_2pi
    a2 = torch.log1p(-pi) - torch.log(sigma2) - half_log_2pi
    square = value.square()
    first = square.mul(-0.5 / sigma1**2).add_(a1)
    second = square.mul(-0.5 / sigma2**2).add_(a2)
    return torch.logaddexp(first, second)


class _MixtureLogDensitySum(torch.autograd.Function):
    """Σ log(π N(x;0,σ1²) + (1−π) N(x;0,σ2²)) with a hand-written backward.

    The forward pays one ``exp`` and keeps e^(−|Δ|) of the two components' log-difference Δ, so
    the backward, −2x·(r k1 + (1−r) k2) with r the first component's responsibility, needs no
    transcendental at all (autograd through
    ``logaddexp`` would pay two more ``exp`` passes over every weight). The larger component is
    taken as computed, not as (difference + other component): in float32 that sum cancels
    catastrophically once k2·x² is large (k2 ≈ 6e5 for σ2 = e⁻⁷).
    """

    @staticmethod
    def forward(ctx, value, a1: float, k1: float, a2: float, k2: float):
        with torch.no_grad():
            square = value.square()
            first = square * (-k1) + a1  # log of the first component, π N(x; 0, σ1²)
            second = square.mul_(-k2).add_(a2)
            diff = first - second
            # exp(−|diff|) ∈ (0, 1]. The argument is floored at −60: below about −87 float32 exp
            # leaves its vector path (20× slower on x86) and most weights of a σ2 = e⁻⁷ mixture
            # land there; e⁻⁶⁰ ≈ 9e−27 changes log1p and r by less than float32 can hold.
            small = diff.abs().neg_().clamp_min_(-60.0).exp_()
            total = torch.maximum(first, second).sum() + small.log1p().sum()
        ctx.save_for_backward(value, small, diff >= 0)
        ctx.k1, ctx.k2 = k1, k2
        return total

    @staticmethod
    def backward(ctx, grad_total):
        value, small, first_larger = ctx.saved_tensors
        # r and 1 − r each from its own ratio: 1 − r formed by subtraction loses the tiny weight
        # of the smaller component, which k2 ≈ 6e5 would magnify.
        one = torch.ones_like(small)
        norm = small + 1.0
        resp = torch.where(first_larger, one, small).div_(norm)
        rest = torch.where(first_larger, small, one).div_(norm)
        slope = resp.mul_(ctx.k1).add_(rest.mul_(ctx.k2)).mul_(value).mul_(-2.0 * grad_total)
        return slope, None, None, None, None


def mixture_log_density_sum(value: torch.Tensor, pi: float, sigma1: float, sigma2: float):
    """Σ over all elements of the scale-mixture log-density (scalar hyperparameters)."""
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    a1 = math.log(pi) - math.log(sigma1) - half_log_2pi
    a2 = math.log1p(-pi) - math.log(sigma2) - half_log_2pi
    return _MixtureLogDensitySum.apply(value, a1, 0.5 / sigma1**2, a2, 0.5 / sigma2**2)


class ZeroMeanNormal(Normal):
    """N(0, s²) with a scalar s, so KL registrations can use closed forms without scanning 0s."""

    def __init__(self, scale: float, shape: torch.Size, device, dtype) -> None:
        zero = torch.zeros((), device=device, dtype=dtype)
        super().__init__(
            zero.expand(shape),
            torch.full((), scale, device=device, dtype=dtype).expand(shape),
            validate_args=False,
        )
        self.scalar_scale = float(scale)

    def expand(self, batch_shape, _instance=None):
        return ZeroMeanNormal(
            self.scalar_scale, torch.Size(batch_shape), self.loc.device, self.loc.dtype
        )


class Prior(Protocol):
    """What a model needs from a prior: the distribution of one weight site."""

    def distribution(
        self, shape: torch.Size, device: torch.device, dtype: torch.dtype
    ) -> TorchDistribution: ...

    @property
    def stddev(self) -> float: ...


@dataclass(frozen=True)
class GaussianPrior:
    """Isotropic N(0, scale²). Gal's length-scale l is 1/scale."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale must be a positive finite number, got {self.scale!r}")

    @property
    def stddev(self) -> float:
        return self.scale

    @property
    def length_scale(self) -> float:
        return 1.0 / self.scale

    def distribution(
        self, shape: torch.Size, device: torch.device, dtype: torch.dtype
    ) -> TorchDistribution:
        return Independent(ZeroMeanNormal(self.scale, shape, device, dtype), len(shape))


MIXTURE_GROUPINGS = ("weight", *GROUPINGS)


@dataclass(frozen=True)
class ScaleMixturePrior:
    """Scale-mixture prior; defaults are the DeepMind brnn_ptb example's π=0.25, σ1=e⁻¹, σ2=e⁻⁷.

    ``per`` says what one mixture draw covers. ``"weight"`` (default): each weight, the paper's
    eq. 18 and Blundell et al.; ``"row"`` / ``"column"``: each row / column of a weight matrix
    (a vector site is a ValueError); ``"whole"``: the whole site. ``brnn_ptb.py`` groups by
    rows of TensorFlow's (in, out) layout, i.e. torch columns for linear and RNN matrices,
    rows for embeddings and each bias as a whole: :func:`brnn_ptb_prior` builds that map.
    """

    pi: float = 0.25
    sigma1: float = math.exp(-1.0)
    sigma2: float = math.exp(-7.0)
    per: str = "weight"

    def __post_init__(self) -> None:
        if not 0.0 < self.pi < 1.0:
            raise ValueError(f"pi must lie in (0, 1), got {self.pi!r}")
        for name in ("sigma1", "sigma2"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.per not in MIXTURE_GROUPINGS:
            raise ValueError(f"per must be one of {MIXTURE_GROUPINGS}, got {self.per!r}")

    @property
    def stddev(self) -> float:
        """sqrt(π σ1² + (1−π) σ2²): Fortunato's σ_p, used to initialise posterior scales."""
        return math.sqrt(self.pi * self.sigma1**2 + (1 - self.pi) * self.sigma2**2)

    def distribution(
        self, shape: torch.Size, device: torch.device, dtype: torch.dtype
    ) -> TorchDistribution:
        if self.per != "weight":
            return GroupedScaleMixture(
                self.pi, self.sigma1, self.sigma2, shape, self.per, device=device, dtype=dtype
            )

        def full(v: float) -> torch.Tensor:
            return torch.full((), v, device=device, dtype=dtype)

        base = ScaleMixtureNormal(
            full(self.pi), full(self.sigma1), full(self.sigma2), validate_args=False
        )
        return Independent(base.expand(shape), len(shape))


def brnn_ptb_prior(
    pi: float = 0.25, sigma1: float = math.exp(-1.0), sigma2: float = math.exp(-7.0)
) -> dict[str, ScaleMixturePrior]:
    """The prior DeepMind's ``brnn_ptb.py`` runs, as a ``{glob: prior}`` map for the models.

    ``CustomScaleMixture.log_prob`` sums over the last axis of TensorFlow's weights, laid out
    (in, out): for a torch ``(out, in)`` linear or RNN matrix that is a column, for an
    embedding ``(vocab, dim)`` a row, and a bias vector is one group.
    """
    return {
        "*bias*": ScaleMixturePrior(pi, sigma1, sigma2, per="whole"),
        "*embedding*": ScaleMixturePrior(pi, sigma1, sigma2, per="row"),
        "*": ScaleMixturePrior(pi, sigma1, sigma2, per="column"),
    }
