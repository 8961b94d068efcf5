"""Forecast scores against numerical integrals, known distributions and hand-computed values."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from pyro import poutine

from bayesrnn.evaluation.forecast import (
    baselines,
    crps_gaussian,
    crps_gaussian_mixture,
    crps_samples,
    forecast_metrics,
    interval_coverage,
    mixture_cdf,
    mixture_log_prob,
    mixture_quantiles,
    pit_histogram,
    predict_series,
)
from bayesrnn.inference import make_guide
from bayesrnn.models import Forecast, SequenceRegressor

CASES = [(0.0, 1.0, 0.3), (2.0, 0.5, -1.0), (-1.5, 3.0, 4.0), (0.7, 0.05, 0.72)]


def crps_by_quadrature(cdf, y: float, low: float, high: float) -> float:
    """∫ (F(x) − 1{x ≥ y})² dx, split at y where the indicator jumps."""
    left, _ = scipy.integrate.quad(lambda x: cdf(x) ** 2, low, y, limit=200)
    right, _ = scipy.integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, high, limit=200)
    return left + right


@pytest.mark.parametrize(("mu", "sigma", "y"), CASES)
def test_gaussian_crps_equals_the_integral(mu, sigma, y):
    expected = crps_by_quadrature(
        lambda x: scipy.stats.norm.cdf(x, mu, sigma), y, mu - 40 * sigma, mu + 40 * sigma
    )
    got = crps_gaussian(torch.tensor(mu), torch.tensor(sigma), torch.tensor(y))
    assert float(got) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_gaussian_mixture_crps_equals_the_integral():
    loc = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    scale = torch.tensor([0.3, 1.0, 0.6], dtype=torch.float64)

    def cdf(x):
        return scipy.stats.norm.cdf(x, loc.numpy(), scale.numpy()).mean()

    for y in (-2.0, 0.1, 1.9, 5.0):
        expected = crps_by_quadrature(cdf, y, -30.0, 30.0)
        got = crps_gaussian_mixture(loc[:, None], scale[:, None], torch.tensor([y]))
        assert float(got[0]) == pytest.approx(expected, rel=1e-6)
    # one component is the closed form
    one = crps_gaussian_mixture(loc[:1, None], scale[:1, None], torch.tensor([0.1]))
    single = crps_gaussian(loc[0], scale[0], torch.tensor(0.1))
    assert float(one[0]) == pytest.approx(float(single), rel=1e-12)


def test_sample_crps_of_gaussian_draws_converges_to_the_closed_form():
    torch.manual_seed(0)
    mu = torch.tensor([0.0, 2.0, -1.5, 0.7], dtype=torch.float64)
    sigma = torch.tensor([1.0, 0.5, 3.0, 0.05], dtype=torch.float64)
    y = torch.tensor([0.3, -1.0, 4.0, 0.72], dtype=torch.float64)
    exact = crps_gaussian(mu, sigma, y)
    errors = []
    for count in (100, 200_000):
        samples = mu + sigma * torch.randn(count, 4, dtype=torch.float64)
        errors.append(float(((crps_samples(samples, y) - exact) / exact).abs().max()))
    assert errors[1] < 0.01
    assert errors[1] < errors[0]


def test_crps_of_a_point_mass_is_the_absolute_error():
    x = torch.tensor([1.0, -2.0, 0.5])
    y = torch.tensor([3.0, -2.5, 0.5])
    torch.testing.assert_close(crps_samples(x.expand(50, 3).clone(), y), (x - y).abs())
    torch.testing.assert_close(crps_samples(x.unsqueeze(0), y), (x - y).abs())
    narrow = crps_gaussian(x.double(), torch.full((3,), 1e-9, dtype=torch.float64), y.double())
    torch.testing.assert_close(narrow, (x - y).abs().double(), atol=1e-8, rtol=0)


def test_student_t_crps_by_samples_matches_the_integral():
    torch.manual_seed(1)
    draws = Forecast(
        torch.tensor([[[0.0]], [[1.0]]], dtype=torch.float64),
        torch.tensor([[[1.0]], [[0.5]]], dtype=torch.float64),
        torch.tensor([[[3.0]], [[6.0]]], dtype=torch.float64),
    )
    y = 0.8

    def cdf(x):
        return 0.5 * (scipy.stats.t.cdf(x, 3.0, 0.0, 1.0) + scipy.stats.t.cdf(x, 6.0, 1.0, 0.5))

    expected = crps_by_quadrature(cdf, y, -np.inf, np.inf)
    metrics = forecast_metrics(draws, torch.tensor([[y]]), crps_samples=400_000)
    assert metrics["crps"] == pytest.approx(expected, rel=0.01)


def test_mixture_density_cdf_and_quantiles_are_the_mixture_of_scipy_distributions():
    loc = torch.tensor([[[0.0, 1.0]], [[2.0, 1.5]], [[-1.0, 0.0]]], dtype=torch.float64)
    scale = torch.tensor([[[1.0, 0.2]], [[0.5, 0.3]], [[2.0, 1.0]]], dtype=torch.float64)
    df = torch.tensor([[[4.0, 9.0]], [[3.0, 2.5]], [[12.0, 5.0]]], dtype=torch.float64)
    y = torch.tensor([[0.4, 1.2]], dtype=torch.float64)
    for draws, family in ((Forecast(loc, scale), "norm"), (Forecast(loc, scale, df), "t")):
        if family == "norm":
            frozen = scipy.stats.norm(loc.numpy(), scale.numpy())
        else:
            frozen = scipy.stats.t(df.numpy(), loc.numpy(), scale.numpy())
        pdf = frozen.pdf(y.numpy()).mean(0)
        torch.testing.assert_close(mixture_log_prob(draws, y).exp().numpy(), pdf)
        torch.testing.assert_close(mixture_cdf(draws, y).numpy(), frozen.cdf(y.numpy()).mean(0))
        quantiles = mixture_quantiles(draws, [0.05, 0.5, 0.9])
        for p, q in zip((0.05, 0.5, 0.9), quantiles, strict=True):
            at_q = frozen.cdf(q.unsqueeze(0).numpy()).mean(0)
            np.testing.assert_allclose(at_q, p, atol=1e-10)
    # a list of S Forecasts (N, D) is the same as the stacked one
    as_list = [Forecast(loc[s], scale[s]) for s in range(3)]
    torch.testing.assert_close(mixture_cdf(as_list, y), mixture_cdf(Forecast(loc, scale), y))


def _ar1(steps: int, seed: int, phi: float = 0.8, noise: float = 0.5):
    """y_t = φ y_{t−1} + noise·ε_t and its true one-step predictive N(φ y_{t−1}, noise²)."""
    generator = np.random.default_rng(seed)
    y = np.zeros(steps + 1)
    for t in range(1, steps + 1):
        y[t] = phi * y[t - 1] + noise * generator.standard_normal()
    observed = torch.from_numpy(y[1:]).unsqueeze(-1)
    loc = torch.from_numpy(phi * y[:-1]).unsqueeze(-1)
    return observed, loc, torch.full_like(loc, noise)


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def test_forecasts_of_the_true_process_are_calibrated():
    n = 3000
    observed, loc, scale = _ar1(n, seed=3)
    metrics = forecast_metrics(Forecast(loc, scale), observed)
    for level in (0.5, 0.9):
        coverage = metrics[f"coverage_{round(100 * level)}"]
        assert abs(coverage - level) < 3 * _se(level, n), (level, coverage)
        # the central interval of N(μ, σ²) has width 2·z·σ
        width = 2 * scipy.stats.norm.ppf((1 + level) / 2) * 0.5
        assert metrics[f"width_{round(100 * level)}"] == pytest.approx(width, rel=1e-9)
    pit = metrics["pit"].reshape(-1).numpy()
    assert scipy.stats.kstest(pit, "uniform").pvalue > 0.001
    counts = np.histogram(pit, bins=10, range=(0, 1))[0]
    assert scipy.stats.chisquare(counts).pvalue > 0.001
    assert metrics["pit_histogram"]["counts"] == counts.tolist()
    # the expected scores of the true predictive: NLL ½log(2πeσ²), CRPS σ/√π, RMSE σ
    assert metrics["nll"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 0.25), abs=0.05)
    assert metrics["crps"] == pytest.approx(0.5 / math.sqrt(math.pi), rel=0.05)
    assert metrics["rmse"] == pytest.approx(0.5, rel=0.05)


def test_a_true_mixture_predictive_is_calibrated():
    """Each value comes from one of S Gaussians picked at random; the S-draw mixture is then the
    exact predictive, and its PIT is uniform though no single draw is."""
    generator = torch.Generator().manual_seed(0)
    draws, n = 4, 4000
    loc = torch.randn(draws, n, 1, generator=generator, dtype=torch.float64) * 2
    scale = torch.rand(draws, n, 1, generator=generator, dtype=torch.float64) + 0.2
    pick = torch.randint(0, draws, (n,), generator=generator)
    noise = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    observed = loc[pick, torch.arange(n)] + scale[pick, torch.arange(n)] * noise
    metrics = forecast_metrics(Forecast(loc, scale), observed)
    assert abs(metrics["coverage_90"] - 0.9) < 3 * _se(0.9, n)
    assert abs(metrics["coverage_50"] - 0.5) < 3 * _se(0.5, n)
    assert scipy.stats.kstest(metrics["pit"].reshape(-1).numpy(), "uniform").pvalue > 0.001
    # a single draw of it is not calibrated
    alone = forecast_metrics(Forecast(loc[:1], scale[:1]), observed)
    assert alone["pit_histogram"]["ks_p_value"] < 1e-6


def test_too_narrow_forecasts_are_detected():
    n = 3000
    observed, loc, scale = _ar1(n, seed=4)
    metrics = forecast_metrics(Forecast(loc, scale * 0.5), observed)
    # inside the central 90% interval of N(μ, (σ/2)²) when |z| ≤ 1.645/2 for z ~ N(0, 1)
    expected = 2 * scipy.stats.norm.cdf(scipy.stats.norm.ppf(0.95) / 2) - 1
    assert abs(metrics["coverage_90"] - expected) < 3 * _se(expected, n)
    assert metrics["coverage_90"] < 0.9 - 10 * _se(0.9, n)
    histogram = metrics["pit_histogram"]
    assert histogram["chi2_p_value"] < 1e-10 and histogram["ks_p_value"] < 1e-10
    counts = histogram["counts"]
    assert counts[0] + counts[-1] > 3 * histogram["expected"]  # ∪-shaped
    wide = forecast_metrics(Forecast(loc, scale * 2.0), observed)
    assert wide["coverage_50"] > 0.5 + 10 * _se(0.5, n)


def test_baselines_against_hand_computed_values():
    train = torch.tensor([1.0, 2.0, 4.0, 7.0])
    test = torch.tensor([8.0, 6.0])
    previous = torch.tensor([7.0, 8.0])  # the value before each test step
    result = baselines(train, test, previous)
    # persistence: loc = previous, sd of the differences [1, 2, 3] (ddof 1) = 1
    persistence = result["persistence"]
    z = np.array([1.0, -2.0])
    assert persistence["rmse"] == pytest.approx(math.sqrt((1 + 4) / 2))
    assert persistence["nll"] == pytest.approx(np.mean(0.5 * z**2 + 0.5 * math.log(2 * math.pi)))
    crps = [
        crps_by_quadrature(lambda x, m=m: scipy.stats.norm.cdf(x, m, 1.0), y, -60, 60)
        for m, y in ((7.0, 8.0), (8.0, 6.0))
    ]
    assert persistence["crps"] == pytest.approx(np.mean(crps), rel=1e-6)
    assert persistence["coverage_50"] == 0.0  # |z| > 0.674 for both
    assert persistence["coverage_90"] == 0.5  # |1| ≤ 1.645 < |−2|
    np.testing.assert_allclose(
        persistence["pit"].reshape(-1).numpy(), scipy.stats.norm.cdf(z), rtol=1e-12
    )
    # climatology: mean 3.5, sd √((2.5² + 1.5² + 0.5² + 3.5²)/3) = √7
    climatology = result["climatology"]
    sd = math.sqrt(7.0)
    zc = (np.array([8.0, 6.0]) - 3.5) / sd
    assert climatology["rmse"] == pytest.approx(math.sqrt((4.5**2 + 2.5**2) / 2))
    assert climatology["nll"] == pytest.approx(
        np.mean(0.5 * zc**2 + math.log(sd) + 0.5 * math.log(2 * math.pi))
    )
    crps_c = [
        crps_by_quadrature(lambda x: scipy.stats.norm.cdf(x, 3.5, sd), y, -100, 100)
        for y in (8.0, 6.0)
    ]
    assert climatology["crps"] == pytest.approx(np.mean(crps_c), rel=1e-6)
    assert climatology["coverage_90"] == 0.5  # |z| = 4.5/√7 = 1.70 > 1.645, 2.5/√7 = 0.94
    assert climatology["coverage_50"] == 0.0  # both |z| > 0.674
    for key in ("crps", "nll", "rmse", "coverage_50", "coverage_90", "pit"):
        assert key in persistence and key in climatology


def test_pit_histogram_and_coverage_on_known_values():
    pit = torch.tensor([0.03, 0.15, 0.5, 0.55, 0.96, 0.99])
    summary = pit_histogram(pit, bins=2)
    assert summary["counts"] == [2, 4] and summary["expected"] == 3.0
    assert summary["chi2"] == pytest.approx((1 + 1) / 3)
    assert summary["chi2_p_value"] == pytest.approx(scipy.stats.chi2.sf(2 / 3, 1))
    assert interval_coverage(pit, 0.9) == pytest.approx(3 / 6)  # 0.05 ≤ F ≤ 0.95
    assert interval_coverage(pit, 0.5) == pytest.approx(2 / 6)  # 0.25 ≤ F ≤ 0.75


def test_bad_input_is_a_value_error():
    draws = Forecast(torch.zeros(2, 3, 1), torch.ones(2, 3, 1))
    with pytest.raises(ValueError, match="observed"):
        forecast_metrics(draws, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="observed"):
        forecast_metrics(draws, torch.tensor([[0.0], [float("nan")], [1.0]]))
    with pytest.raises(ValueError, match="scale"):
        forecast_metrics(Forecast(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1)), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="levels"):
        forecast_metrics(draws, torch.zeros(3, 1), levels=(0.5, 1.2))
    with pytest.raises(ValueError, match="draws"):
        forecast_metrics([], torch.zeros(3, 1))
    with pytest.raises(ValueError, match="pit"):
        pit_histogram(torch.tensor([0.2, 1.5]))
    with pytest.raises(ValueError, match="previous_values"):
        baselines(torch.arange(5.0), torch.zeros(3), torch.zeros(2))


def _walk_step_by_step(model, weights, series):
    """The reference walk: one row per call, the state carried by hand."""
    conditioned = poutine.condition(model, data=weights)
    state, locs, scales = None, [], []
    for row in series[:-1]:
        forecast, state = conditioned(row.view(1, 1, -1), state=state)
        locs.append(forecast.loc[0, 0])
        scales.append(forecast.scale[0, 0])
    return torch.stack(locs), torch.stack(scales)


def test_predict_series_walks_the_series_with_the_state_carried():
    torch.manual_seed(0)
    series = torch.randn(30, 3)
    model = SequenceRegressor(3, 5, output_size=2)
    guide = make_guide("mean_field", model)
    means = {site: guide.loc[site].detach() for site in guide.site_names}
    with torch.no_grad():
        loc, scale = _walk_step_by_step(model.eval(), means, series)
    model.train()
    mean = predict_series(model, guide, series, start=20)
    assert mean.shape == (1, 10, 2)
    torch.testing.assert_close(mean.loc[0], loc[19:], atol=1e-5, rtol=0)
    torch.testing.assert_close(mean.scale[0], scale[19:], atol=1e-5, rtol=0)
    assert model.training  # modes restored
    draws = predict_series(model, guide, series, start=20, num_samples=3)
    assert draws.shape == (3, 10, 2)
    assert not torch.allclose(draws.loc[0], draws.loc[1])
    # a batch-first twin with the same weights forecasts the same
    twin = SequenceRegressor(3, 5, output_size=2, batch_first=True)
    twin_guide = make_guide("mean_field", twin)
    twin_guide.load_state_dict(guide.state_dict())
    torch.testing.assert_close(predict_series(twin, twin_guide, series, 20).loc, mean.loc)
    with pytest.raises(ValueError, match="start"):
        predict_series(model, guide, series, start=0)
    with pytest.raises(ValueError, match="series"):
        predict_series(model, guide, series[:, :2], start=5)


def test_predict_series_mc_dropout_under_gal():
    torch.manual_seed(0)
    series = torch.randn(25, 1)
    model = SequenceRegressor(1, 8)
    guide = make_guide("gal", model, input=0.3, hidden=0.3, output=0.3)
    mean_a = predict_series(model, guide, series, 10)
    mean_b = predict_series(model, guide, series, 10)
    torch.testing.assert_close(mean_a.loc, mean_b.loc)  # masks off: deterministic
    draws = predict_series(model, guide, series, 10, num_samples=4)
    assert draws.shape == (4, 15, 1)
    assert not torch.allclose(draws.loc[0], draws.loc[1])  # masks on: MC dropout


# ---------------------------------------------------------------------------------------------
# Plots


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, returned):
    assert type(returned).__name__ == "Figure"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def _plot_data(n=40, draws=5):
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(draws, n, 2, generator=generator, dtype=torch.float64)
    scale = torch.rand(draws, n, 2, generator=generator, dtype=torch.float64) + 0.5
    observed = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return Forecast(loc, scale), observed


def test_forecast_plots_write_pngs(tmp_path):
    from bayesrnn.evaluation.forecast_plots import (
        plot_forecast_fan,
        plot_interval_reliability,
        plot_pit_histogram,
    )

    draws, observed = _plot_data()
    path = tmp_path / "fan" / "fan.png"
    dates = np.arange("2000-01", "2005-11", dtype="datetime64[M]")  # 70 months
    history = torch.randn(30)
    _assert_png(
        path,
        plot_forecast_fan(
            draws,
            observed,
            path,
            times=dates[30:],
            history=history,
            history_times=dates[:30],
            column=1,
            transform=lambda v: v * 10 + 300,
            title="co2",
        ),
    )
    plain = tmp_path / "plain" / "fan.png"
    _assert_png(plain, plot_forecast_fan(draws[:1], observed[:, 0], str(plain)))
    pit = forecast_metrics(draws, observed)["pit"]
    hist = tmp_path / "pit" / "pit.png"
    _assert_png(hist, plot_pit_histogram(pit, hist, bins=8, title="PIT"))
    reliability = tmp_path / "rel" / "reliability.png"
    curves = {"model": pit, "climatology": torch.rand(80)}
    _assert_png(reliability, plot_interval_reliability(curves, reliability))
    single = tmp_path / "single" / "reliability.png"
    _assert_png(single, plot_interval_reliability(pit, single, levels=(0.5, 0.9)))


def test_forecast_plots_reject_bad_input(tmp_path):
    from bayesrnn.evaluation.forecast_plots import (
        plot_forecast_fan,
        plot_interval_reliability,
        plot_pit_histogram,
    )

    draws, observed = _plot_data()
    png = tmp_path / "x.png"
    with pytest.raises(ValueError, match="suffix"):
        plot_forecast_fan(draws, observed, tmp_path / "x.jpgg")
    with pytest.raises(ValueError, match="observed"):
        plot_forecast_fan(draws, observed[:-1], png)
    with pytest.raises(ValueError, match="times"):
        plot_forecast_fan(draws, observed, png, times=np.arange(3))
    with pytest.raises(ValueError, match="column"):
        plot_forecast_fan(draws, observed, png, column=2)
    with pytest.raises(ValueError, match="levels"):
        plot_forecast_fan(draws, observed, png, levels=(0.5, 1.0))
    with pytest.raises(ValueError, match="pit"):
        plot_pit_histogram(torch.tensor([0.2, 1.3]), png)
    with pytest.raises(ValueError, match="pit"):
        plot_pit_histogram([], png)
    with pytest.raises(ValueError, match="bins"):
        plot_pit_histogram(torch.rand(10), png, bins=1)
    with pytest.raises(ValueError, match="pit"):
        plot_interval_reliability({"model": torch.tensor([float("nan")])}, png)
    with pytest.raises(ValueError, match="levels"):
        plot_interval_reliability(torch.rand(10), png, levels=(0.0, 0.5))
    assert not png.exists()
