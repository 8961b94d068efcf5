"""ArviZ DataTree export: values recomputed by hand, netCDF round trip, arviz_stats accepts it."""

import math
import warnings
from operator import attrgetter

import arviz_stats
import numpy as np
import pyro
import pytest
import torch
import xarray as xr
from pyro import poutine
from pyro.infer.autoguide import AutoNormal

from bayesrnn.data import batchify, load_embedded_corpus
from bayesrnn.evaluation.arviz_export import (
    OPTIMIZATION_GROUP,
    _sample_categorical,
    default_sites,
    export_classifier,
    export_language_model,
    to_datatree,
)
from bayesrnn.evaluation.arviz_layout import site_name, variable_name
from bayesrnn.inference import (
    MeanFieldGuide,
    SharpenedGuide,
    TBPTTTrainer,
    TrainerConfig,
    plan_windows,
    window_batch,
)
from bayesrnn.models import LanguageModel, SequenceClassifier
from bayesrnn.models.bayesian import weight_sites

LOO_DRAWS = 30  # arviz_stats' PSIS needs >= 25 draws (a Pareto tail of at least 5)
VALID_TOKENS = 300
BATCH, BPTT = 5, 20


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_fixtures():
    """Small models: a second OpenMP thread only spins on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread(_fresh_pyro_state):
    """conftest sets two threads before every test; keep one, also for the module fixtures
    built between tests (the module fixture above restores the count at the end)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    """An LSTM LM fitted by Bayes by Backprop to the first 3,000 training tokens (45 windows)."""
    pyro.set_rng_seed(0)
    corpus = load_embedded_corpus()
    train = corpus.train[:3000]
    model = LanguageModel(corpus.vocab_size, 16, 16, num_layers=1, deterministic=("decoder.bias",))
    guide = MeanFieldGuide(model)
    config = TrainerConfig(
        batch_size=10, bptt=20, epochs=3, optimizer="adam", lr=0.01, progress=False
    )
    trainer = TBPTTTrainer(model, guide, train, None, config)
    history = trainer.fit()
    return model, guide, history, corpus, train


@pytest.fixture(scope="module")
def on_train(trained):
    """S = 30 draws scored on the data the posterior was fitted to (what LOO assumes)."""
    model, guide, history, _, train = trained
    pyro.set_rng_seed(1)
    return export_language_model(
        model, guide, train, num_samples=LOO_DRAWS, batch_size=10, bptt=35, history=history
    )


@pytest.fixture(scope="module")
def on_valid(trained):
    """Three draws of every weight on 300 validation tokens, for recomputing values by hand."""
    model, guide, _, corpus, _ = trained
    pyro.set_rng_seed(2)
    stream = corpus.valid[:VALID_TOKENS]
    tree = export_language_model(
        model, guide, stream, num_samples=3, sites=guide.site_names, batch_size=BATCH, bptt=BPTT
    )
    return tree, stream


def draw_weights(tree: xr.DataTree, draw: int, model) -> dict[str, torch.Tensor]:
    """Draw ``draw`` of every exported variable, back in its site's name and torch layout."""
    shapes = {site: value.shape for site, value in weight_sites(model).items()}
    return {
        site_name(name): torch.from_numpy(np.asarray(var.isel(chain=0, draw=draw))).reshape(
            shapes[site_name(name)]
        )
        for name, var in tree.posterior.data_vars.items()
    }


# -- arviz_stats accepts it -----------------------------------------------------------------


