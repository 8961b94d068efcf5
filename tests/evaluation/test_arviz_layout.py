"""ArviZ export: Gal's guide, variable names and dims, the split and fingerprint of the data."""

import math
import warnings

import arviz_stats
import numpy as np
import pyro
import pytest
import torch
import xarray as xr
from pyro import poutine

from bayesrnn.data import batchify
from bayesrnn.evaluation.arviz_export import export_classifier, export_language_model
from bayesrnn.evaluation.arviz_forecast import export_forecaster
from bayesrnn.evaluation.arviz_layout import (
    observations_fingerprint,
    site_layouts,
    site_name,
    variable_name,
)
from bayesrnn.inference import GalDropoutGuide, MeanFieldGuide, plan_windows, window_batch
from bayesrnn.models import GaussianPrior, LanguageModel, SequenceClassifier, SequenceRegressor
from bayesrnn.models.bayesian import weight_sites
from bayesrnn.models.regularisers import mc_dropout

V, B, T = 11, 3, 6
STREAM = (torch.arange(90) * 7 + torch.arange(90) // 5) % V  # 90 tokens: 3 sequences of 30


@pytest.fixture(autouse=True)
def _one_thread(_fresh_pyro_state):
    torch.set_num_threads(1)


def gal_lm(scope: str = "sequence") -> tuple[LanguageModel, GalDropoutGuide]:
    model = LanguageModel(V, 4, 5, num_layers=2, prior=GaussianPrior(1.0))
    return model, GalDropoutGuide(model, input=0.3, hidden=0.5, output=0.2, scope=scope)


def ll_by_hand(model, weights, stream, masks: bool, copies: int = 1) -> np.ndarray:
    """log softmax of the conditioned model's logits at the targets, window by window, in the
    export's order (and its random-number order: masks, then one uniform per target). With
    ``copies`` the batch is repeated, one copy per draw: (copies, tokens)."""
    data = batchify(stream, B).repeat(1, copies)
    state, out = None, []
    context = mc_dropout(model) if masks else mc_dropout(model, enabled=False)
    model.eval()
    with torch.no_grad(), context:
        for window in plan_windows(data.shape[0], T):
            inputs, targets = window_batch(data, window)
            logits, state = poutine.condition(model, data=weights)(inputs, targets, state=state)
            out.append(torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0])
            torch.rand((*targets.shape, 1))  # the export's predictive draw
    ll = torch.cat(out)  # (steps − 1, copies·B)
    per_copy = [ll[:, c * B : (c + 1) * B].t().reshape(-1) for c in range(copies)]
    return torch.stack(per_copy).double().numpy()


# -- Gal's guide ----------------------------------------------------------------------------


def test_gal_sequence_scope_draw_is_an_mc_dropout_pass_with_the_mean_weights() -> None:
    """The draws share M, so they run as copies of the batch in one call, each copy with its
    own masks: draw s is copy s."""
    model, guide = gal_lm("sequence")
    pyro.set_rng_seed(3)
    tree = export_language_model(model, guide, STREAM, 3, batch_size=B, bptt=T)
    pyro.set_rng_seed(3)
    expected = ll_by_hand(model, guide.median(), STREAM, masks=True, copies=3)
    np.testing.assert_allclose(tree.log_likelihood.obs[0].to_numpy(), expected, rtol=1e-6)
    assert not np.allclose(expected[0], expected[1])  # other masks, other scores
    # masks were on: the mean network (no masks) scores the tokens differently
    plain = ll_by_hand(model, guide.median(), STREAM, masks=False)[0]
    assert not np.allclose(expected[0], plain)
    assert "sample_stats" not in tree.children  # no density, no log q
    assert tree.attrs["guide"] == "GalDropoutGuide"


