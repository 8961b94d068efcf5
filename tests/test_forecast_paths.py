"""Multi-step sample paths: the AR(1) closed form, per-path weight semantics for each guide,
``TrainedRun.forecast`` in the data's units, and ``bayesrnn forecast``."""

import math

import numpy as np
import pytest
import torch
from pyro import poutine
from torch import nn

from bayesrnn.evaluation import forecast_paths
from bayesrnn.evaluation.forecast_paths import sample_paths
from bayesrnn.inference.guides import (
    DeterministicGuide,
    EnsembleGuide,
    GalDropoutGuide,
    MeanFieldGuide,
)
from bayesrnn.inference.prediction.predictive import sample_weights
from bayesrnn.models.regressor import Forecast, SequenceRegressor, inverse_softplus
from tests.cli_helpers import TINY, cli
from tests.conftest import SHARED_DATA

# ---------------------------------------------------------------------------------------------
# A correctly specified AR(1): y_t = φ y_{t−1} + ε, ε ~ N(0, s²)


class AR1(nn.Module):
    """A stub forecaster whose one-step predictive is exactly N(φ·y, s²)."""

    input_size = output_size = 1
    batch_first = False

    def __init__(self, phi: float, s: float) -> None:
        super().__init__()
        self.phi, self.s = phi, s

    def forward(self, inputs, targets=None, state=None):
        loc = self.phi * inputs[..., :1]
        return Forecast(loc, torch.full_like(loc, self.s)), state


def test_ar1_paths_match_the_closed_form_h_step_predictive():
    phi, s, last, horizon, count = 0.8, 0.5, 2.0, 5, 8000
    model = AR1(phi, s)
    history = torch.tensor([[0.3], [-1.0], [last]])
    torch.manual_seed(1)
    paths = sample_paths(model, DeterministicGuide(model), history, horizon, count)[..., 0]
    assert paths.shape == (count, horizon)
    for h in range(1, horizon + 1):
        mean = phi**h * last
        var = s**2 * (1 - phi ** (2 * h)) / (1 - phi**2)
        got = paths[:, h - 1].double()
        assert abs(float(got.mean()) - mean) < 4 * math.sqrt(var / count), h
        # the sample variance's standard error is about var·√(2/S)
        assert abs(float(got.var()) / var - 1) < 4 * math.sqrt(2 / count), h
    # the joint law: Cov(y_{T+1}, y_{T+2}) = φ s²
    pair = paths[:, :2].double().T
    covariance = float(torch.cov(pair)[0, 1])
    assert abs(covariance - phi * s**2) < 4 * s**2 * math.sqrt((1 + phi**2) / count)


# ---------------------------------------------------------------------------------------------
# A real SequenceRegressor reduced to a random walk with drift: residual=True, decoder weights
# zero, so loc = y + b and scale = softplus(r) + min_scale; only the decoder bias (b, r) is a
# weight site.

_PLAIN = ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0")


def _random_walk_model(**options) -> SequenceRegressor:
    torch.manual_seed(0)
    model = SequenceRegressor(1, 3, residual=True, deterministic=(*_PLAIN, "decoder.weight"))
    with torch.no_grad():
        model.decoder.weight.zero_()
    return model


