"""Posterior sharpening: the step against the data gradient, its KL, and the gradients."""

import warnings

import pytest
import torch
from pyro import poutine
from torch.distributions import Normal, kl_divergence

from bayesrnn.inference import (
    SharpenedGuide,
    TBPTTTrainer,
    TrainerConfig,
    scale_kl,
    window_terms,
)
from bayesrnn.inference.guides.sharpened import SHARPENING_SITE
from bayesrnn.models import LanguageModel


def _setup(eta=0.0004):
    model = LanguageModel(9, 5, 5, num_layers=1, deterministic=("decoder.bias",))
    guide = SharpenedGuide(model, sigma0=0.02, eta_init=eta, eta_max=None if eta is None else 0.1)
    tokens = torch.randint(0, 9, (6, 3))
    targets = torch.randint(0, 9, (6, 3))
    return model, guide, tokens, targets


def _nll(model, weights, tokens, targets):
    logits, _ = poutine.condition(model, data=weights)(tokens)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, 9), targets.reshape(-1), reduction="sum"
    )


def test_sharpened_draw_steps_against_the_data_gradient():
    model, guide, tokens, targets = _setup()
    theta, _ = guide.sharpened_weights(tokens, targets)  # φ = μ: θ = μ − η⊙g exactly
    mu = {s: guide.loc[s].detach().clone().requires_grad_(True) for s in guide.site_names}
    grads = torch.autograd.grad(_nll(model, mu, tokens, targets), list(mu.values()))
    for (site, m), g in zip(mu.items(), grads, strict=True):
        expected = m.detach() - guide.eta(site).detach() * g
        torch.testing.assert_close(theta[site], expected, atol=1e-6, rtol=1e-5)
    assert float(_nll(model, theta, tokens, targets).detach()) < float(
        _nll(model, mu, tokens, targets).detach()
    )


def _all_tokens():
    """(6, 3) inputs that read every row of the 9-word embedding (so all rows are drawn)."""
    return torch.arange(18).remainder(9)[torch.randperm(18)].reshape(6, 3)