def test_loo_gives_a_finite_elpd_below_the_direct_log_predictive_density(on_train) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few draws: k̂ warnings
        loo = arviz_stats.loo(on_train, pointwise=True)
    tokens = 10 * (300 - 1)  # 3,000 tokens in 10 sequences of 300 steps, 299 targets each
    assert loo.n_samples == LOO_DRAWS and loo.n_data_points == tokens
    assert math.isfinite(loo.elpd) and math.isfinite(loo.se)
    assert loo.pareto_k.shape == (tokens,)
    # Independently: lpd = Σ_i log mean_s p(y_i | θ_s); elpd_loo = lpd − p_loo <= lpd.
    ll = on_train.log_likelihood.obs.to_numpy()[0]
    lpd = float(np.sum(np.logaddexp.reduce(ll, axis=0) - math.log(LOO_DRAWS)))
    assert loo.elpd <= lpd + 1e-6
    assert loo.elpd == pytest.approx(lpd - loo.p, rel=1e-9)
    # Per token the elpd is a log-probability of a word among 3,617: between log(1/V)-ish
    # and 0. An untrained model sits at -log V = -8.19 per token.
    per_token = loo.elpd / tokens
    assert -12.0 < per_token < 0.0


def test_summary_of_the_posterior_matches_the_guide(on_train, trained) -> None:
    _, guide, _, _, _ = trained
    table = arviz_stats.summary(on_train, group="posterior", kind="stats", round_to="none")
    sites = default_sites(guide.model)
    assert sites == ["rnn.bias_ih_l0", "rnn.bias_hh_l0"]  # 1-D sites; decoder.bias is fixed
    assert len(table) == sum(guide.loc[s].numel() for s in sites)
    for site in sites:
        loc = guide.loc[site].detach().numpy().reshape(4, 16)  # (gate, unit), torch's order
        scale = guide.scale(site).detach().numpy().reshape(4, 16)
        for g, gate in enumerate("ifgo"):
            labels = [f"{variable_name(site)}[{gate}, {u}]" for u in range(16)]
            mean = table.loc[labels, "mean"].to_numpy()
            # Sample means of 30 draws lie within 5 standard errors of μ.
            assert np.all(np.abs(mean - loc[g]) < 5 * scale[g] / math.sqrt(LOO_DRAWS))


# -- values recomputed independently ---------------------------------------------------------


def test_log_likelihood_is_log_softmax_of_the_conditioned_model_at_the_targets(
    on_valid, trained
) -> None:
    tree, stream = on_valid
    model = trained[0]
    data = batchify(stream, BATCH)
    for draw in (0, 2):
        conditioned = poutine.condition(model, data=draw_weights(tree, draw, model))
        state, per_window = None, []
        with torch.no_grad():
            for window in plan_windows(data.shape[0], BPTT):
                inputs, targets = window_batch(data, window)
                logits, state = conditioned(inputs, state=state)
                per_window.append(torch.log_softmax(logits, -1).gather(-1, targets[..., None]))
        by_hand = torch.cat(per_window)[..., 0].t().reshape(-1).double().numpy()
        exported = tree.log_likelihood.obs.isel(chain=0, draw=draw).to_numpy()
        np.testing.assert_allclose(exported, by_hand, rtol=1e-5, atol=1e-5)
    # Different draws score tokens differently.
    ll = tree.log_likelihood.obs.to_numpy()
    assert not np.allclose(ll[0, 0], ll[0, 1])


def test_observations_are_the_stream_at_their_coordinates(on_valid, trained) -> None:
    tree, stream = on_valid
    vocab = trained[3].vocab_size
    positions = tree.observed_data.token.to_numpy()
    steps = VALID_TOKENS // BATCH
    assert positions.size == BATCH * (steps - 1)
    np.testing.assert_array_equal(tree.observed_data.obs.to_numpy(), stream.numpy()[positions])
    # Stream order: increasing, skipping each sequence's first token.
    assert np.all(np.diff(positions) > 0)
    assert set(range(VALID_TOKENS)) - set(positions.tolist()) == {j * steps for j in range(BATCH)}
    predicted = tree.posterior_predictive.obs
    assert np.issubdtype(predicted.dtype, np.integer)
    assert predicted.to_numpy().min() >= 0 and predicted.to_numpy().max() < vocab