@pytest.mark.parametrize("batched", [True, False])
def test_a_path_keeps_its_weight_draw_for_every_step(batched, monkeypatch):
    """With b ~ N(m, σ_b²) drawn once per path, y_{T+H} − y_T = H·b + Σ ε has variance
    H²σ_b² + H s²; redrawing b at each step would give H σ_b² + H s² instead. ``batched``:
    all draws from q at once; else one call of the guide per path (any guide's way)."""
    if not batched:
        monkeypatch.setattr(forecast_paths, "_draws_q_directly", lambda guide: False)
    model = _random_walk_model()
    guide = MeanFieldGuide(model, init_scale=0.1)
    m, sigma_b, r = 0.3, 0.5, 0.0
    with torch.no_grad():
        guide.loc["decoder.bias"].copy_(torch.tensor([m, r]))
        guide.rho["decoder.bias"].copy_(
            torch.tensor([inverse_softplus(sigma_b), -40.0])  # σ of r: ~1e-5, negligible
        )
    s = math.log1p(math.exp(r)) + model.min_scale
    history = torch.tensor([[0.0], [1.0], [1.5]])
    horizon, count = 4, 3000
    torch.manual_seed(2)
    change = sample_paths(model, guide, history, horizon, count)[:, -1, 0].double() - 1.5
    var = horizon**2 * sigma_b**2 + horizon * s**2
    assert abs(float(change.mean()) - horizon * m) < 4 * math.sqrt(var / count)
    assert abs(float(change.var()) / var - 1) < 4 * math.sqrt(2 / count)
    redrawn = horizon * sigma_b**2 + horizon * s**2
    assert abs(float(change.var()) / redrawn - 1) > 0.5  # far from the per-step law


def test_paths_of_a_deterministic_network_differ_only_by_the_likelihood_noise():
    """Residual random walk without weight draws: step h's change is N(h·b, h·s²) exactly."""
    torch.manual_seed(0)
    model = SequenceRegressor(1, 3, residual=True, prior=None)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.copy_(torch.tensor([-0.2, 1.0]))
    s = math.log1p(math.e) + model.min_scale
    history = torch.tensor([[0.5], [2.0]])
    count = 6000
    torch.manual_seed(3)
    paths = sample_paths(model, DeterministicGuide(model), history, 3, count)[..., 0].double()
    steps = torch.diff(torch.cat([torch.full((count, 1), 2.0).double(), paths], 1), dim=1)
    for h in range(3):  # independent N(b, s²) increments
        assert abs(float(steps[:, h].mean()) + 0.2) < 4 * s / math.sqrt(count)
        assert abs(float(steps[:, h].std()) / s - 1) < 4 / math.sqrt(2 * count)
    assert abs(float(torch.corrcoef(steps[:, :2].T)[0, 1])) < 4 / math.sqrt(count)


# ---------------------------------------------------------------------------------------------
# Ensembles and Gal's dropout: what "one draw per path" means


@pytest.mark.parametrize("budget", [2**22, 160])  # 80 values a draw: calls of 2 paths
def test_path_i_of_an_ensemble_is_member_i_mod_k(budget, monkeypatch):
    monkeypatch.setattr(forecast_paths, "_WEIGHT_BUDGET", budget)
    torch.manual_seed(0)
    model = SequenceRegressor(1, 3, min_scale=1e-4)
    guide = EnsembleGuide(model, members=3, seed=0)
    with torch.no_grad():
        for k in range(3):
            guide.weights["decoder.weight"][k].zero_()
            guide.weights["decoder.bias"][k].copy_(torch.tensor([10.0 * k, -30.0]))
    paths = sample_paths(model, guide, torch.zeros(4, 1), 3, 9)[..., 0]
    expected = (10.0 * (torch.arange(9) % 3)).unsqueeze(1).expand(9, 3)
    torch.testing.assert_close(paths, expected, atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="multiple of 3"):
        sample_paths(model, guide, torch.zeros(4, 1), 3, 4)


def _noise_free_path(model, weights, history, horizon):
    """The reference: one sequence stepped by hand, each step's location fed back."""
    run = poutine.condition(model, data=weights)
    forecast, state = run(history.unsqueeze(1))
    values = []
    for _ in range(horizon):
        y = forecast.loc[-1, 0]
        values.append(y)
        forecast, state = run(y.reshape(1, 1, 1), state=state)
    return torch.stack(values)[:, 0]


