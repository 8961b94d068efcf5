"""Gaussian priors whose scale is fitted to the data: empirical Bayes and a hierarchical prior.

Both keep the prior N(0, s²) over the weights of one site and differ in what s is. There is one
s per weight *site* (``rnn.weight_ih_l0``, ``rnn.weight_hh_l0``, each bias, the decoder's
matrix), not per layer: input, recurrent and output matrices and biases have different fan-ins
and different natural sizes, and a shared s would let the largest site set the shrinkage of
the others. A site is also the unit the closed forms below sum over.

- :class:`LearnedGaussianPrior` (empirical Bayes, type-II maximum likelihood on the ELBO): s is
  a model parameter, ``<weight>_prior_log_scale`` on the weight's module (a Pyro param under
  SVI; saved with the model). The ELBO's KL[q(w) ‖ N(0, s²)] is then minimised over s as well.
  For a diagonal Gaussian q the minimiser is s*² = mean over the site of μ² + σ², and the KL at
  it is n·log s* − Σ log σ (the (μ² + σ²)/2s² terms add up to n/2 and cancel the −n/2):
  :func:`bayesrnn.inference.window_terms` uses that closed form (and writes log s* into the
  parameter), so the scale is always at its optimum for the current q. Its gradient w.r.t. q
  equals the fixed-s KL's gradient at s = s*, since ∂KL/∂s = 0 there (envelope theorem).
  Autoguides and Pyro's own ELBOs score log p(w | s) with the parameter's s and move it by its
  gradient: the same objective, reached by gradient steps instead of in closed form.
- :class:`HierarchicalGaussianPrior`: s is a latent site ``<weight>_prior_scale`` with the
  hyperprior s² ~ InverseGamma(``concentration``, ``rate``), and w | s ~ N(0, s²). The ELBO
  gains, per site, E_q[log q(w) − log p(w | s)] (closed form in w for each draw of s) and
  KL[q(s) ‖ p(s)], closed form for the log-normal q(s) that the package's Gaussian guides use.
  The inverse gamma is conjugate to the Gaussian, so with a log-normal q(s) every term is closed
  form (E_q[log s] = m, E_q[s⁻²] = exp(−2m + 2τ²)) and adds no sampling noise beyond the one
  draw of s; a half-Cauchy's heavier tail near 0 matters for few groups, while every site here
  holds tens to millions of weights, which dominate its posterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.distributions import Independent, Normal, TorchDistribution
from torch.distributions import constraints

SCALE_SUFFIX = "_prior_scale"  # the hierarchical prior's latent site: <weight>_prior_scale
LOG_SCALE_SUFFIX = "_prior_log_scale"  # the learned prior's parameter: <weight>_prior_log_scale


class ScaledZeroMeanNormal(Normal):
    """N(0, s²) over a weight site with one scalar (0-dim) tensor s, which may carry gradients.

    Its KL against a Gaussian q is registered in closed form in
    :mod:`bayesrnn.inference.estimators.learned_prior_kl`.
    """

    def __init__(self, scale: torch.Tensor, shape: torch.Size) -> None:
        if scale.dim() != 0:
            raise ValueError(f"scale must be a scalar tensor, got shape {tuple(scale.shape)}")
        self.site_scale = scale
        super().__init__(
            torch.zeros((), dtype=scale.dtype, device=scale.device).expand(shape),
            scale.expand(shape),
            validate_args=False,
        )

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.site_scale, torch.Size(batch_shape))


class LearnedScaleNormal(ScaledZeroMeanNormal):
    """N(0, s²) with s = exp(``log_scale``), a model parameter fitted by empirical Bayes.

    The library's ELBO replaces s by its optimum given a Gaussian q and stores log s* in
    ``log_scale`` (see the module docstring).
    """

    def __init__(self, log_scale: torch.Tensor, shape: torch.Size) -> None:
        self.log_scale = log_scale
        super().__init__(log_scale.exp(), shape)

    def expand(self, batch_shape, _instance=None):
        return LearnedScaleNormal(self.log_scale, torch.Size(batch_shape))


class InverseGammaScale(TorchDistribution):
    """The law of s when s² ~ InverseGamma(a, b): a prior over a standard deviation.

    log p(s) = a log b − log Γ(a) − (2a + 1) log s − b/s² + log 2 (the variance's density times
    the Jacobian 2s). A draw is s = Gamma(a, b)^(−1/2), reparameterised.
    """

    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, concentration: torch.Tensor, rate: torch.Tensor, validate_args=None):
        self.concentration, self.rate = concentration, rate
        super().__init__(concentration.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return InverseGammaScale(self.concentration.expand(shape), self.rate.expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        a, b = self.concentration, self.rate
        return (
            a * b.log()
            - torch.lgamma(a)
            - (2 * a + 1) * value.log()
            - b / value.square()
            + math.log(2.0)
        )

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        precision = torch.distributions.Gamma(self.concentration, self.rate).rsample(sample_shape)
        return precision.rsqrt()


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class LearnedGaussianPrior:
    """N(0, s²) per weight site with s fitted by empirical Bayes (see the module docstring).

    ``initial_scale`` is s before training, and the σ_p that Fortunato's initialisation of a
    mean-field guide reads. Caution: at the optimum the KL pulls each weight by μ/s*², which
    grows as the whole site shrinks; a site whose data gradient is weak can collapse to
    q = p with s → 0 (seen on sunspots with guide σ initialised at 0.01).
    """

    initial_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_positive("initial_scale", self.initial_scale)

    @property
    def stddev(self) -> float:
        return self.initial_scale

    def distribution(
        self,
        shape: torch.Size,
        device: torch.device,
        dtype: torch.dtype,
        log_scale: torch.Tensor | None = None,
    ) -> TorchDistribution:
        """The prior with the site's ``log_scale`` parameter (None: the initial scale)."""
        if log_scale is None:
            log_scale = torch.tensor(math.log(self.initial_scale), device=device, dtype=dtype)
        return Independent(LearnedScaleNormal(log_scale, shape), len(shape))


@dataclass(frozen=True)
class HierarchicalGaussianPrior:
    """w | s ~ N(0, s²), s² ~ InverseGamma(``concentration``, ``rate``), one s per weight site.

    ``initial_scale`` starts the guide's q(s) (its median) and is the σ_p of Fortunato's
    initialisation. The defaults a = b = 1 put the median of s at 1/√(ln 2) ≈ 1.2, near the
    N(0, 1) prior of the hand-set runs, with a tail wide enough to let any site's data decide.
    """

    concentration: float = 1.0
    rate: float = 1.0
    initial_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_positive("concentration", self.concentration)
        _check_positive("rate", self.rate)
        _check_positive("initial_scale", self.initial_scale)

    @property
    def stddev(self) -> float:
        return self.initial_scale

    def hyperprior(self, device: torch.device, dtype: torch.dtype) -> InverseGammaScale:
        def full(value: float) -> torch.Tensor:
            return torch.tensor(value, device=device, dtype=dtype)

        return InverseGammaScale(full(self.concentration), full(self.rate))

    def distribution(
        self,
        shape: torch.Size,
        device: torch.device,
        dtype: torch.dtype,
        scale: torch.Tensor | None = None,
    ) -> TorchDistribution:
        """The weights' law given the site's drawn ``scale`` (None: the initial scale)."""
        if scale is None:
            scale = torch.tensor(self.initial_scale, device=device, dtype=dtype)
        return Independent(ScaledZeroMeanNormal(scale, shape), len(shape))


FITTED_SCALE_PRIORS = (LearnedGaussianPrior, HierarchicalGaussianPrior)
