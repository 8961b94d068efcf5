"""Mean-field SVI over KL-split windows recovers a closed-form posterior.

Bayesian linear regression written as a sequence model: at each step a one-hot feature x_t
(one of D) and y_t ~ N(w·x_t, σ²), prior w ~ N(0, s²I). With one-hot features XᵀX is diagonal,
so the exact posterior is a diagonal Gaussian — the mean-field family contains it and the guide
must find it: precision_d = n_d/σ² + 1/s², mean_d = (Σ_{x_t=d} y_t/σ²)/precision_d.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from bayesrnn.inference import MeanFieldGuide, plan_windows, scale_kl, window_terms
from bayesrnn.models import GaussianPrior, bayesianize

NOISE, PRIOR, D = 0.5, 1.0, 3


class SequenceRegression(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(D))
        bayesianize(self, GaussianPrior(PRIOR))

    def forward(self, features, targets, state=None):
        mean = nn.functional.one_hot(features, D).to(torch.float32) @ self.weight
        with (
            pyro.plate("sequences", features.shape[1], dim=-1),
            pyro.plate("steps", features.shape[0], dim=-2),
        ):
            pyro.sample("obs", dist.Normal(mean, NOISE), obs=targets)
        return mean, state


def test_mean_field_matches_the_analytic_posterior():
    generator = torch.Generator().manual_seed(0)
    features = torch.randint(0, D, (400,), generator=generator)
    w_true = torch.tensor([0.8, -0.3, 0.1])
    values = w_true[features] + NOISE * torch.randn(400, generator=generator)
    x, y = features.reshape(4, 100).t(), values.reshape(4, 100).t()  # 4 sequences, time-major
    counts = torch.bincount(features[: x.numel()], minlength=D).double()
    sums = torch.zeros(D, dtype=torch.float64).index_add_(
        0, x.t().reshape(-1), y.t().reshape(-1).double()
    )
    precision = counts / NOISE**2 + 1 / PRIOR**2
    exact_mean, exact_sd = (sums / NOISE**2) / precision, precision.rsqrt()

    model = SequenceRegression()
    guide = MeanFieldGuide(model, init_scale=0.1)
    windows = plan_windows(x.shape[0] + 1, 20)  # steps of (x, y) pairs, both indexed by t
    optimiser = torch.optim.Adam(guide.parameters(), lr=0.02)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=0.9985)
    pyro.set_rng_seed(1)
    means, sds = [], []
    for epoch in range(400):
        for window in windows:
            inputs = x[window.start : window.start + window.length]
            outputs = y[window.start : window.start + window.length]
            terms = window_terms(
                scale_kl(model, 1 / len(windows)),
                scale_kl(guide, 1 / len(windows)),
                inputs,
                outputs,
            )
            optimiser.zero_grad()
            (terms.nll + terms.kl).backward()
            optimiser.step()
        schedule.step()
        if epoch >= 300:  # average the last iterates to remove SGD noise
            means.append(guide.loc["weight"].detach().double().clone())
            sds.append(guide.scale("weight").detach().double().clone())
    mean, sd = torch.stack(means).mean(0), torch.stack(sds).mean(0)
    # tolerance: means within 0.15 posterior sd, standard deviations within 10%
    assert ((mean - exact_mean).abs() / exact_sd).max() < 0.15, (mean, exact_mean, exact_sd)
    assert ((sd / exact_sd) - 1).abs().max() < 0.10, (sd, exact_sd)