def test_a_gal_path_holds_one_output_mask_for_its_history_and_all_steps():
    """Output dropout on 2 hidden units: each path must follow the noise-free path of one of
    the 4 masks, the same mask at every step (a mask redrawn per step leaves that set)."""
    torch.manual_seed(4)
    model = SequenceRegressor(1, 2, min_scale=1e-5)
    guide = GalDropoutGuide(model, output=0.5)
    with torch.no_grad():
        guide.mean["decoder.weight"].copy_(torch.tensor([[3.0, -2.0], [0.0, 0.0]]))
        guide.mean["decoder.bias"].copy_(torch.tensor([0.1, -30.0]))
    history = torch.tensor([[0.5], [-0.3], [0.8]])
    horizon = 4
    means = guide.median()
    model.eval()
    references = []
    for mask in ([0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]):  # inverted dropout, p = 0.5
        weights = dict(means)
        weights["decoder.weight"] = means["decoder.weight"] * torch.tensor(mask)
        references.append(_noise_free_path(model, weights, history, horizon))
    references = torch.stack(references).detach()  # (4, H)
    assert torch.cdist(references, references).add(torch.eye(4)).min() > 0.1  # distinguishable
    torch.manual_seed(5)
    paths = sample_paths(model, guide, history, horizon, 64)[..., 0]
    distance = torch.cdist(paths, references)  # (64, 4)
    assert float(distance.min(1).values.max()) < 1e-3
    used = set(distance.argmin(1).tolist())
    assert len(used) >= 3  # 64 paths, 4 equally likely masks


@pytest.mark.parametrize("batch_first", [False, True])
def test_a_single_path_and_batch_first_models(batch_first):
    torch.manual_seed(0)
    model = SequenceRegressor(2, 4, residual=True, batch_first=batch_first)
    guide = MeanFieldGuide(model)
    history, covariates = torch.randn(6, 2), torch.zeros(3, 1)
    assert sample_paths(model, guide, history, 3, 1, covariates).shape == (1, 3, 1)
    assert sample_paths(model, guide, history, 3, 5, covariates).shape == (5, 3, 1)


def test_bad_inputs_are_clear_errors():
    model = SequenceRegressor(2, 3)  # one target, one covariate
    guide = MeanFieldGuide(model)
    history = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        sample_paths(model, guide, history, 0, 4)
    with pytest.raises(ValueError, match="num_samples"):
        sample_paths(model, guide, history, 2, 0)
    with pytest.raises(ValueError, match="1 covariate column"):
        sample_paths(model, guide, history, 2, 4)
    with pytest.raises(ValueError, match=r"covariates must be \(2, 1\)"):
        sample_paths(model, guide, history, 2, 4, covariates=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="the model reads 2"):
        sample_paths(model, guide, torch.zeros(5, 1), 2, 4)
    with pytest.raises(ValueError, match="at least 2 rows"):
        sample_paths(model, guide, torch.zeros(1, 2), 2, 4)
    assert sample_paths(model, guide, history, 2, 4, torch.ones(2, 1)).shape == (4, 2, 1)