def test_sample_stats_are_the_densities_of_the_draws(on_valid, trained) -> None:
    tree, _ = on_valid
    _, guide, _, _, _ = trained
    stats = tree.sample_stats
    for draw in range(3):
        weights = draw_weights(tree, draw, guide.model)
        log_q = sum(
            torch.distributions.Normal(guide.loc[s].double(), guide.scale(s).double())
            .log_prob(weights[s].double())
            .sum()
            for s in guide.site_names
        )
        # GaussianPrior(1.0): every weight N(0, 1) a priori.
        log_prior = sum(
            torch.distributions.Normal(0.0, 1.0).log_prob(w.double()).sum()
            for w in weights.values()
        )
        got = stats.isel(chain=0, draw=draw)
        # Float32 element densities summed in float64: ~1e-8 relative over 120k weights.
        assert float(got.log_q) == pytest.approx(float(log_q.detach()), rel=1e-7)
        assert float(got.log_prior) == pytest.approx(float(log_prior), rel=1e-7)
        assert float(got.kl) == pytest.approx(float(log_q.detach() - log_prior), rel=1e-5)


# -- layout ----------------------------------------------------------------------------------


def test_groups_dims_and_training_trace(on_train, trained) -> None:
    _, guide, history, _, _ = trained
    tree = on_train
    tokens = 10 * 299
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data"} <= set(
        tree.children
    )
    assert tree.log_likelihood.obs.dims == ("chain", "draw", "token")
    assert tree.log_likelihood.obs.shape == (1, LOO_DRAWS, tokens)
    assert tree.posterior_predictive.obs.shape == (1, LOO_DRAWS, tokens)
    assert tree.observed_data.obs.dims == ("token",)
    # no log_p: an unnormalised posterior needs the training data (see arviz_export)
    assert set(tree.sample_stats.data_vars) == {"log_q", "log_prior", "kl"}
    for name in ("log_q", "log_prior", "kl"):
        assert tree.sample_stats[name].dims == ("chain", "draw")
    for name, var in tree.posterior.data_vars.items():
        assert var.dims == ("chain", "draw", "gate", "unit")
        assert var.size == LOO_DRAWS * guide.loc[site_name(name)].numel()
    trace = tree[OPTIMIZATION_GROUP]
    assert trace.elbo.dims == ("window",) and trace.elbo.size == len(history.elbo) == 45
    np.testing.assert_allclose(trace.elbo.to_numpy(), history.elbo)
    np.testing.assert_allclose(trace.kl.to_numpy(), history.kl)
    assert trace.epoch_lr.dims == ("epoch",)
    assert tree.attrs["guide"] == "MeanFieldGuide"


@pytest.mark.parametrize(("engine", "backend"), [("h5netcdf", "h5py"), ("netcdf4", "netCDF4")])
def test_netcdf_round_trip_keeps_every_value(on_valid, tmp_path, engine, backend) -> None:
    pytest.importorskip(backend, reason=f"engine={engine!r} needs {backend}, not installed")
    tree, _ = on_valid
    history = {"elbo": [-3.0, -2.0, -1.5], "valid_perplexity": [40.0]}
    tree = tree.copy()
    tree[OPTIMIZATION_GROUP] = to_datatree(
        optimization=history, optimization_dims={"valid_perplexity": ["epoch"]}
    )[OPTIMIZATION_GROUP]
    path = tmp_path / "export.nc"
    tree.to_netcdf(path, engine=engine)
    with xr.open_datatree(path, engine=engine) as back:
        assert set(back.groups) == set(tree.groups)
        for group in tree.groups:
            xr.testing.assert_equal(back[group].to_dataset().load(), tree[group].to_dataset())
        assert back.posterior_predictive.obs.dtype == tree.posterior_predictive.obs.dtype
        assert back.attrs["guide"] == "MeanFieldGuide"
        assert "rnn__weight_hh_l0" in back.posterior  # site rnn.weight_hh_l0
        assert list(back.posterior.gate.values) == ["i", "f", "g", "o"]
        assert back.observed_data.attrs["fingerprint"] == tree.attrs["fingerprint"]


# -- array-level to_datatree -----------------------------------------------------------------


