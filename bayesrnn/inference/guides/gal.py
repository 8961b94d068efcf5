r"""Gal & Ghahramani's variational dropout as a Pyro guide.

The posterior over each weight matrix is the Bernoulli mixture, column by column (Gal's "rows"
of W in x·W are torch's columns of W in W·x):

    q(w_k) = p·N(0, σ²I) + (1 − p)·N(m_k, σ²I),   σ → 0,

which is dropout of the unit feeding w_k. Rates per group follow Gal's code: ``embedding``
(word types: rows of the embedding), ``input`` (each layer's input: columns of ``weight_ih``),
``hidden`` (h_{t−1}: columns of ``weight_hh``) and ``output`` (the decoder's input: columns of
``decoder.weight``). Biases are not dropped.

KL, derived. Masks scale kept units by 1/(1−p) (inverted dropout), so a draw is w = z·M/(1−p)
with z ~ Bernoulli(1−p) and E[w] = M: the learned M is the mean weight, used as-is by the
"standard dropout approximation". With the prior N(0, l⁻²I) (``GaussianPrior(scale=1/l)``),

    KL(q‖p) = −H(q) − E_q[log p(w)] = l²/2 · E_q‖w‖² + const = l²‖M‖² / (2(1−p)) + const,

because E[z²]/(1−p)² = 1/(1−p); the entropy of the mixture is a constant as σ → 0 (Gal &
Ghahramani 2016, appendix) and is dropped. Biases get l²‖b‖²/2.

Relation to weight decay. The trainer's step minimises (NLL + KL/C)/B over C windows of B
sequences, whose KL gradient is l²M/((1−p)·C·B). Gal's code instead shrinks every weight by λ
after each SGD step (lr 1) on the same per-sequence loss, so the two agree when
l² = λ(1−p)·C·B: Gal's λ = 1e-7 on PTB (C·B = 929,589/35 windows × sequences, p = 0.5) is a
prior scale 1/l ≈ 27.4 (``bayesrnn.app.presets.gal_prior_scale``). The trainer adds KL/C to each of
the C windows of an epoch.

Mask scopes. ``"sequence"`` (default, the paper's method): one mask per sequence shared by all
steps of a window. The guide hands the rates to the model's locked masks, which multiply the
units (x⊙z_b, h⊙z_b) rather than forming per-sequence weights diag(z_b)·M — the same function,
proved against a materialised version in the tests. ``"batch"``: one mask per minibatch, applied
to the weight values in the guide, so the model runs PyTorch's fused kernel.

Your own models. On a model built from any modules and :func:`bayesrnn.models.bayesianize`
(no ``regularisers`` of its own), each bayesrnn RNN layer inside gets the ``input`` and
``hidden`` rates as per-sequence locked masks; the other groups (``nn.Embedding`` or bayesrnn
embedding rows: ``embedding``; the columns of any ``nn.Linear`` or bayesrnn ``Linear`` weight:
``output``) get one mask per call, drawn here, since no mask inside such a model covers them.

Which ELBO. :class:`bayesrnn.inference.WindowELBO` takes the KL above in closed form. Pyro's
stock ELBOs score a draw by log p(w) − log q(w) instead; for a draw that is M itself (masks
inside the model) log p(M) misses the 1/(1−p) of E_q‖w‖², so :class:`GalWeight`'s ``log_prob``
returns that missing part and ``Trace_ELBO`` optimises the same objective, with the
single-sample noise of the data term only (tested against the closed form).

Fitted prior scales (``LearnedGaussianPrior``, ``HierarchicalGaussianPrior``) are refused. The
full KL against N(0, s²) is n·log s + E_q‖w‖²/(2s²) − H(q), and H(q) → −∞ as σ → 0 is the
constant Gal drops. With s fixed that changes nothing; with s fitted, the minimiser
s*² = E_q‖w‖²/n turns the KL into n/2·log(‖M‖²/(n(1−p))), which no entropy term balances:
shrinking M and s together lowers it without bound.
"""

from __future__ import annotations

import dataclasses

import pyro
import torch
from torch import nn

from bayesrnn.inference.estimators.distributions import GalWeight
from bayesrnn.inference.guides.base import SiteParameters, WeightGuide, reject_unknown_options
from bayesrnn.models.layers import Embedding, Linear
from bayesrnn.models.learned_priors import FITTED_SCALE_PRIORS
from bayesrnn.models.priors import GaussianPrior
from bayesrnn.models.regularisers import MASK_SCOPES, bernoulli_mask, check_rate, masks_active
from bayesrnn.models.rnn import BayesianRNNBase

_OWNED = ("locked_input", "locked_hidden", "locked_output", "embedding_dropout")
_GROUPS = ("input", "hidden", "output", "embedding")