# ---------------------------------------------------------------------------------------------
# Trained runs: data units, times, the command


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory):
    from bayesrnn.app.cli import main

    folder = tmp_path_factory.mktemp("paths")
    rows = ["week,units,price"] + [
        f"{i},{100 + 20 * math.sin(i / 5)},{1 + (i % 7) / 10}" for i in range(120)
    ]
    csv = folder / "sales.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = folder / "sales"
    argv = [
        "train", "--task", "forecast", "--data", str(csv), "--out", str(out), "--quiet",
        "--epochs", "1", "--set", "data.target=units", "--set", "data.covariates=[price]",
        "--set", "model.hidden_size=4", "--set", "data.lags=[]",  # scaled by hand below
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_a_run_forecasts_in_the_data_units_with_times_and_a_table(covariate_run, tmp_path):
    import bayesrnn

    run = bayesrnn.load_run(covariate_run)
    assert "columns=['units', 'price']" in repr(run) and str(run) == repr(run)
    with pytest.raises(ValueError, match=r"covariates \['price'\]"):
        run.forecast(horizon=3, num_samples=10)
    history = np.stack([np.full(20, 100.0), np.full(20, 1.3)], 1)
    result = run.forecast(
        horizon=3, num_samples=200, history=history, covariates=np.full((3, 1), 1.3)
    )
    assert result.paths.shape == (200, 3, 1) and result.columns == ("units",)
    np.testing.assert_array_equal(result.times, [20, 21, 22])  # positions after the history
    # in the data's units: the same draws in the model's units, scaled back with the run's
    # stored training mean and standard deviation (vocab.json), by hand
    from bayesrnn.app.setup import seed_everything

    mean, scale = run.series.mean.numpy(), run.series.scale.numpy()
    scaled = torch.from_numpy((history - mean) / scale).float()
    seed_everything(run.config.trainer.seed + 1)
    covariate = torch.full((3, 1), float((1.3 - mean[1]) / scale[1]))
    again = sample_paths(run.model, run.guide, scaled, 3, 200, covariate).double()
    torch.testing.assert_close(result.paths, again * scale[0] + mean[0])
    assert float(result.paths.std()) > 0
    quantiles = result.quantiles([0.05, 0.5, 0.95])
    assert quantiles.shape == (3, 3, 1) and bool((quantiles[0] <= quantiles[2]).all())
    torch.testing.assert_close(result.quantiles(0.5), quantiles[1])
    frame = result.to_frame()
    assert list(frame.columns) == ["time", "step", "column", "mean", "q5", "q25", "q50", "q75",
                                   "q95"]  # fmt: skip
    assert len(frame) == 3
    written = result.to_csv(tmp_path / "f.csv")
    assert written.read_text().splitlines()[0] == "time,step,column,mean,q5,q25,q50,q75,q95"
    figure = result.plot(tmp_path / "fan.png")
    assert (tmp_path / "fan.png").stat().st_size > 0 and figure.axes


def test_the_whole_series_is_the_default_history_and_its_times_continue(covariate_run):
    import bayesrnn

    run = bayesrnn.load_run(covariate_run)
    result = run.forecast(horizon=2, num_samples=20, covariates=[[1.0], [1.1]])
    np.testing.assert_array_equal(result.times, [120, 121])
    # the week column is not a time column here: positions, which are 0 … 119 as well
    assert result.history.shape[1] == 1 and float(result.history[-1, 0]) == pytest.approx(
        100 + 20 * math.sin(119 / 5)
    )


def test_the_forecast_command(covariate_run, tmp_path, capsys):
    covariates = tmp_path / "cov.csv"
    covariates.write_text("price\n1.0\n1.1\n1.2\n")
    output = tmp_path / "out.csv"
    code, out, err = cli(
        capsys, "forecast", "--out", str(covariate_run), "--horizon", "3", "--samples", "50",
        "--covariates", str(covariates), "--output", str(output),
    )  # fmt: skip
    assert code == 0, err
    assert "wrote" in out and len(output.read_text().splitlines()) == 4
    code, out, err = cli(
        capsys, "forecast", "--out", str(covariate_run), "--horizon", "3", "--samples", "50",
        "--covariates", str(covariates),
    )  # fmt: skip
    assert code == 0 and "q95" in out and len(out.strip().splitlines()) == 4


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--horizon", "0"], "--horizon must be >= 1"),
        (["--horizon", "2", "--samples", "0"], "--samples must be >= 1"),
        (["--horizon", "2"], "--covariates FILE.csv"),
        (["--horizon", "2", "--covariates", "{short}"], "one row per forecast step"),
        (["--horizon", "2", "--covariates", "{wrong}"], "no column ['price']"),
    ],
)
def test_bad_forecast_commands_are_one_line_errors(
    covariate_run, tmp_path, capsys, extra, fragment
):
    (tmp_path / "short.csv").write_text("price\n1.0\n")
    (tmp_path / "wrong.csv").write_text("cost\n1.0\n2.0\n")
    extra = [e.format(short=tmp_path / "short.csv", wrong=tmp_path / "wrong.csv") for e in extra]
    output = tmp_path / "out.csv"
    code, _, err = cli(
        capsys, "forecast", "--out", str(covariate_run), "--output", str(output), *extra
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert not output.exists()


def test_forecast_refuses_a_language_model_run_whose_repr_works(tmp_path, capsys):
    import bayesrnn
    from bayesrnn.app.cli import main

    out = tmp_path / "lm"
    assert main(["train", "--out", str(out), *TINY]) == 0
    run = bayesrnn.load_run(out)
    assert repr(run).startswith("TrainedRun(") and "vocabulary=" in repr(run)
    output = tmp_path / "f.csv"
    code, _, err = cli(
        capsys, "forecast", "--out", str(out), "--horizon", "2", "--output", str(output)
    )
    assert code == 2 and "forecast needs --task forecast" in err and not output.exists()
    with pytest.raises(bayesrnn.app.run_dir.JobError, match="forecasting run"):
        run.forecast(horizon=2)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no shared data folder at {SHARED_DATA}")
def test_a_classifier_run_has_a_repr(tmp_path):
    import bayesrnn
    from bayesrnn.app.cli import main

    out = tmp_path / "classify"
    argv = [
        "train", "--task", "classify", "--data", "polarity", "--data-dir", str(SHARED_DATA),
        "--out", str(out), "--quiet", "--epochs", "1", "--set", "data.max_examples=48",
        "--set", "trainer.batch_size=16", "--set", "model.embedding_size=8",
        "--set", "model.hidden_size=8",
    ]  # fmt: skip
    assert main(argv) == 0
    text = repr(bayesrnn.load_run(out))
    assert "task='classify'" in text and "vocabulary=" in text


def test_forecast_times_continue_regular_series_only():
    from bayesrnn.app.run_forecast import next_times

    np.testing.assert_array_equal(next_times(np.array([1998, 1999, 2000]), 2), [2001, 2002])
    np.testing.assert_allclose(next_times(np.array([0.0, 0.25, 0.5]), 2), [0.75, 1.0])
    assert next_times(np.array([1, 2, 4]), 2) is None  # uneven steps: positions instead
    weeks = np.array(["2001-12-15", "2001-12-22", "2001-12-29"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(
        next_times(weeks, 2), np.array(["2002-01-05", "2002-01-12"], dtype="datetime64[ns]")
    )
    months = np.array(["2020-11-01", "2020-12-01", "2021-01-01"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(
        next_times(months, 2), np.array(["2021-02-01", "2021-03-01"], dtype="datetime64[ns]")
    )
    assert next_times(np.array(["a", "b", "c"]), 2) is None


@pytest.mark.parametrize("batch_first", [False, True])
def test_the_regressor_reads_one_input_per_weight_draw(batch_first):
    """Inputs with the weights' draw dim in front: draw k reads input k, as k separate calls."""
    torch.manual_seed(0)
    model = SequenceRegressor(2, 4, residual=True, batch_first=batch_first)
    guide = MeanFieldGuide(model)
    draws = [sample_weights(guide) for _ in range(3)]
    stacked = {site: torch.stack([d[site] for d in draws]) for site in draws[0]}
    inputs = torch.randn(3, 5, 2, 2)  # (draws, T, B, F), or (draws, B, T, F) batch-first
    together, _ = poutine.condition(model, data=stacked)(inputs)
    for k in range(3):
        alone, _ = poutine.condition(model, data=draws[k])(inputs[k])
        torch.testing.assert_close(together.loc[k], alone.loc)
        torch.testing.assert_close(together.scale[k], alone.scale)


@pytest.mark.parametrize("kind, lmbda", [("log", None), ("sqrt", None), ("boxcox", (0.3,))])
def test_scaling_of_a_transformed_run_round_trips_in_data_units(kind, lmbda):
    from bayesrnn.app.run_forecast import SeriesScaling
    from bayesrnn.data.transforms import SeriesTransform

    transform = SeriesTransform(kind, lmbda)
    info = {
        "columns": ["y", "x"], "targets": 1, "mean": [1.5, 10.0], "scale": [0.5, 4.0],
        "transform": transform.to_dict(),
    }  # fmt: skip
    scaling = SeriesScaling(info)
    raw = torch.tensor([[2.0, 9.0], [7.5, 13.0]], dtype=torch.float64)
    model_units = scaling.scaled(raw)
    # the target goes through g then the scaling, the covariate through the scaling alone
    expected_target = (transform.forward(raw[:, :1]) - 1.5) / 0.5
    torch.testing.assert_close(model_units[:, :1], expected_target)
    torch.testing.assert_close(model_units[:, 1:], (raw[:, 1:] - 10.0) / 4.0)
    torch.testing.assert_close(scaling.raw(model_units[:, :1]), raw[:, :1])


# ---------------------------------------------------------------------------------------------
# Lags: a path builds its lag columns from its own earlier values


class LaggedAR(nn.Module):
    """A noise-free stub whose forecast is a·y_t + b·(lag 2) + c·(lag 5), read off the row."""

    input_size, output_size, lags, batch_first = 3, 1, (2, 5), False

    def forward(self, inputs, targets=None, state=None):
        loc = 0.5 * inputs[..., :1] + 0.3 * inputs[..., 1:2] - 0.2 * inputs[..., 2:3]
        return Forecast(loc, torch.full_like(loc, 1e-9)), state


def test_a_path_builds_its_lag_columns_from_its_own_values():
    from bayesrnn.data.lags import insert_lags

    values = [1.0, -2.0, 4.0]
    history = insert_lags(torch.tensor(values).double().unsqueeze(-1), 1, (2, 5))
    model = LaggedAR()
    paths = sample_paths(model, DeterministicGuide(model), history, 6, 3)[..., 0]
    # by hand: the series padded in front with its first value, then the recursion
    series = [values[0]] * 4 + values
    for _ in range(6):
        series.append(0.5 * series[-1] + 0.3 * series[-2] - 0.2 * series[-5])
    expected = torch.tensor(series[-6:]).double()
    for path in paths:
        torch.testing.assert_close(path.double(), expected, atol=1e-6, rtol=0)


def test_a_model_with_lags_counts_them_apart_from_its_covariates():
    model = SequenceRegressor(4, 3, lags=(2, 3), prior=None)  # target, 2 lags, a covariate
    history = torch.zeros(5, 4)
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        sample_paths(model, DeterministicGuide(model), history, 2, 3)
    assert sample_paths(model, DeterministicGuide(model), history, 2, 3,
                        covariates=torch.zeros(2, 1)).shape == (3, 2, 1)  # fmt: skip
    with pytest.raises(ValueError, match="need input_size >= 3"):
        SequenceRegressor(2, 3, lags=(2, 3))


def test_a_linear_skip_adds_w_times_the_row_to_the_location():
    torch.manual_seed(0)
    plain = SequenceRegressor(3, 4, lags=(2, 3), residual=True, prior=None)
    model = SequenceRegressor(3, 4, lags=(2, 3), residual=True, prior=None, linear_skip=True)
    model.load_state_dict({**plain.state_dict(), "skip.weight": model.skip.weight}, strict=True)
    assert float(model.skip.weight.abs().sum()) == 0  # starts as no autoregression
    rows = torch.randn(6, 2, 3)
    with torch.no_grad():
        model.skip.weight.copy_(torch.tensor([[0.5, -0.25, 2.0]]))
        base, _ = plain(rows)
        got, _ = model(rows)
    by_hand = base.loc + 0.5 * rows[..., :1] - 0.25 * rows[..., 1:2] + 2.0 * rows[..., 2:3]
    torch.testing.assert_close(got.loc, by_hand)
    torch.testing.assert_close(got.scale, base.scale)


def test_a_bayesian_linear_skip_is_a_weight_site_and_its_paths_run():
    model = SequenceRegressor(3, 4, lags=(2, 3), linear_skip=True)
    guide = MeanFieldGuide(model)
    assert "skip.weight" in guide.site_names
    paths = sample_paths(model, guide, torch.randn(8, 3), 3, 5)
    assert paths.shape == (5, 3, 1) and bool(torch.isfinite(paths).all())