def _gradients(model, weights, tokens, targets):
    """∇ of the summed NLL at ``weights``, by autograd here."""
    leaves = {s: w.detach().clone().requires_grad_(True) for s, w in weights.items()}
    grads = torch.autograd.grad(_nll(model, leaves, tokens, targets), list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def test_training_draws_are_q_phi_then_sigma0_noise_around_the_sharpened_phi():
    """Over 80 training draws (~26k weights): (φ − μ)/σ and (θ − (φ − η⊙g(φ)))/σ0 are
    N(0, 1), and the second has no component along the step η⊙g, tight enough to catch a
    10% error in σ, σ0 or η."""
    model = LanguageModel(9, 5, 5, num_layers=1, deterministic=("decoder.bias",))
    guide = SharpenedGuide(model, sigma0=0.02, eta_init=0.09, eta_max=0.1)
    tokens, targets = _all_tokens(), torch.randint(0, 9, (6, 3))
    xi, eps, step = [], [], []
    for _ in range(80):
        nodes = poutine.trace(guide).get_trace(tokens, targets).nodes
        phi = {s: nodes[s]["fn"].phi.detach() for s in guide.site_names}
        grads = _gradients(model, phi, tokens, targets)
        with torch.no_grad():
            for s in guide.site_names:
                sigma = torch.nn.functional.softplus(guide.rho[s]) + 1e-5
                eta = 0.1 * torch.sigmoid(guide.psi[s])
                xi.append(((phi[s] - guide.loc[s]) / sigma).flatten())
                moved = phi[s] - eta * grads[s]
                eps.append(((nodes[s]["value"].detach() - moved) / 0.02).flatten())
                step.append((eta * grads[s] / 0.02).flatten())
    xi, eps, step = torch.cat(xi).double(), torch.cat(eps).double(), torch.cat(step).double()
    bound = 4 / xi.numel() ** 0.5
    for values in (xi, eps):
        assert abs(float(values.mean())) < bound and abs(float(values.std()) - 1) < 0.03
    # regression of the noise on the step: 0 for θ centred on φ − η⊙g, −0.1 for a 10% larger η
    along, se = float((eps * step).sum() / step.square().sum()), float(step.norm() ** -1)
    assert se < 0.02 and abs(along) < 4 * se


def test_extra_kl_equals_closed_form_and_the_gaussian_kl():
    model, guide, tokens, targets = _setup()
    _, extra = guide.sharpened_weights(tokens, targets)
    extra = float(extra)
    mu = {s: guide.loc[s].detach().clone().requires_grad_(True) for s in guide.site_names}
    grads = torch.autograd.grad(_nll(model, mu, tokens, targets), list(mu.values()))
    closed, gaussian = 0.0, 0.0
    for (site, m), g in zip(mu.items(), grads, strict=True):
        step = guide.eta(site).detach() * g
        closed += float(step.square().sum()) / (2 * 0.02**2)
        phi = m.detach().double()
        q, p = Normal(phi - step.double(), 0.02), Normal(phi, 0.02)
        gaussian += float(kl_divergence(q, p).sum())
    assert extra == pytest.approx(closed, rel=1e-5)
    assert extra == pytest.approx(gaussian, rel=1e-5)


def test_eta_is_bounded_and_starts_at_sigma0_squared():
    _, guide, _, _ = _setup(eta=None)
    eta = guide.eta("rnn.weight_hh_l0").detach()
    torch.testing.assert_close(eta, torch.full_like(eta, 0.02**2))
    with torch.no_grad():
        guide.psi["rnn.weight_hh_l0"].fill_(1e6)
    assert float(guide.eta("rnn.weight_hh_l0").detach().max()) <= 2 * 0.02**2


def test_evaluation_mode_samples_phi_without_the_targets():
    _, guide, tokens, targets = _setup()
    guide.eval()
    trace = poutine.trace(guide).get_trace(tokens, targets)
    assert SHARPENING_SITE not in trace.nodes
    torch.manual_seed(2)
    with_targets = poutine.trace(guide).get_trace(tokens, targets).nodes["decoder.weight"]["value"]
    torch.manual_seed(2)
    without = poutine.trace(guide).get_trace(tokens).nodes["decoder.weight"]["value"]
    torch.testing.assert_close(with_targets, without)


def test_extra_kl_is_at_full_weight_while_the_phi_kl_is_scaled():
    model, guide, tokens, targets = _setup()
    torch.manual_seed(1)
    traced = poutine.trace(guide)
    full = window_terms(model, traced, tokens, targets)
    extra = float(traced.trace.nodes[SHARPENING_SITE]["fn"].log_factor.detach())
    torch.manual_seed(1)  # the same φ draw
    scaled = window_terms(scale_kl(model, 0.1), scale_kl(guide, 0.1), tokens, targets)
    phi_kl = float(full.kl.detach()) - extra
    assert float(scaled.kl.detach()) == pytest.approx(0.1 * phi_kl + extra, rel=1e-4)


def test_gradients_of_mu_rho_and_eta_are_those_of_the_written_out_objective():
    """The window objective NLL(θ) + ‖η⊙g‖²/(2σ0²) + c·KL[q(φ) ‖ N(0, 1)], with
    φ = μ + (softplus(ρ) + 1e-5)ξ, θ = φ − η⊙g + σ0ε, η = η_max·sigmoid(ψ) and g a constant,
    differentiated by autograd here with the guide's own ξ and ε."""
    model, guide, _, targets = _setup()
    tokens, scale = _all_tokens(), 0.01
    traced = poutine.trace(scale_kl(guide, scale))
    terms = window_terms(scale_kl(model, scale), traced, tokens, targets)
    (terms.nll + terms.kl).backward()
    nodes = traced.trace.nodes
    phi = {s: nodes[s]["fn"].phi.detach() for s in guide.site_names}
    grads = _gradients(model, phi, tokens, targets)
    leaves = {
        holder: {
            s: getattr(guide, holder)[s].detach().clone().requires_grad_(True)
            for s in guide.site_names
        }
        for holder in ("loc", "rho", "psi")
    }
    theta, objective = {}, torch.zeros((), dtype=torch.float64)
    for s in guide.site_names:
        with torch.no_grad():
            sigma = torch.nn.functional.softplus(guide.rho[s]) + 1e-5
            xi = (phi[s] - guide.loc[s]) / sigma
            eta = 0.1 * torch.sigmoid(guide.psi[s])
            eps = (nodes[s]["value"].detach() - (phi[s] - eta * grads[s])) / 0.02
        mu, rho, psi = (leaves[h][s] for h in ("loc", "rho", "psi"))
        sigma = torch.nn.functional.softplus(rho) + 1e-5
        step = 0.1 * torch.sigmoid(psi) * grads[s]
        theta[s] = mu + sigma * xi - step + 0.02 * eps
        kl_phi = (-sigma.log() + (sigma.square() + mu.square()) / 2 - 0.5).sum()
        objective = objective + step.square().sum() / (2 * 0.02**2) + scale * kl_phi
    objective = objective + _nll(model, theta, tokens, targets)
    expected = torch.autograd.grad(
        objective, [leaves[h][s] for h in ("loc", "rho", "psi") for s in guide.site_names]
    )
    got = [getattr(guide, h)[s].grad for h in ("loc", "rho", "psi") for s in guide.site_names]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e.to(g.dtype), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("sigma0", [0.0, -0.02, float("nan")])
def test_sigma0_must_be_positive(sigma0):
    with pytest.raises(ValueError, match="sigma0"):
        SharpenedGuide(LanguageModel(9, 4, 4), sigma0=sigma0)


def test_unknown_option():
    with pytest.raises(ValueError, match="unknown option"):
        SharpenedGuide(LanguageModel(9, 4, 4), sigma=0.02)


def test_trainer_setup_runs_the_sharpened_guide_without_pyro_warnings():
    model, guide, _, _ = _setup()
    stream = torch.randint(0, 9, (200,))
    config = TrainerConfig(batch_size=2, bptt=5, epochs=1, max_windows=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "observe ... outside of inference"
        TBPTTTrainer(model, guide, stream, None, config=config).fit()


@pytest.mark.parametrize(
    "options, name",
    [
        ({"eta_max": -0.1}, "eta_max"),
        ({"eta_max": 0.0}, "eta_max"),
        ({"eta_init": 0.5}, "eta_init"),
    ],
)
def test_bad_eta_settings_are_value_errors_naming_them(options, name):
    with pytest.raises(ValueError, match=name):
        SharpenedGuide(LanguageModel(9, 4, 4), sigma0=0.02, **options)


def test_logged_step_ratio_is_the_step_norm_over_the_posterior_scale_norm():
    from bayesrnn.inference.guides.sharpened import window_nll_gradient

    model, guide, tokens, targets = _setup()
    torch.manual_seed(3)
    trace = poutine.trace(guide).get_trace(tokens, targets)
    phi = {s: trace.nodes[s]["fn"].phi.detach() for s in guide.site_names}
    _, g = window_nll_gradient(model, phi, tokens, targets)
    with torch.no_grad():
        step = sum(float((guide.eta(s) * g[s]).square().sum()) for s in guide.site_names)
        sigma = sum(float(guide.scale(s).square().sum()) for s in guide.site_names)
    assert guide.diagnostics["sharpening_step_ratio"] == pytest.approx((step / sigma) ** 0.5)
    # g is the gradient of the window's summed NLL, computed independently here
    mu = {s: phi[s].clone().requires_grad_(True) for s in guide.site_names}
    nll = _nll(model, mu, tokens, targets)
    nll.backward()
    torch.testing.assert_close(g["decoder.weight"], mu["decoder.weight"].grad)


def test_library_elbo_sharpens_only_the_rows_a_window_reads():
    """Embedding rows the window does not read have g = 0: θ keeps φ = μ there, and the
    extra KL (from the draw's ‖η⊙g‖² over those rows) equals the dense norm."""
    from bayesrnn.inference.guides.sharpened import window_nll_gradient

    model = LanguageModel(40, 5, 5, num_layers=1, deterministic=("decoder.bias",))
    guide = SharpenedGuide(model, sigma0=0.02)
    tokens, targets = torch.randint(0, 10, (6, 3)), torch.randint(0, 40, (6, 3))
    torch.manual_seed(6)
    traced = poutine.trace(guide)
    window_terms(model, traced, tokens, targets)
    nodes = traced.trace.nodes
    unread = torch.ones(40, dtype=torch.bool)
    unread[tokens.unique()] = False
    theta, mean = nodes["embedding.weight"]["value"], guide.loc["embedding.weight"]
    assert torch.equal(theta[unread], mean[unread])
    assert not torch.equal(theta[~unread], mean[~unread])
    phi = {s: nodes[s]["fn"].phi.detach() for s in guide.site_names}
    _, g = window_nll_gradient(model, phi, tokens, targets)
    assert float(g["embedding.weight"][unread].abs().max()) == 0.0
    with torch.no_grad():
        dense = sum(float((guide.eta(s) * g[s]).square().sum()) for s in guide.site_names)
    extra = float(nodes[SHARPENING_SITE]["fn"].log_factor.detach())
    assert extra == pytest.approx(dense / (2 * 0.02**2), rel=1e-5)
    noise = (
        theta[~unread]
        - (
            phi["embedding.weight"] - guide.eta("embedding.weight").detach() * g["embedding.weight"]
        )[~unread]
    ).detach() / 0.02
    assert 0.6 < float(noise.std()) < 1.4  # σ0 noise on the rows read


def test_sequential_predictive_without_targets_explains_itself_and_eval_mode_works():
    """In train mode the guide sharpens on the targets; a Predictive call without them is
    told what to do, and in eval() mode it samples q(φ), draws differing."""
    from pyro.infer import Predictive

    model, guide, tokens, _ = _setup()
    predictive = Predictive(model, guide=guide, num_samples=3, return_sites=["obs", "logits"])
    with pytest.raises(ValueError, match=r"needs the targets.*eval\(\) mode"):
        predictive(tokens)
    guide.eval()
    samples = predictive(tokens)
    assert samples["obs"].shape == (3, 6, 3)
    assert not torch.equal(samples["logits"][0], samples["logits"][1])
