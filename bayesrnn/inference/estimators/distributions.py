"""Guide-site distributions whose KL against the model's prior is registered with torch.

:class:`bayesrnn.inference.WindowELBO` asks ``kl_divergence(guide_fn, prior_fn)`` for each
weight site and falls back to the single-sample log q − log p only where none is registered, so
these registrations are how the Gal and sharpening KLs enter the ELBO.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import Independent, Normal, TorchDistribution
from torch.distributions import constraints, kl_divergence, register_kl

from bayesrnn.inference.estimators.compiled import maybe_compiled
from bayesrnn.inference.estimators.fused_draw import (
    gaussian_draw,
    gaussian_draw_with_log_sum,
    sharpened_draw,
)
from bayesrnn.inference.estimators.mixture_kl import HALF_LOG_2PI, expected_mixture_log_density
from bayesrnn.inference.estimators.scaling import kl_left_out
from bayesrnn.inference.estimators.softplus import scale_and_log_sum, softplus_scale
from bayesrnn.models.grouped_mixture import GroupedScaleMixture
from bayesrnn.models.priors import (
    ScaleMixtureNormal,
    ZeroMeanNormal,
    mixture_log_density,
    mixture_log_density_sum,
)
from bayesrnn.models.regularisers import bernoulli_mask


class ReparamNormal(Normal):
    """A Normal that remembers (ε, θ) of its last ``rsample``.

    The single-sample KL against the scale mixture then needs log q(θ) = −ε²/2 − log σ − c
    instead of a Gaussian density over 20M weights.
    """

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = torch.addcmul(self.loc, self.scale, eps)
        self._last = (eps, value)
        return value


class ExpectedKLNormal(ReparamNormal):
    """A :class:`ReparamNormal` whose KL against a scale mixture is computed, not sampled.

    Per-weight mixture: −H[q] − E_q[log p(θ)] with E_q[log p] by the Gauss–Hermite rule of
    :mod:`bayesrnn.inference.estimators.mixture_kl` (``quadrature_order`` nodes). Grouped mixtures
    (``brnn_ptb.py``'s rows): each group's log-density is a log-sum-exp of terms affine in the
    group's Σθ², so Jensen gives E_q[log p] ≥ log p at E_q[Σθ²] = Σ(μ² + σ²); the KL used is
    that upper bound, exact to float precision whenever one component dominates a group (any
    row of real weights: log-densities a few hundred nats apart).
    """

    quadrature_order: int = 8


class SoftplusNormal(ReparamNormal):
    """N(loc, σ²) with σ = softplus(ρ) + ``floor`` computed only when asked, fused with its draw.

    A draw computes σ, θ = μ + σ⊙ε and Σ log σ (for the KL's entropy term) in one pass over the
    weights (:mod:`bayesrnn.inference.estimators.fused_draw`), skipping Σ log σ in a window
    whose KL is left out. With ``rows``, a draw samples only those rows of dim 0 and the others
    hold ``loc``: for
    a window that reads only ``rows`` (a language model's embedding: a few hundred of 10,000 word
    types) they cannot change the likelihood, so with the KL computed from (μ, σ) rather than
    from the draw the window's ELBO estimate has the same distribution as with a dense draw, at
    the cost of the rows it reads. Under a plate (vectorised particles) the distribution is
    dense again. ``scale`` may be given when σ is already known (prediction reuses it).
    """

    def __init__(
        self,
        loc: torch.Tensor,
        rho: torch.Tensor,
        floor: float,
        rows: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ):
        self.loc, self._rho, self._rows, self._floor = loc, rho, rows, float(floor)
        self._scale, self._log_scale_sum = scale, None
        TorchDistribution.__init__(self, loc.shape, validate_args=False)

    @property
    def scale(self) -> torch.Tensor:  # type: ignore[override]
        if self._scale is None:
            self._scale, self._log_scale_sum = scale_and_log_sum(self._rho, self._floor)
        return self._scale

    def log_scale_sum(self) -> torch.Tensor:
        """Σ log σ over every weight (the entropy's and log q's σ term)."""
        if self._log_scale_sum is None:
            self._log_scale_sum = self.scale.log().sum()
        return self._log_scale_sum

    def dense(self) -> ReparamNormal:
        normal = self._dense_kind(self.loc, self.scale, validate_args=False)
        normal.quadrature_order = self.quadrature_order
        return normal

    _dense_kind = ReparamNormal

    def expand(self, batch_shape, _instance=None):
        return self.dense().expand(batch_shape, _instance)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape:
            return self.dense().rsample(sample_shape)
        if self._rows is not None:
            rows = self._rows
            sigma = softplus_scale(self._rho[rows], self._floor)
            eps = torch.randn(sigma.shape, dtype=sigma.dtype, device=sigma.device)
            return self.loc.index_add(0, rows, sigma * eps)
        eps = torch.randn(self.loc.shape, dtype=self.loc.dtype, device=self.loc.device)
        if self._scale is not None:
            value = torch.addcmul(self.loc, self._scale, eps)
        elif kl_left_out():  # this window computes no KL: no Σ log σ
            value, self._scale = gaussian_draw(self.loc, self._rho, eps, self._floor)
        else:
            value, self._scale, self._log_scale_sum = gaussian_draw_with_log_sum(
                self.loc, self._rho, eps, self._floor
            )
        self._last = (eps, value)
        return value


class ExpectedSoftplusNormal(SoftplusNormal, ExpectedKLNormal):
    """A :class:`SoftplusNormal` whose KL against a scale mixture is computed, not sampled."""

    _dense_kind = ExpectedKLNormal


class RowSampledNormal(ExpectedSoftplusNormal):
    """An :class:`ExpectedSoftplusNormal` drawn only at ``rows`` (argument order kept)."""

    def __init__(self, loc: torch.Tensor, rho: torch.Tensor, rows: torch.Tensor, min_scale: float):
        super().__init__(loc, rho, min_scale, rows)


def log_scale_sum(q: Normal) -> torch.Tensor:
    """Σ log σ of a Normal, read from a :class:`SoftplusNormal`'s fused draw when it has one."""
    return q.log_scale_sum() if isinstance(q, SoftplusNormal) else q.scale.log().sum()


def _entropy(q: Normal) -> torch.Tensor:
    return log_scale_sum(q) + q.loc.numel() * (0.5 + HALF_LOG_2PI)


@register_kl(ExpectedKLNormal, ScaleMixtureNormal)
def _kl_expected_normal_mixture(q: ExpectedKLNormal, p: ScaleMixtureNormal) -> torch.Tensor:
    pi, sigma1, sigma2 = p._compact
    if not pi.numel() == sigma1.numel() == sigma2.numel() == 1:
        raise NotImplementedError  # per-weight hyperparameters: the caller samples
    expected = expected_mixture_log_density(
        q.loc, q.scale, float(pi), float(sigma1), float(sigma2), q.quadrature_order
    )
    return -_entropy(q) - expected


@register_kl(Independent, GroupedScaleMixture)
def _kl_normal_grouped_mixture(q: Independent, p: GroupedScaleMixture) -> torch.Tensor:
    base = q.base_dist
    if not isinstance(base, ReparamNormal):
        raise NotImplementedError
    if isinstance(base, ExpectedKLNormal):
        moments = p.group_sums(base.loc.square() + base.scale.square())
        return -_entropy(base) - p.group_log_prob(moments)
    log_q, value = _last_draw_log_q(base)
    return log_q - p.group_log_prob(group_square_sums(value, p.summed_dims))


def _square_sums_formula(value: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return (value * value).sum(dim=dims)


def _square_sums_eager(value: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return value.square().sum(dim=dims)


_square_sums = maybe_compiled(_square_sums_formula, _square_sums_eager)


def group_square_sums(value: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Σθ² over ``dims`` (a grouped prior's groups): compiled for large CPU tensors, one pass
    forward and one backward instead of a squared copy, its sum and three backward passes."""
    return _square_sums(value, dims)


@register_kl(ReparamNormal, ZeroMeanNormal)
def _kl_normal_zero_mean(q: ReparamNormal, p: ZeroMeanNormal) -> torch.Tensor:
    """Σ log(s/σ) + (σ² + μ²)/(2s²) − 1/2, summed here (the caller sums a scalar unchanged)."""
    s = p.scalar_scale
    n = q.loc.numel()
    energy = (q.scale.square().sum() + q.loc.square().sum()) / (2 * s * s)
    return energy - log_scale_sum(q) + n * (math.log(s) - 0.5)


@register_kl(ReparamNormal, ScaleMixtureNormal)
def _kl_normal_mixture(q: ReparamNormal, p: ScaleMixtureNormal) -> torch.Tensor:
    """Single-sample log q(θ) − log p(θ) at the θ this distribution last drew."""
    log_q, value = _last_draw_log_q(q)
    pi, sigma1, sigma2 = p._compact
    if pi.numel() == sigma1.numel() == sigma2.numel() == 1:  # the prior's scalar case: fused
        log_p = mixture_log_density_sum(value, float(pi), float(sigma1), float(sigma2))
    else:
        log_p = mixture_log_density(value, pi, sigma1, sigma2).sum()
    return log_q - log_p


def _last_draw_log_q(q: ReparamNormal) -> tuple[torch.Tensor, torch.Tensor]:
    """log q(θ) = Σ(−ε²/2 − log σ) − n·log(2π)/2 at the θ that ``q`` last drew, and that θ."""
    last = getattr(q, "_last", None)
    if last is None:
        raise NotImplementedError  # no draw to score: the ELBO falls back to log-densities
    eps, value = last
    flat = eps.detach().reshape(-1)
    log_q = -0.5 * torch.dot(flat, flat) - log_scale_sum(q) - value.numel() * HALF_LOG_2PI
    return log_q, value


def _zero_mean_gaussian_scale(prior: Independent) -> float | None:
    base = prior.base_dist
    return base.scalar_scale if isinstance(base, ZeroMeanNormal) else None


class GalWeight(TorchDistribution):
    """Gal's Bernoulli-mixture posterior over one weight in the limit σ → 0.

    q(W) puts the columns (or rows) of the mean weight ``mean`` to zero with probability
    ``rate`` and scales the kept ones by 1/(1−rate) (inverted dropout, so ``mean`` is also the
    posterior mean used by the "standard dropout approximation"). ``mask`` is the drawn mask
    (broadcastable to ``mean``) or None when the masks act inside the model (sequence scope).

    The density is degenerate as σ → 0 (a constant entropy, dropped), so ``log_prob`` is 0 for
    a masked draw, whose log p(w) under the prior N(0, s²) is already an unbiased estimate of
    E_q[log p]. An unmasked draw is M, and log p(M) misses −rate/(1−rate)·‖M‖²/(2s²) of
    E_q[log p(w)] = −‖M‖²/(2s²(1−rate)); ``log_prob`` returns +that missing part, so Pyro's
    stock ELBOs (log p(w) − log q(w)) get Gal's KL. ``prior_scale`` is s (None: no correction).
    The library's ELBO uses the registered closed-form KL instead.
    """

    arg_constraints = {}
    support = constraints.real
    has_rsample = True

    def __init__(
        self,
        mean: torch.Tensor,
        rate: float,
        mask: torch.Tensor | None = None,
        prior_scale: float | None = None,
    ):
        self.mean_weight = mean
        self.rate = float(rate)
        self.mask = mask
        self.prior_scale = prior_scale
        super().__init__(torch.Size(), mean.shape, validate_args=False)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """The masked mean; a batch of draws (a vectorised plate) gets a fresh mask per draw,
        so S parallel draws are as independent as S calls."""
        if self.mask is not None and sample_shape:
            shape = (*sample_shape, *self.mask.shape)
            return self.mean_weight * bernoulli_mask(shape, self.rate, self.mean_weight)
        value = self.mean_weight if self.mask is None else self.mean_weight * self.mask
        return value.expand(sample_shape + value.shape) if sample_shape else value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event = len(self.event_shape)
        batch = value.shape[: value.dim() - event]
        if self.mask is not None or self.rate == 0.0 or self.prior_scale is None:
            return value.new_zeros(batch)
        energy = value.square().reshape(*batch, -1).sum(-1) / (2 * self.prior_scale**2)
        return energy * (self.rate / (1.0 - self.rate))


@register_kl(GalWeight, Independent)
def _kl_gal_gaussian(q: GalWeight, p: Independent) -> torch.Tensor:
    """KL ≈ ‖M‖² / (2 s² (1−p)) + const for the prior N(0, s²) (derivation in guides/gal.py)."""
    scale = _zero_mean_gaussian_scale(p)
    if scale is None:
        raise NotImplementedError
    return q.mean_weight.square().sum() / (2 * scale * scale * (1.0 - q.rate))


class SharpenedNormal(TorchDistribution):
    """θ ~ N(φ − η⊙g, σ0²) with φ ~ q(φ) = N(loc, scale²): Fortunato's sharpened posterior.

    η = ``eta_max``·sigmoid(ψ) per weight, g the window's NLL gradient at φ (a constant). A
    draw computes θ and ``step_square`` = ‖η⊙g‖² together (:func:`fused_draw.sharpened_draw`).
    With ``rows`` (the embedding rows the window reads, where alone g is nonzero) only those
    rows are sharpened and perturbed: the others hold φ, which the window never reads.
    The KL against the prior registered here is the KL of q(φ) (analytic for a Gaussian prior,
    the single-sample log q(φ) − log p(φ) otherwise); the sharpening term ‖η⊙g‖²/(2σ0²) enters
    the ELBO separately, at full weight, as a guide factor.
    """

    arg_constraints = {}
    support = constraints.real
    has_rsample = True

    def __init__(
        self,
        phi_dist: Independent,
        phi: torch.Tensor,
        psi: torch.Tensor,
        grad: torch.Tensor,
        eta_max: float,
        sigma0: float,
        rows: torch.Tensor | None = None,
    ):
        self.phi_dist, self.phi, self.psi, self.grad = phi_dist, phi, psi, grad
        self.loc = phi_dist.base_dist.loc
        self.eta_max, self.sigma0, self.rows = float(eta_max), float(sigma0), rows
        self.step_square: torch.Tensor | None = None
        super().__init__(torch.Size(), self.loc.shape, validate_args=False)

    @property
    def sharpened_mean(self) -> torch.Tensor:
        """φ − η⊙g (for densities; a draw never builds it)."""
        return self.phi - self.eta_max * torch.sigmoid(self.psi) * self.grad

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape:
            shape = sample_shape + self.loc.shape
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            return self.sharpened_mean + self.sigma0 * eps
        if self.rows is None:
            eps = torch.randn(self.loc.shape, dtype=self.loc.dtype, device=self.loc.device)
            value, self.step_square = sharpened_draw(
                self.phi, self.psi, self.grad, eps, self.eta_max, self.sigma0
            )
            return value
        rows = self.rows
        phi_rows = self.phi[rows]
        eps = torch.randn(phi_rows.shape, dtype=phi_rows.dtype, device=phi_rows.device)
        moved, self.step_square = sharpened_draw(
            phi_rows, self.psi[rows], self.grad[rows], eps, self.eta_max, self.sigma0
        )
        return self.phi.index_add(0, rows, moved - phi_rows)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event = len(self.event_shape)
        return Normal(self.sharpened_mean, self.sigma0).log_prob(value).flatten(-event).sum(-1)

    def phi_distribution(self) -> Independent:
        return self.phi_dist


@register_kl(SharpenedNormal, Independent)
@register_kl(SharpenedNormal, GroupedScaleMixture)
def _kl_sharpened_prior(q: SharpenedNormal, p: TorchDistribution) -> torch.Tensor:
    q_phi = q.phi_distribution()
    try:
        return kl_divergence(q_phi, p)
    except NotImplementedError:
        return q_phi.log_prob(q.phi) - p.log_prob(q.phi)