def test_to_datatree_prepends_a_chain_for_draw_only_arrays() -> None:
    rng = np.random.default_rng(0)
    ll = rng.normal(size=(4, 6))
    weight = torch.randn(4, 2, 3)
    tree = to_datatree(
        posterior={"w": weight},
        log_likelihood={"obs": ll},
        observed_data={"obs": torch.arange(6)},
        sample_stats={"log_p": np.zeros(4), "log_q": np.ones(4)},
        dims={"obs": ["token"]},
        draw_only=True,
    )
    assert tree.posterior.w.shape == (1, 4, 2, 3)
    np.testing.assert_array_equal(tree.posterior.w.to_numpy()[0], weight.numpy())
    np.testing.assert_array_equal(tree.log_likelihood.obs.to_numpy()[0], ll)
    assert tree.observed_data.obs.dims == ("token",)
    assert np.issubdtype(tree.observed_data.obs.dtype, np.integer)
    assert tree.sample_stats.log_q.dims == ("chain", "draw")


@pytest.mark.parametrize(
    "groups",
    [
        {"posterior": {"w": np.zeros((1, 5, 2))}, "log_likelihood": {"obs": np.zeros((1, 4, 3))}},
        {"posterior": {"w": np.zeros((2, 5))}, "sample_stats": {"log_q": np.zeros((1, 5))}},
        {"posterior": {"w": np.zeros((1, 0, 2))}},
        {"posterior": {"w": np.zeros(5)}},
        {"posterior": {}},
        {},
    ],
    ids=["draws", "chains", "no-draw", "no-sample-dims", "empty-group", "nothing"],
)
def test_to_datatree_rejects_inconsistent_groups(groups) -> None:
    with pytest.raises(ValueError):
        to_datatree(**groups)


# -- bad input to the model-level export ------------------------------------------------------


def tiny_lm() -> LanguageModel:
    return LanguageModel(7, 3, 3, num_layers=1)


@pytest.mark.parametrize("num_samples", [0, -2, 2.5, True, None])
def test_bad_sample_counts_are_value_errors(num_samples) -> None:
    model = tiny_lm()
    with pytest.raises(ValueError, match="num_samples"):
        export_language_model(model, MeanFieldGuide(model), torch.arange(40) % 7, num_samples)


def test_bad_streams_sites_and_guides_are_value_errors() -> None:
    model = tiny_lm()
    guide = MeanFieldGuide(model)
    with pytest.raises(ValueError, match="non-empty"):
        export_language_model(model, guide, torch.tensor([], dtype=torch.long), 2)
    with pytest.raises(ValueError, match="nothing to predict"):
        export_language_model(model, guide, torch.arange(5), 2, batch_size=5)
    with pytest.raises(ValueError):
        export_language_model(model, guide, torch.arange(40), 2)  # ids past the vocabulary
    with pytest.raises(ValueError, match="unknown weight sites"):
        export_language_model(model, guide, torch.arange(40) % 7, 2, sites=["rnn.nope"])
    first = LanguageModel(7, 3, 3, num_layers=1, batch_first=True)
    with pytest.raises(ValueError, match="batch_first"):
        export_language_model(first, MeanFieldGuide(first), torch.arange(40) % 7, 2)


def test_training_traces_of_any_length_get_consistent_dims() -> None:
    model = tiny_lm()
    history = {
        "elbo": [-9.0, -8.0, -7.5],
        "nll": [5.0, 4.5, 4.0],
        "tokens": [20, 20, 18],
        "valid_perplexity": [6.0, 5.5],
        "epoch_lr": [1.0, 0.5],
        "valid_nll": [1.9],  # evaluated once only: its own dim, not a clash with "epoch"
        "note": ["text is not a trace"],
    }
    tree = export_language_model(
        model, MeanFieldGuide(model), torch.arange(40) % 7, 2, batch_size=2, history=history
    )
    trace = tree[OPTIMIZATION_GROUP]
    assert trace.elbo.dims == trace.tokens.dims == ("window",) and trace.sizes["window"] == 3
    assert trace.valid_perplexity.dims == trace.epoch_lr.dims == ("epoch",)
    assert trace.valid_nll.dims == ("valid_nll_dim_0",)
    assert "note" not in trace
    np.testing.assert_array_equal(trace.tokens.to_numpy(), [20, 20, 18])


