"""SequenceRegressor: sites and shapes, torch references, likelihood, bad input, training."""

import math

import pytest
import scipy.stats
import torch
from pyro import poutine

from bayesrnn.inference import TBPTTTrainer, make_guide
from bayesrnn.inference.prediction.predictive import posterior_mean
from bayesrnn.models import Forecast, SequenceRegressor, weight_sites
from tests.models.helpers import TORCH_CLASSES

CELLS = ("lstm", "gru", "rnn_tanh")


def _trace(model, *args, **kwargs):
    return poutine.trace(model).get_trace(*args, **kwargs)


@pytest.mark.parametrize("batch_first", [False, True])
def test_sites_shapes_and_plates(batch_first):
    model = SequenceRegressor(3, 5, num_layers=2, output_size=2, batch_first=batch_first)
    shape = (2, 4, 3) if batch_first else (4, 2, 3)
    inputs, targets = torch.randn(shape), torch.randn(shape)
    trace = _trace(model, inputs, targets)
    latent = {n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]}
    expected = {
        f"rnn.{kind}_{part}_l{layer}"
        for kind in ("weight", "bias")
        for part in ("ih", "hh")
        for layer in (0, 1)
    } | {"decoder.weight", "decoder.bias"}
    assert latent - {"sequences", "steps"} == expected
    assert set(weight_sites(model)) == expected
    obs = trace.nodes["obs"]
    assert obs["is_observed"]
    torch.testing.assert_close(obs["value"], targets[..., :2])  # the first output_size columns
    assert obs["fn"].event_shape == (2,)
    assert obs["fn"].batch_shape == shape[:2]
    plates = {frame.name: (frame.dim, frame.size) for frame in obs["cond_indep_stack"]}
    batch_dim = 0 if batch_first else 1
    assert plates["sequences"] == (batch_dim - 2, 2)
    assert plates["steps"] == ((1 - batch_dim) - 2, 4)
    forecast, (h, c) = trace.nodes["_RETURN"]["value"]
    assert isinstance(forecast, Forecast) and forecast.df is None
    assert forecast.loc.shape == forecast.scale.shape == (*shape[:2], 2)
    assert bool((forecast.scale >= model.min_scale).all())
    assert h.shape == c.shape == (2, 2, 5)  # (layers, batch, hidden) in either layout
    # without targets, under a trace, the next rows are sampled, not observed
    bare = _trace(model, inputs)
    assert not bare.nodes["obs"]["is_observed"]
    assert bare.nodes["obs"]["value"].shape == (*shape[:2], 2)


def test_student_t_df_is_a_point_estimate_per_output():
    model = SequenceRegressor(3, 4, output_size=2, likelihood="student_t")
    assert "df_raw" not in weight_sites(model)
    assert "df_raw" in dict(model.named_parameters())
    forecast, _ = model(torch.randn(5, 2, 3))
    assert forecast.df.shape == (5, 2, 2)
    torch.testing.assert_close(forecast.df[0, 0], torch.full((2,), 10.0))  # INITIAL_DF
    assert isinstance(forecast.distribution(), torch.distributions.StudentT)


class TorchRegressor(torch.nn.Module):
    def __init__(self, cell, features, hidden, layers, outputs, batch_first):
        super().__init__()
        self.rnn = TORCH_CLASSES[cell](features, hidden, layers, batch_first=batch_first)
        self.decoder = torch.nn.Linear(hidden, 2 * outputs)
        self.outputs = outputs

    def forward(self, x, state=None):
        out, state = self.rnn(x, state)
        raw = self.decoder(out)
        d = self.outputs
        return raw[..., :d], torch.nn.functional.softplus(raw[..., d:]) + 1e-3, state


def _assert_state_close(a, b):
    pairs = zip(
        a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True
    )
    for x, y in pairs:
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_plain_network_matches_torch(cell, batch_first):
    torch.manual_seed(1)
    model = SequenceRegressor(
        3, 6, num_layers=2, cell=cell, output_size=2, batch_first=batch_first, prior=None
    )
    reference = TorchRegressor(cell, 3, 6, 2, 2, batch_first)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in reference.named_parameters():
            params[name].copy_(value)
    shape = (2, 7, 3) if batch_first else (7, 2, 3)
    first, second = torch.randn(shape), torch.randn(shape)
    ref_loc, ref_scale, ref_state = reference(first)
    forecast, state = model(first)
    torch.testing.assert_close(forecast.loc, ref_loc, atol=1e-5, rtol=0)
    torch.testing.assert_close(forecast.scale, ref_scale, atol=1e-5, rtol=0)
    _assert_state_close(state, ref_state)
    # the state carries over to the next call exactly as torch's does
    ref_loc2, ref_scale2, _ = reference(second, ref_state)
    forecast2, _ = model(second, state=state)
    torch.testing.assert_close(forecast2.loc, ref_loc2, atol=1e-5, rtol=0)
    torch.testing.assert_close(forecast2.scale, ref_scale2, atol=1e-5, rtol=0)