def test_gal_batch_scope_posterior_holds_the_masked_weights_that_scored_the_tokens() -> None:
    model, guide = gal_lm("batch")
    sites = list(weight_sites(model))
    tree = export_language_model(model, guide, STREAM, 2, sites=sites, batch_size=B, bptt=T)
    shapes = {s: v.shape for s, v in weight_sites(model).items()}
    for draw in range(2):
        weights = {
            site_name(name): torch.from_numpy(var[0, draw].to_numpy()).reshape(
                shapes[site_name(name)]
            )
            for name, var in tree.posterior.data_vars.items()
        }
        expected = ll_by_hand(model, weights, STREAM, masks=False)[0]  # masks in the weights
        np.testing.assert_allclose(tree.log_likelihood.obs[0, draw].to_numpy(), expected, 1e-5)
    hidden = tree.posterior["rnn__weight_hh_l0"][0, 0].to_numpy()  # (gate, unit, hidden)
    mean = guide.mean["rnn.weight_hh_l0"].detach().numpy().reshape(hidden.shape)
    dropped = np.all(hidden == 0, axis=(0, 1))
    assert dropped.any() and not dropped.all()
    np.testing.assert_allclose(hidden[..., ~dropped], mean[..., ~dropped] / 0.5, rtol=1e-6)