# -- other guides and the classifier ----------------------------------------------------------


def test_autonormal_draws_have_their_gaussian_log_q() -> None:
    model = tiny_lm()
    guide = AutoNormal(model, init_scale=0.3)
    stream = torch.arange(60) % 7
    tree = export_language_model(
        model, guide, stream, 3, sites=[*default_sites(model), "rnn.weight_hh_l0"],
        batch_size=3, bptt=6,
    )  # fmt: skip
    sites = [name for name, _ in guide.prototype_trace.iter_stochastic_nodes()]
    assert tree.log_likelihood.obs.shape == (1, 3, 3 * 19)
    assert "rnn__weight_hh_l0" in tree.posterior
    # log q needs every site, so recompute it from a draw of everything: rerun with all sites.
    pyro.set_rng_seed(5)
    full = export_language_model(model, guide, stream, 2, sites=sites, batch_size=3, bptt=6)
    for draw in range(2):
        weights = draw_weights(full, draw, model)
        log_q = sum(
            torch.distributions.Normal(
                attrgetter(s)(guide.locs).double(), attrgetter(s)(guide.scales).double()
            )
            .log_prob(weights[s].double())
            .sum()
            for s in sites
        )
        expected = float(log_q.detach())
        assert float(full.sample_stats.log_q[0, draw]) == pytest.approx(expected, abs=1e-3)


def test_sharpened_guide_is_exported_as_its_q_phi() -> None:
    model = tiny_lm()
    guide = SharpenedGuide(model)
    guide.eval()  # in eval mode a call would sharpen the mean; the export must still sample
    tree = export_language_model(
        model, guide, torch.arange(60) % 7, 2, sites=guide.site_names, batch_size=3, bptt=6
    )
    for draw in range(2):
        weights = draw_weights(tree, draw, model)
        log_q = sum(guide.distribution(s).log_prob(weights[s]).double() for s in guide.site_names)
        expected = float(log_q.detach())
        assert float(tree.sample_stats.log_q[0, draw]) == pytest.approx(expected, rel=1e-5)
    first = tree.posterior["decoder__weight"].to_numpy()[0]
    assert not np.allclose(first[0], first[1])  # two different draws, not the mean twice


def test_classifier_export_has_one_observation_per_sequence() -> None:
    model = SequenceClassifier(11, 3, 4, 4)
    guide = MeanFieldGuide(model)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (6, 5), generator=gen)
    lengths = torch.tensor([6, 3, 5, 1, 6])
    labels = torch.tensor([0, 2, 1, 1, 0])
    tree = export_classifier(model, guide, tokens, lengths, labels, 4, sites=guide.site_names)
    assert tree.log_likelihood.obs.dims == ("chain", "draw", "sequence")
    assert tree.log_likelihood.obs.shape == (1, 4, 5)
    np.testing.assert_array_equal(tree.observed_data.obs.to_numpy(), labels.numpy())
    for draw in (0, 3):
        with torch.no_grad():
            logits = poutine.condition(model, data=draw_weights(tree, draw, model))(
                tokens, lengths=lengths
            )
        by_hand = torch.log_softmax(logits, -1).gather(-1, labels[:, None])[:, 0]
        np.testing.assert_allclose(
            tree.log_likelihood.obs[0, draw].to_numpy(), by_hand.numpy(), rtol=1e-5
        )


def test_predictive_sampler_draws_with_the_model_probabilities() -> None:
    probs = torch.tensor([0.1, 0.2, 0.7, 0.0])
    logits = probs.log().expand(50_000, 4)
    torch.manual_seed(0)
    counts = torch.bincount(_sample_categorical(logits), minlength=4).double() / 50_000
    assert counts[3] == 0  # a zero-probability class is never drawn
    assert torch.allclose(counts, probs.double(), atol=0.01)  # binomial sd here is <= 0.0021
    assert _sample_categorical(torch.zeros(2, 3, 5)).shape == (2, 3)
