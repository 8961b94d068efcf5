"""``run_predictive``: a trained run's per-draw predictive, for each guide the command offers."""

import contextlib
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import bayesrnn
from bayesrnn import RunPredictive, run_predictive
from bayesrnn.app.cli import main
from bayesrnn.app.forecast_task import forecast_range
from bayesrnn.app.setup import load_data
from bayesrnn.evaluation.forecast import series_inputs
from bayesrnn.inference.prediction.predictive import sample_weights
from bayesrnn.models import Forecast

from .conftest import SHARED_DATA

pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")

QUICK = ["--quiet", "--set", "evaluation.export=false", "--set", "evaluation.mc_samples=4"]
# the predictive scores an untransformed target (the preset takes √ of sunspots)
FORECAST = ["--preset", "forecast", "--set", "model.hidden_size=3", "--epochs", "2",
            "--set", "data.transform=none"]  # fmt: skip


def forecast_run(root, guide: str, *extra: str):
    out = root / guide
    args = ["run", *FORECAST, "--out", str(out), *QUICK, "--set", f"guide.name={guide}", *extra]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def mean_field_run(tmp_path_factory):
    return forecast_run(tmp_path_factory.mktemp("predictive"), "mean_field")


def test_a_forecasters_predictive_reproduces_its_mc_metrics(mean_field_run):
    predictive = run_predictive(mean_field_run)  # the run's own mc_samples and test split
    test = json.loads((mean_field_run / "metrics.json").read_text())["test"]
    assert isinstance(predictive.draws, Forecast) and predictive.draws.likelihood == "gaussian"
    assert predictive.draws.loc.shape == (4, test["steps"], 1)
    assert predictive.observed.shape == (test["steps"], 1)
    scores = predictive.scores()
    assert scores["crps"] == pytest.approx(test["crps"], rel=1e-6)
    assert scores["coverage_90"] == pytest.approx(test["coverage_90"])
    # the draws differ (a posterior), and a reference of itself is at distance 0
    assert not torch.equal(predictive.draws.loc[0], predictive.draws.loc[1])
    assert predictive.distances(predictive)["wasserstein1"] == 0.0


def test_draw_counts_and_splits(mean_field_run):
    run = bayesrnn.load_run(mean_field_run)
    valid = run_predictive(run, split="valid", num_samples=2)
    assert valid.num_samples == 2 and valid.split == "valid" and valid.guide == "mean_field"
    test = run_predictive(run, num_samples=2)
    with pytest.raises(ValueError, match="other values"):
        valid.distances(test)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_samples"):
            run_predictive(run, num_samples=bad)
    with pytest.raises(ValueError, match="split"):
        run_predictive(run, split="train")


@pytest.mark.parametrize(
    ("guide", "extra", "spread"),
    [
        ("none", ["--set", "model.prior=none"], False),
        ("gal", ["--set", "guide.dropout_hidden=0.5"], True),
        ("auto_low_rank", [], True),
        ("sharpened", [], True),
    ],
)
def test_every_guide_gives_draws(tmp_path, mean_field_run, guide, extra, spread):
    predictive = run_predictive(forecast_run(tmp_path, guide, *extra))
    assert predictive.num_samples == 4
    differ = not torch.equal(predictive.draws.loc[0], predictive.draws.loc[-1])
    assert differ == spread
    reference = run_predictive(mean_field_run)
    distances = predictive.distances(reference)
    assert all(math.isfinite(v) for v in distances.values())


class Replaying(torch.nn.Module):
    """A guide holding fixed weight draws, replayed in order inside ``replay()`` (as MCMC
    draws are) and at random outside it."""

    def __init__(self, draws: list[dict], chains: int) -> None:
        super().__init__()
        self.stored, self.total, self.num_chains = draws, len(draws), chains
        self._order = None

    @contextlib.contextmanager
    def replay(self):
        self._order = iter(range(self.total))
        try:
            yield
        finally:
            self._order = None

    def forward(self, *args, **kwargs):
        index = next(self._order) if self._order else int(torch.randint(self.total, ()))
        for site, value in self.stored[index].items():
            pyro.sample(site, dist.Delta(value, event_dim=value.dim()))

    def median(self, *args, **kwargs):
        return self.stored[0]