class GalDropoutGuide(WeightGuide):
    """Bernoulli-mixture posterior with rates ``embedding``, ``input``, ``hidden``, ``output``.

    Masks are drawn when the model is in training mode or under
    :func:`bayesrnn.models.mc_dropout` (MC dropout); in evaluation mode the guide returns the
    mean weights M (the standard dropout approximation).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        embedding: float = 0.0,
        input: float = 0.0,
        hidden: float = 0.0,
        output: float = 0.0,
        scope: str = "sequence",
        name: str | None = None,
        **options,
    ) -> None:
        reject_unknown_options(
            type(self).__name__,
            options,
            ["embedding", "input", "hidden", "output", "scope", "name"],
        )
        super().__init__(model, name)
        if scope not in MASK_SCOPES:
            raise ValueError(f"scope must be one of {MASK_SCOPES}, got {scope!r}")
        self.scope = scope
        self.rates = {
            "embedding": check_rate("embedding", embedding),
            "input": check_rate("input", input),
            "hidden": check_rate("hidden", hidden),
            "output": check_rate("output", output),
        }
        for site in self.site_names:
            if isinstance(self.prior(site), FITTED_SCALE_PRIORS):
                raise ValueError(
                    f"GalDropoutGuide needs a fixed prior scale; site {site!r} has "
                    f"{type(self.prior(site)).__name__}: Gal's KL drops the entropy of a "
                    "posterior with σ → 0, so nothing would stop a fitted scale and the weights "
                    "from shrinking together (the KL falls without bound as s → 0)"
                )
            if not isinstance(self.prior(site), GaussianPrior):
                raise ValueError(
                    f"GalDropoutGuide needs Gaussian priors N(0, 1/l²) for its KL; site {site!r} "
                    f"has {self.prior(site)!r}"
                )
        self.groups = {site: self._group(site) for site in self.site_names}
        self.mean = SiteParameters({s: self.initial_value(s) for s in self.site_names})
        self.guide_masked = self._configure_model_masks()

    @property
    def draws_share_weights(self) -> bool:
        """Sequence scope: the masks act inside the model and every draw returns M."""
        return self.scope == "sequence" and not any(
            self.rate(site) > 0 for site in self.guide_masked
        )

    def _group(self, site: str) -> str | None:
        owner, local = self.owner(site), site.rpartition(".")[2]
        if isinstance(owner, Embedding | nn.Embedding) and local == "weight":
            return "embedding"
        if isinstance(owner, BayesianRNNBase) and local.startswith("weight_ih"):
            return "input"
        if isinstance(owner, BayesianRNNBase) and local.startswith("weight_hh"):
            return "hidden"
        if isinstance(owner, Linear | nn.Linear) and local == "weight":
            return "output"
        return None

    def rate(self, site: str) -> float:
        group = self.groups[site]
        return 0.0 if group is None else self.rates[group]

    def _configure_model_masks(self) -> set[str]:
        """Hand the sequence-scope rates to the model's locked masks; returns the sites whose
        masks the guide must draw itself (one per call), because no model mask covers them."""
        if self.scope != "sequence":
            return set()
        if hasattr(self.model, "regularisers"):  # bayesrnn's models: every group has its mask
            self._configure(self.model, self.site_names)
            return set()
        covered = set()  # your own model: each bayesrnn RNN layer masks its input and h
        for path, module in self.model.named_modules():
            if isinstance(module, BayesianRNNBase):
                own = [s for s in self.site_names if s.startswith(f"{path}.") or not path]
                self._configure(module, own, groups=("input", "hidden"))
                covered |= {s for s in own if self.groups[s] in ("input", "hidden")}
        return {s for s in self.site_names if self.groups[s] is not None and s not in covered}

    def _configure(self, module: nn.Module, sites: list[str], groups: tuple[str, ...] = _GROUPS):
        current = module.regularisers
        clash = [name for name in _OWNED if getattr(current, name) > 0]
        if clash:
            raise ValueError(
                f"the model already has {clash} switched on; GalDropoutGuide owns these rates"
            )
        has = {self.groups[s] for s in sites} & set(groups)
        module.regularisers = dataclasses.replace(
            current,
            locked_input=self.rates["input"] if "input" in has else 0.0,
            locked_hidden=self.rates["hidden"] if "hidden" in has else 0.0,
            locked_output=self.rates["output"] if "output" in has else 0.0,
            embedding_dropout=self.rates["embedding"] if "embedding" in has else 0.0,
            mask_scope="sequence",
        )

    def _batch_mask(self, site: str, mean: torch.Tensor) -> torch.Tensor | None:
        rate = self.rate(site)
        by_guide = self.scope == "batch" or site in self.guide_masked
        if not by_guide or rate == 0.0 or not masks_active(self.model):
            return None
        shape = (mean.shape[0], 1) if self.groups[site] == "embedding" else (1, mean.shape[-1])
        return bernoulli_mask(shape, rate, mean)

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        values = {}
        for site in self.site_names:
            mean = self.mean[site]
            mask = self._batch_mask(site, mean)
            fn = GalWeight(mean, self.rate(site), mask, self.prior(site).scale)
            values[site] = pyro.sample(site, fn)
        return values

    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The mean weights M: the standard dropout approximation."""
        return {site: self.mean[site] for site in self.site_names}

    def kl_divergence(self) -> torch.Tensor:
        """Gal's L2 KL summed over all sites (the same value the ELBO uses)."""
        total = torch.zeros(())
        for site in self.site_names:
            scale = self.prior(site).scale
            total = total + self.mean[site].square().sum() / (2 * scale**2 * (1 - self.rate(site)))
        return total
