"""The NUTS-mixing benchmark's mathematics on Gaussians with known answers (no task data)."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc import MCMC

from .conftest import SHARED_DATA, load_benchmark

H = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("nuts_mixing")


def quadratic(point: dict) -> torch.Tensor:
    """U = 7 + ½ xᵀHx over the sites a (2 numbers) and b (1), flattened in sorted order."""
    x = torch.cat([point["a"].reshape(-1), point["b"].reshape(-1)]).double()
    return 7.0 + 0.5 * x @ H @ x


def test_the_hessian_of_a_quadratic_potential_is_its_matrix(bench):
    point = {"b": torch.tensor([0.3]), "a": torch.tensor([1.0, -2.0])}
    assert torch.allclose(bench.hessian(quadratic, point), H, atol=1e-6)


def test_the_laplace_covariance_clamps_eigenvalues_at_the_prior_precision(bench):
    covariance = bench.laplace_covariance(torch.diag(torch.tensor([4.0, 0.5, -1.0])).double())
    assert torch.allclose(covariance, torch.diag(torch.tensor([0.25, 1.0, 1.0])).double())


def test_the_laplace_log_mass_of_a_gaussian_is_the_log_integral_of_its_density(bench):
    # ∫ exp(−7 − ½ xᵀHx) dx = exp(−7) / N(0; 0, H⁻¹)
    normal = torch.distributions.MultivariateNormal(torch.zeros(3).double(), precision_matrix=H)
    exact = -7.0 - float(normal.log_prob(torch.zeros(3).double()))
    assert bench.laplace_log_mass(7.0, torch.linalg.eigvalsh(H)) == pytest.approx(exact)


def test_tv_between_predictives_and_nll(bench):
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.25, 0.75], [1.0, 0.0]])
    assert bench.tv_matrix([p, q]) == [[0.0, 0.125], [0.125, 0.0]]  # (0.25 + 0) / 2 positions
    assert bench.nll(q, np.array([1, 0])) == pytest.approx(-np.log(0.75) / 2)


def test_a_given_metric_is_kept_through_warm_up_and_whitens_the_target(bench):
    covariance = torch.tensor([[1.0, 0.998], [0.998, 1.0]])

    def ridge():
        pyro.sample("x", dist.MultivariateNormal(torch.zeros(2), covariance))

    pyro.set_rng_seed(0)
    kernel = bench.FixedMetricNUTS(ridge, covariance)
    mcmc = MCMC(
        kernel,
        num_samples=30,
        warmup_steps=30,
        initial_params={"x": torch.zeros(2)},
        disable_progbar=True,
    )
    mcmc.run()
    assert torch.equal(kernel.inverse_mass_matrix[("x",)], covariance)
    depth = np.asarray(mcmc.diagnostics()["sample_stats"]["chain 0"]["tree_depth"])
    # whitened, the target is a round Gaussian: one or two doublings (the identity metric
    # needs ~32 leapfrog steps across this ridge, depth 5 or more)
    assert depth.mean() < 2.8, depth


def test_the_small_symbols_task_sets_up_a_smaller_model_on_a_fifth_of_the_text(bench, tmp_path):
    data = SHARED_DATA
    if not (data / "ptb_char").is_dir():
        pytest.skip(f"no Penn Treebank characters in {data}")
    from bayesrnn.app.nuts_task import nuts_data
    from bayesrnn.inference.mcmc import nuts_weight_count

    s = bench.task_setup(tmp_path, data, "symbols-small", ("trainer.batch_size=12",))
    # 6 classes (v, c, _, o, <eos>, <unk>): embedding 6x2, LSTM 4·2 x (2 + 2) + 2 biases of 8,
    # output 2x6 + 6
    assert nuts_weight_count(s.model) == 12 + 32 + 16 + 18
    (_, targets), _ = nuts_data(s)
    symbols = len(s.corpus.train)
    assert 600 <= symbols < 800  # whole lines, stopping at the one that reaches 600
    assert targets.shape == (symbols // 12 - 1, 12)  # --set's 12 sequences, one batch