def test_gal_sequence_scope_posterior_is_a_column_masked_draw_of_q() -> None:
    model, guide = gal_lm("sequence")
    sites = ["rnn.weight_hh_l0", "rnn.bias_ih_l0", "embedding.weight"]
    tree = export_language_model(model, guide, STREAM, 40, sites=sites, batch_size=B, bptt=T)
    hh = tree.posterior["rnn__weight_hh_l0"][0].to_numpy()  # (draw, gate, unit, hidden)
    mean = guide.mean["rnn.weight_hh_l0"].detach().numpy().reshape(hh.shape[1:])
    kept = ~np.all(hh == 0, axis=(1, 2))  # (draw, hidden): a whole column is dropped or kept
    for draw in range(40):
        np.testing.assert_allclose(hh[draw][..., kept[draw]], mean[..., kept[draw]] / 0.5, 1e-6)
    assert 0.3 < kept.mean() < 0.7  # 200 columns, each kept with probability 0.5
    bias = tree.posterior["rnn__bias_ih_l0"][0].to_numpy()  # biases are never dropped
    np.testing.assert_array_equal(bias, np.broadcast_to(bias[0], bias.shape))
    emb = tree.posterior["embedding__weight"][0].to_numpy()  # embedding rate 0: always M
    np.testing.assert_allclose(emb[0], guide.mean["embedding.weight"].detach().numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loo = arviz_stats.loo(tree)
    assert loo.n_samples == 40 and math.isfinite(loo.elpd)


def test_gal_classifier_exports_without_sample_stats() -> None:
    model = SequenceClassifier(V, 3, 4, 4, prior=GaussianPrior(1.0))
    guide = GalDropoutGuide(model, hidden=0.5)
    tokens = torch.arange(20).reshape(4, 5) % V
    labels = torch.tensor([0, 2, 1, 1, 0])
    tree = export_classifier(
        model, guide, tokens, None, labels, 3, label_names=["a", "b", "c"], split="test"
    )
    assert tree.log_likelihood.obs.shape == (1, 3, 5)
    assert "sample_stats" not in tree.children
    assert list(tree.posterior.decoder__bias.coords["class"].values) == ["a", "b", "c"]
    assert tree.attrs["split"] == tree.observed_data.attrs["split"] == "test"


# -- names, dims and coordinates -------------------------------------------------------------


def test_variable_names_map_both_ways_and_refuse_double_underscores() -> None:
    assert variable_name("rnn.bias_ih_l0") == "rnn__bias_ih_l0"
    assert site_name("rnn__bias_ih_l0") == "rnn.bias_ih_l0"
    with pytest.raises(ValueError, match="__"):
        variable_name("rnn.bias__odd")


def test_lstm_dims_split_the_gates_and_name_inputs_and_vocabulary() -> None:
    model = LanguageModel(V, 4, 5, num_layers=2)
    vocab = [f"w{i}" for i in range(V)]
    layouts, coords = site_layouts(model, list(weight_sites(model)), {"vocab": vocab})
    dims = {lay.site: lay.dims for lay in layouts}
    assert dims["rnn.weight_ih_l0"] == ("gate", "unit", "input")
    assert dims["rnn.weight_ih_l1"] == ("gate", "unit", "hidden")
    assert dims["rnn.weight_hh_l1"] == ("gate", "unit", "hidden")
    assert dims["rnn.bias_hh_l0"] == ("gate", "unit")
    assert dims["embedding.weight"] == ("vocab", "embedding")
    assert dims["decoder.weight"] == ("vocab", "hidden")
    assert list(coords["gate"]) == ["i", "f", "g", "o"]
    assert list(coords["vocab"]) == vocab
    # torch's layout: row g·H + u of weight_ih is gate g, unit u
    weight = weight_sites(model)["rnn.weight_ih_l0"]
    lay = next(lay for lay in layouts if lay.site == "rnn.weight_ih_l0")
    np.testing.assert_array_equal(lay.arrange(weight)[2, 3], weight[2 * 5 + 3].detach().numpy())
    with pytest.raises(ValueError, match="vocab labels"):
        site_layouts(model, ["embedding.weight"], {"vocab": vocab[:3]})


def test_gru_gates_and_a_tanh_rnn_without_gates() -> None:
    gru = LanguageModel(V, 4, 5, num_layers=1, cell="gru")
    layouts, coords = site_layouts(gru, ["rnn.weight_hh_l0"])
    assert layouts[0].dims == ("gate", "unit", "hidden") and layouts[0].shape == (3, 5, 5)
    assert list(coords["gate"]) == ["r", "z", "n"]
    tanh = LanguageModel(V, 4, 5, num_layers=1, cell="rnn_tanh")
    layouts, coords = site_layouts(tanh, ["rnn.weight_hh_l0", "rnn.bias_ih_l0"])
    assert [lay.dims for lay in layouts] == [("unit", "hidden"), ("unit",)]
    assert "gate" not in coords


def test_exported_tree_carries_names_dims_coords_split_and_fingerprint(tmp_path) -> None:
    model = LanguageModel(V, 4, 5, num_layers=1)
    vocab = [f"w{i}" for i in range(V)]
    tree = export_language_model(
        model, MeanFieldGuide(model), STREAM, 2, sites=["embedding.weight", "rnn.bias_ih_l0"],
        batch_size=B, bptt=T, split="valid", vocabulary=vocab,
    )  # fmt: skip
    path = tmp_path / "t.nc"
    tree.to_netcdf(path, engine="h5netcdf")
    with xr.open_datatree(path, engine="h5netcdf") as back:
        emb = back.posterior["embedding__weight"]
        assert emb.dims == ("chain", "draw", "vocab", "embedding")
        assert list(emb.coords["vocab"].values) == vocab
        assert back.posterior["rnn__bias_ih_l0"].sel(gate="f").shape == (1, 2, 5)
        assert back.attrs["split"] == back.observed_data.attrs["split"] == "valid"
        obs = back.observed_data.obs
        fingerprint = observations_fingerprint(obs.values, obs.token.values)
        assert back.attrs["fingerprint"] == back.observed_data.attrs["fingerprint"] == fingerprint


def test_forecaster_posterior_is_named_and_labelled() -> None:
    model = SequenceRegressor(2, 3, output_size=1, prior=GaussianPrior(1.0))
    series = torch.randn(30, 2)
    tree = export_forecaster(
        model, MeanFieldGuide(model), series, 20, 2, target_names=["y"], split="test"
    )
    assert set(tree.posterior.data_vars) == {"rnn__bias_ih_l0", "rnn__bias_hh_l0", "decoder__bias"}
    assert list(tree.posterior.output.values) == ["loc_y", "scale_y"]
    assert tree.attrs["split"] == "test" and "log_p" not in tree.sample_stats


# -- the observations' fingerprint ------------------------------------------------------------


def test_fingerprint_depends_on_the_tokens_and_positions_not_on_the_model_or_dtype() -> None:
    one = LanguageModel(V, 4, 5, num_layers=1)
    two = LanguageModel(V, 3, 3, num_layers=1, cell="gru")

    def fingerprint(model, stream, batch=B):
        tree = export_language_model(model, MeanFieldGuide(model), stream, 1, batch_size=batch)
        return tree.attrs["fingerprint"]

    same = fingerprint(one, STREAM)
    assert fingerprint(two, STREAM) == same
    assert fingerprint(one, STREAM.flip(0)) != same
    assert fingerprint(one, STREAM, batch=2) != same  # other positions are predicted
    ids, positions = np.arange(5), np.arange(1, 6)
    wide = observations_fingerprint(ids.astype(np.int64), positions)
    assert observations_fingerprint(ids.astype(np.int32), positions.astype(np.int16)) == wide