def test_bayesian_weights_conditioned_on_torch_lstm_match_it():
    model = SequenceRegressor(4, 5, num_layers=2, output_size=1)
    reference = TorchRegressor("lstm", 4, 5, 2, 1, False)
    data = {n: p.detach() for n, p in reference.named_parameters()}
    x = torch.randn(6, 3, 4)
    forecast, state = poutine.condition(model, data=data)(x)
    ref_loc, ref_scale, ref_state = reference(x)
    torch.testing.assert_close(forecast.loc, ref_loc, atol=1e-5, rtol=0)
    torch.testing.assert_close(forecast.scale, ref_scale, atol=1e-5, rtol=0)
    _assert_state_close(state, ref_state)


def _constant_head(model, loc, scale):
    """Weights that make every step's forecast (loc, scale): a zero decoder matrix, and a bias
    holding loc and the softplus pre-image of scale − min_scale."""
    data = {site: torch.randn_like(v) for site, v in weight_sites(model).items()}
    d = model.output_size
    data["decoder.weight"] = torch.zeros_like(data["decoder.weight"])
    raw_scale = torch.log(torch.expm1(torch.as_tensor(scale) - model.min_scale))
    data["decoder.bias"] = torch.cat([torch.as_tensor(loc), raw_scale]).float()
    assert data["decoder.bias"].shape == (2 * d,)
    return data


@pytest.mark.parametrize("likelihood", ["gaussian", "student_t"])
def test_obs_log_density_is_torch_log_prob(likelihood):
    model = SequenceRegressor(3, 4, output_size=2, likelihood=likelihood)
    loc, scale = torch.tensor([0.3, -1.2]), torch.tensor([0.5, 2.0])
    df = torch.tensor([3.0, 7.5])
    if likelihood == "student_t":
        with torch.no_grad():  # df = 2 + softplus(raw)
            model.df_raw.copy_(torch.log(torch.expm1(df - 2.0)))
    inputs, targets = torch.randn(5, 2, 3), torch.randn(5, 2, 3) * 2
    conditioned = poutine.condition(model, data=_constant_head(model, loc, scale))
    trace = _trace(conditioned, inputs, targets)
    obs = trace.nodes["obs"]
    got = obs["fn"].log_prob(obs["value"])
    values = targets[..., :2]
    if likelihood == "gaussian":
        reference = torch.distributions.Normal(loc, scale).log_prob(values).sum(-1)
        by_hand = (
            -0.5 * ((values - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)
        ).sum(-1)
        torch.testing.assert_close(got, by_hand, atol=1e-5, rtol=0)
    else:
        reference = torch.distributions.StudentT(df, loc, scale).log_prob(values).sum(-1)
        by_scipy = scipy.stats.t.logpdf(values.numpy(), df.numpy(), loc.numpy(), scale.numpy())
        torch.testing.assert_close(
            got, torch.from_numpy(by_scipy).float().sum(-1), atol=1e-5, rtol=0
        )
    assert got.shape == (5, 2)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)


def test_forecast_cdf_and_quantiles_match_scipy():
    loc = torch.tensor([[0.0, 1.0], [-2.0, 0.5]], dtype=torch.float64)
    scale = torch.tensor([[1.0, 0.3], [2.0, 5.0]], dtype=torch.float64)
    df = torch.tensor([[3.0, 30.0], [2.5, 8.0]], dtype=torch.float64)
    value = torch.tensor([[0.4, 0.2], [1.0, -7.0]], dtype=torch.float64)
    normal, student = Forecast(loc, scale), Forecast(loc, scale, df)
    n = scipy.stats.norm(loc.numpy(), scale.numpy())
    t = scipy.stats.t(df.numpy(), loc.numpy(), scale.numpy())
    torch.testing.assert_close(normal.cdf(value).numpy(), n.cdf(value.numpy()))
    torch.testing.assert_close(student.cdf(value).numpy(), t.cdf(value.numpy()))
    for p in (0.05, 0.5, 0.9):
        torch.testing.assert_close(normal.icdf(p).numpy(), n.ppf(p))
        torch.testing.assert_close(student.icdf(p).numpy(), t.ppf(p))
    stacked = Forecast.stack([student, student])
    assert stacked.shape == (2, 2, 2) and stacked[1].df.shape == (2, 2)


