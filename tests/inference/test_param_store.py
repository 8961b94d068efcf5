"""The weight guides follow Pyro's param store: named per guide, loading honoured, no sharing.

Checks: a save/load round trip gives the same predictions (store loaded before or after the
fresh guide is built), two guides built side by side train independently, a deleted guide's
values are not inherited, and a store saved from another model is refused by name.
"""

import gc

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from bayesrnn.inference.guides import (
    EnsembleGuide,
    GalDropoutGuide,
    MeanFieldGuide,
    SharpenedGuide,
)
from bayesrnn.models import LanguageModel

GUIDES = {
    "mean_field": lambda m, **kw: MeanFieldGuide(m, init_scale=0.05, **kw),
    "sharpened": lambda m, **kw: SharpenedGuide(m, init_scale=0.05, **kw),
    "gal": lambda m, **kw: GalDropoutGuide(m, input=0.2, hidden=0.2, **kw),
    "ensemble": lambda m, **kw: EnsembleGuide(m, members=2, seed=0, **kw),
}


def _lm(seed: int) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(15, 6, 7)


def _data():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 15, (6, 3), generator=generator)


def _train(model, guide, steps=3) -> list[float]:
    """SVI steps; an ensemble trains with the library's ELBO only, so its values are moved by
    hand (what is checked is the store, not the ensemble's training)."""
    if isinstance(guide, EnsembleGuide):
        with torch.no_grad():
            for parameter in guide.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        return []
    tokens = _data()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    return [svi.step(tokens[:-1], tokens[1:]) for _ in range(steps)]


def _prediction(model, guide) -> torch.Tensor:
    """Next-token logits with the guide's posterior-mean weights (no randomness)."""
    model.eval()
    with torch.no_grad():
        return poutine.condition(model, data=guide.median())(_data())[0]


def _values(guide) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in guide.named_parameters()}


@pytest.mark.parametrize("load_first", [False, True])
@pytest.mark.parametrize("kind", sorted(GUIDES))
def test_a_saved_store_loaded_into_a_fresh_guide_gives_the_same_predictions(
    kind, load_first, tmp_path
):
    pyro.clear_param_store()
    model = _lm(0)
    guide = GUIDES[kind](model)
    _train(model, guide)
    expected = _prediction(model, guide)
    pyro.get_param_store().save(tmp_path / "store.pt")

    pyro.clear_param_store()
    fresh_model = _lm(1)  # another initialisation: only the store can make them agree
    if load_first:
        pyro.get_param_store().load(tmp_path / "store.pt")
        fresh = GUIDES[kind](fresh_model)
    else:
        fresh = GUIDES[kind](fresh_model)
        assert not torch.allclose(_prediction(fresh_model, fresh), expected)
        pyro.get_param_store().load(tmp_path / "store.pt")
    torch.testing.assert_close(_prediction(fresh_model, fresh), expected)
    fresh.sync_with_param_store()  # the parameters no prediction read (σ, η) too
    for name, value in _values(guide).items():  # every parameter, σ and η included
        torch.testing.assert_close(fresh.get_parameter(name), value)


@pytest.mark.parametrize("kind", ["mean_field", "gal"])
def test_two_guides_built_side_by_side_train_independently(kind):
    pyro.clear_param_store()
    first_model, second_model = _lm(0), _lm(0)
    first = GUIDES[kind](first_model)
    _train(first_model, first)
    trained_first = _values(first)
    second = GUIDES[kind](second_model)  # no clear_param_store() in between
    assert second._pyro_name != first._pyro_name
    untrained = _values(second)
    losses = _train(second_model, second, steps=4)
    moved = max((second.get_parameter(n) - v).abs().max() for n, v in untrained.items())
    assert moved > 1e-3 and losses[-1] < losses[0]
    for name, value in trained_first.items():  # the first guide is untouched
        torch.testing.assert_close(first.get_parameter(name), value, rtol=0, atol=0)
    names = set(pyro.get_param_store().keys())
    for guide in (first, second):  # both are in the store, each under its own name
        own = {f"{guide._pyro_name}.{n}" for n, _ in guide.named_parameters()}
        assert own <= names


def test_a_guide_does_not_inherit_the_values_a_deleted_guide_left_in_the_store():
    pyro.clear_param_store()
    model = _lm(0)
    old = MeanFieldGuide(model, init_scale=0.05)
    _train(model, old)
    del old
    gc.collect()
    new = MeanFieldGuide(model, init_scale=0.05)
    assert new._pyro_name == "MeanFieldGuide"  # the name is free again
    _ = new.median()  # a read syncs with the store
    for site, initial in new.__dict__["_initial"].items():
        torch.testing.assert_close(new.loc[site], initial, rtol=0, atol=0)


def test_store_names_carry_the_guide_name_and_a_name_can_be_given():
    pyro.clear_param_store()
    model = _lm(0)
    guide = MeanFieldGuide(model, name="posterior")
    store = pyro.get_param_store()
    assert "posterior.loc.embedding__weight" in store
    assert store["posterior.loc.embedding__weight"] is guide.loc["embedding.weight"]
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        MeanFieldGuide(model, name="")


def test_a_store_saved_from_another_model_is_refused_naming_the_parameter(tmp_path):
    pyro.clear_param_store()
    small = LanguageModel(15, 6, 7)
    MeanFieldGuide(small)
    pyro.get_param_store().save(tmp_path / "store.pt")
    pyro.clear_param_store()
    pyro.get_param_store().load(tmp_path / "store.pt")
    with pytest.raises(ValueError, match=r"'MeanFieldGuide\.loc\.embedding__weight' of shape"):
        MeanFieldGuide(LanguageModel(20, 6, 7))