def test_a_guide_with_stored_draws_is_read_in_full_and_in_order(mean_field_run):
    run = bayesrnn.load_run(mean_field_run)
    stored = [sample_weights(run.guide) for _ in range(3)]
    run.guide = Replaying(stored, chains=1)
    predictive = run_predictive(run)
    assert predictive.num_samples == 3 and predictive.chains == 1
    # draw i is the network conditioned on stored draw i, computed here without the guide
    corpus = load_data(run.config)
    rows, start = forecast_range(corpus, "test")
    inputs, _ = series_inputs(run.model, rows)
    for i, weights in enumerate(stored):
        with torch.no_grad():
            forecast, _ = poutine.condition(run.model, data=weights)(inputs)
        loc = forecast.loc[start - 1 :, 0].double() * corpus.scale[0] + corpus.mean[0]
        assert torch.allclose(predictive.draws.loc[i], loc, rtol=1e-6), i
    # fewer draws than stored: drawn at random, no chain order to report
    assert run_predictive(run, num_samples=2).chains is None


def test_an_ensembles_members_are_its_draws(mean_field_run):
    run = bayesrnn.load_run(mean_field_run)
    run.guide.members = 3  # the attribute an ensemble guide reports its size with
    assert run_predictive(run).num_samples == 3


@pytest.mark.skipif(
    not (SHARED_DATA / "rt-polarity").is_dir(), reason=f"no rt-polarity/ in {SHARED_DATA}"
)
def test_a_classifiers_predictive_is_per_draw_probabilities(tmp_path):
    out = tmp_path / "polarity"
    args = ["run", "--task", "classify", "--data", "polarity", "--data-dir", str(SHARED_DATA)]
    settings = ["data.max_vocab=30", "data.max_examples=40", "model.embedding_size=4"]
    settings += ["model.hidden_size=4", "trainer.batch_size=64", "model.prior=gaussian"]
    assert main([*args, "--out", str(out), "--epochs", "1", *QUICK,
                 *[x for s in settings for x in ("--set", s)]]) == 0  # fmt: skip
    predictive = run_predictive(out)
    test = json.loads((out / "metrics.json").read_text())["test"]["mc"]
    assert isinstance(predictive, RunPredictive) and predictive.task == "classify"
    assert predictive.draws.shape == (4, test["examples"], 2)
    assert torch.allclose(predictive.draws.sum(-1), torch.ones(4, test["examples"]).double())
    # one batch of 40 sentences in the run's evaluation too: the same draws, the same numbers
    assert predictive.scores()["accuracy"] == pytest.approx(test["accuracy"])
    assert predictive.scores()["nll"] == pytest.approx(test["nll"], rel=1e-5)


def test_a_language_models_predictive_is_per_position_next_symbol_probabilities(tmp_path):
    out = tmp_path / "chars"
    settings = ["data.level=char", "model.embedding_size=4", "model.hidden_size=4"]
    settings += ["guide.name=none", "model.prior=none", "trainer.max_windows=2"]
    settings += ["evaluation.max_tokens=120", "evaluation.pruning=false"]
    settings += ["evaluation.reversed_text=false"]
    args = ["run", "--out", str(out), "--epochs", "1", *QUICK]
    assert main([*args, *[x for s in settings for x in ("--set", s)]]) == 0
    predictive = run_predictive(out, num_samples=2)
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    vocabulary = len(bayesrnn.load_run(out).vocabulary)
    positions = predictive.observed.numel()
    assert predictive.task == "lm" and predictive.draws.shape == (2, positions, vocabulary)
    # no posterior: both draws are the network itself, whose perplexity the run reported
    assert torch.equal(predictive.draws[0], predictive.draws[1])
    assert math.exp(predictive.scores()["nll"]) == pytest.approx(metrics["perplexity_mean"])
    assert predictive.distances(predictive)["total_variation"] == 0.0


def test_autoguide_runs_of_two_sizes_load_one_after_the_other(tmp_path):
    # an autoguide takes parameters of its name from Pyro's global store when it builds its
    # own: the first run's must not leak into the second's
    small = forecast_run(tmp_path / "small", "auto_low_rank", "--set", "model.hidden_size=2")
    large = forecast_run(tmp_path / "large", "auto_low_rank")
    for out in (small, large, small):
        assert run_predictive(out, num_samples=2).num_samples == 2