def test_bad_input_is_a_value_error_naming_the_argument():
    model = SequenceRegressor(2, 4)
    good = torch.randn(5, 3, 2)
    nan = good.clone()
    nan[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="inputs"):
        model(nan)
    with pytest.raises(ValueError, match="inputs"):
        model(torch.randint(0, 5, (5, 3, 2)))
    with pytest.raises(ValueError, match="inputs"):
        model(torch.randn(5, 3))  # not 3-D
    with pytest.raises(ValueError, match="inputs"):
        model(torch.randn(5, 3, 4))  # wrong feature count
    with pytest.raises(ValueError, match="targets"):
        model(good, torch.randn(5, 3, 1))
    with pytest.raises(ValueError, match="targets"):
        model(good, torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match="targets"):
        model(good, nan)
    with pytest.raises(ValueError, match="targets"):
        model(good, torch.zeros(5, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="output_size"):
        SequenceRegressor(2, 4, output_size=3)
    with pytest.raises(ValueError, match="likelihood"):
        SequenceRegressor(2, 4, likelihood="poisson")
    with pytest.raises(ValueError, match="cell"):
        SequenceRegressor(2, 4, cell="transformer")
    with pytest.raises(ValueError, match="min_scale"):
        SequenceRegressor(2, 4, min_scale=0.0)


def _series(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    signal = torch.sin(2 * math.pi * t / 25)
    noise = torch.randn(n, generator=generator)
    return torch.stack([signal + 0.1 * noise, torch.cos(2 * math.pi * t / 25)], -1)


@pytest.mark.parametrize(
    ("guide_name", "options", "likelihood"),
    [
        ("mean_field", {}, "gaussian"),
        ("mean_field", {}, "student_t"),
        ("gal", {"input": 0.1, "hidden": 0.1, "output": 0.1}, "gaussian"),
        ("auto_normal", {"init_scale": 0.01}, "gaussian"),
        ("sharpened", {}, "gaussian"),
    ],
)
def test_trains_one_epoch_under_each_guide(guide_name, options, likelihood):
    model = SequenceRegressor(2, 6, output_size=1, likelihood=likelihood)
    guide = make_guide(guide_name, model, **options)
    series = _series(300)
    trainer = TBPTTTrainer(
        model,
        guide,
        series[:240],
        series[240:],
        batch_size=4,
        bptt=10,
        epochs=1,
        lr=0.01,
        optimizer="adam",
        progress=False,
    )
    history = trainer.fit()
    assert len(history.elbo) == math.ceil((240 // 4 - 1) / 10)
    assert all(math.isfinite(v) for v in history.elbo)
    assert len(history.valid_nll) == 1 and math.isfinite(history.valid_nll[0])
    assert history.valid_perplexity == []
    if guide_name == "gal":
        assert model.regularisers.locked_hidden == 0.1  # the guide drives the model's masks
    if likelihood == "student_t":
        assert model.df_raw.grad is not None  # df is trained as a point estimate


def test_a_forecaster_trained_on_a_noisy_sine_recovers_its_noise_scale():
    """y_t = sin(2πt/25) + 0.1·ε_t: from the series alone, the one-step predictive scale on
    held-out steps should come out near the noise's 0.1 (the sine itself is predictable)."""
    torch.manual_seed(0)
    noise_scale = 0.1
    series = _series(2400)[:, :1]  # the target column only: no covariates
    train, held_out = series[:2000], series[2000:]
    model = SequenceRegressor(1, 16, prior=None)
    guide = make_guide("none", model)
    TBPTTTrainer(
        model,
        guide,
        train,
        None,
        batch_size=10,
        bptt=25,
        epochs=30,
        lr=0.01,
        optimizer="adam",
        clip_norm=None,
        progress=False,
    ).fit()
    model.eval()
    with torch.no_grad():
        conditioned = poutine.condition(model, data=posterior_mean(guide))
        forecast, _ = conditioned(series[:-1].unsqueeze(1))  # one sequence, state carried
    predicted = forecast[1999:, 0, 0]  # the forecasts of rows 2000 … 2399
    mean_scale = float(predicted.scale.mean())
    assert abs(mean_scale - noise_scale) < 0.25 * noise_scale, mean_scale
    rmse = float((predicted.loc - held_out[:, 0]).pow(2).mean().sqrt())
    assert rmse < 1.25 * noise_scale, rmse


def test_a_batch_first_regressor_trains_as_its_time_major_twin():
    series = _series(300)
    runs = []
    for batch_first in (False, True):
        torch.manual_seed(0)
        model = SequenceRegressor(2, 6, batch_first=batch_first)
        guide = make_guide("mean_field", model)
        history = TBPTTTrainer(
            model,
            guide,
            series[:240],
            series[240:],
            batch_size=4,
            bptt=10,
            epochs=2,
            lr=0.01,
            optimizer="adam",
            progress=False,
        ).fit()
        runs.append(history)
    torch.testing.assert_close(
        torch.tensor(runs[1].elbo), torch.tensor(runs[0].elbo), rtol=1e-5, atol=1e-3
    )
    torch.testing.assert_close(
        torch.tensor(runs[1].valid_nll), torch.tensor(runs[0].valid_nll), rtol=1e-5, atol=1e-5
    )


def test_a_residual_forecaster_adds_the_current_targets_to_its_location():
    torch.manual_seed(0)
    plain = SequenceRegressor(3, 5, output_size=2, prior=None)
    residual = SequenceRegressor(3, 5, output_size=2, prior=None, residual=True)
    residual.load_state_dict(plain.state_dict())
    inputs = torch.randn(6, 4, 3)
    base, _ = plain(inputs)
    shifted, _ = residual(inputs)
    torch.testing.assert_close(shifted.loc, base.loc + inputs[..., :2])
    torch.testing.assert_close(shifted.scale, base.scale)
