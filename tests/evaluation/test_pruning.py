"""Signal-to-noise pruning: hand-set posteriors with known victims, and the perplexity curve."""

from operator import attrgetter

import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoNormal
from torch.distributions import biject_to

from bayesrnn.evaluation.pruning import (
    PruningCurve,
    _zeroed_count,
    gaussian_posterior,
    prune_by_snr,
    pruning_curve,
)
from bayesrnn.inference import GalDropoutGuide, MeanFieldGuide, SharpenedGuide, evaluate_stream
from bayesrnn.inference.guides.mean_field import MIN_SCALE, inverse_softplus
from bayesrnn.models import LanguageModel

VOCAB = 5

# (site, index, mean, sd): |μ|/σ = 0.2, 0.3, 0.4 (a tie), 0.4, 0.5; every other weight has 10.
LOW_SNR = [
    ("decoder.weight", (4, 1), -0.2, 1.0),  # negative mean: the ratio uses |μ|
    ("rnn.weight_hh_l0", (3, 1), 3.0, 10.0),  # large mean, larger σ: the ratio, not |μ|, counts
    ("embedding.weight", (0, 1), 0.4, 1.0),  # ties with the next; earlier site goes first
    ("rnn.bias_hh_l0", (2,), 0.4, 1.0),
    ("embedding.weight", (1, 0), 0.5, 1.0),
]


@pytest.fixture(autouse=True)
def _one_thread(_fresh_pyro_state):
    """These models are tiny: a second OpenMP thread only spins on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model() -> LanguageModel:
    return LanguageModel(VOCAB, 2, 2, num_layers=1)


def hand_set(guide: MeanFieldGuide) -> None:
    """μ = 10, σ = 1 everywhere except the LOW_SNR weights."""
    with torch.no_grad():
        for site in guide.site_names:
            guide.loc[site].fill_(10.0)
            guide.rho[site].fill_(float(inverse_softplus(torch.tensor(1.0 - MIN_SCALE))))
        for site, index, mean, sd in LOW_SNR:
            guide.loc[site][index] = mean
            guide.rho[site][index] = inverse_softplus(torch.tensor(sd - MIN_SCALE))


def zeroed_positions(weights: dict[str, torch.Tensor]) -> set[tuple[str, tuple[int, ...]]]:
    return {
        (site, tuple(int(i) for i in index))
        for site, w in weights.items()
        for index in (w == 0).nonzero()
    }


def expected(k: int) -> set[tuple[str, tuple[int, ...]]]:
    return {(site, index) for site, index, _, _ in LOW_SNR[:k]}


def test_lowest_ratios_go_first_over_all_sites_with_ties_by_position() -> None:
    guide = MeanFieldGuide(tiny_model())
    hand_set(guide)
    names = guide.site_names
    assert names.index("embedding.weight") < names.index("rnn.bias_hh_l0")  # the tie order
    total = sum(guide.loc[s].numel() for s in names)
    for k in range(len(LOW_SNR) + 1):
        weights = prune_by_snr(guide, k / total)
        assert zeroed_positions(weights) == expected(k), k
        for site in names:  # survivors keep their means
            kept = weights[site] != 0
            assert torch.equal(weights[site][kept], guide.loc[site].detach()[kept])
    # Exactly one of the two tied weights at k = 3, and it is the earlier one.
    weights = prune_by_snr(guide, 3 / total)
    assert weights["embedding.weight"][0, 1] == 0 and weights["rnn.bias_hh_l0"][2] == 0.4


def test_fraction_rounds_down_to_whole_weights() -> None:
    guide = MeanFieldGuide(tiny_model())
    hand_set(guide)
    total = sum(guide.loc[s].numel() for s in guide.site_names)
    assert zeroed_positions(prune_by_snr(guide, 2.9 / total)) == expected(2)
    fractions = tuple(k / total for k in range(total + 1))
    curve = pruning_curve(guide.model, guide, torch.arange(12) % VOCAB, fractions, batch_size=2)
    assert curve.zeroed == tuple(range(total + 1))
    # 0.29 * 100 is 28.999999999999996 in floating point; it still means 29 weights.
    assert 0.29 * 100 < 29 and _zeroed_count(0.29, 100) == 29


def test_fraction_zero_leaves_means_and_one_zeroes_everything() -> None:
    guide = MeanFieldGuide(tiny_model())
    none = prune_by_snr(guide, 0.0)
    every = prune_by_snr(guide, 1)
    assert set(none) == set(every) == set(guide.site_names)
    for site in guide.site_names:
        assert torch.equal(none[site], guide.loc[site].detach())
        assert every[site].shape == guide.loc[site].shape
        assert not every[site].any()
    # The guide itself is untouched.
    assert all(guide.loc[s].abs().sum() > 0 for s in guide.site_names if "bias" not in s)


def test_autonormal_is_ranked_like_the_mean_field_guide() -> None:
    model = tiny_model()
    field = MeanFieldGuide(model)
    hand_set(field)
    auto = AutoNormal(model)
    tokens = torch.zeros(3, 2, dtype=torch.long)
    auto(tokens, tokens)
    with torch.no_grad():
        for site in field.site_names:
            # PyroParams keep an unconstrained tensor; σ goes through softplus_positive.
            path, _, name = site.rpartition(".")
            locs, scales = attrgetter(path)(auto.locs), attrgetter(path)(auto.scales)
            getattr(locs, name + "_unconstrained").copy_(field.loc[site])
            to_scale = biject_to(constraints.softplus_positive)
            getattr(scales, name + "_unconstrained").copy_(to_scale.inv(field.scale(site)))
    total = sum(field.loc[s].numel() for s in field.site_names)
    by_auto = prune_by_snr(auto, 4 / total)
    assert zeroed_positions(by_auto) == expected(4)
    means, sds = zip(*gaussian_posterior(auto).values(), strict=True)
    assert torch.allclose(
        torch.cat([s.flatten() for s in sds]),
        torch.cat([field.scale(s).detach().flatten() for s in field.site_names]),
    )
    assert len(means) == len(field.site_names)


def test_sharpened_guide_is_pruned_on_its_mean_field_part() -> None:
    guide = SharpenedGuide(tiny_model())
    hand_set(guide)
    total = sum(guide.loc[s].numel() for s in guide.site_names)
    assert zeroed_positions(prune_by_snr(guide, 2 / total)) == expected(2)


def test_guides_without_gaussian_scales_are_refused() -> None:
    with pytest.raises(ValueError, match="Gaussian guide"):
        prune_by_snr(GalDropoutGuide(tiny_model(), hidden=0.5), 0.5)
    with pytest.raises(ValueError, match="not been run"):
        prune_by_snr(AutoNormal(tiny_model()), 0.5)


@pytest.mark.parametrize("fraction", [-0.1, 1.01, float("nan"), True, "0.5", None])
def test_bad_fractions_are_value_errors(fraction) -> None:
    guide = MeanFieldGuide(tiny_model())
    with pytest.raises(ValueError, match="fraction"):
        prune_by_snr(guide, fraction)
    with pytest.raises(ValueError, match="fraction"):
        pruning_curve(guide.model, guide, torch.arange(40) % VOCAB, (0.0, fraction))


def test_curve_starts_at_the_posterior_mean_perplexity_and_ends_at_uniform() -> None:
    torch.manual_seed(3)
    model = LanguageModel(VOCAB, 4, 3, num_layers=2)
    guide = MeanFieldGuide(model)
    with torch.no_grad():  # a posterior mean far from the prior's, so pruning changes things
        for site in guide.site_names:
            guide.loc[site].normal_(0.0, 1.0)
    stream = torch.randint(0, VOCAB, (203,))
    curve = pruning_curve(model, guide, stream, (0.0, 0.5, 1.0), batch_size=4, bptt=7)
    assert isinstance(curve, PruningCurve)
    reference = evaluate_stream(model, guide, stream, batch_size=4, bptt=7)
    assert curve.perplexities[0] == pytest.approx(reference.perplexity, rel=1e-6)
    # Every weight zero (biases included): logits are 0, the prediction uniform.
    assert curve.perplexities[2] == pytest.approx(VOCAB, rel=1e-6)
    total = sum(guide.loc[s].numel() for s in guide.site_names)
    assert curve.total == total and curve.zeroed == (0, total // 2, total)
    assert curve.fractions == (0.0, 0.5, 1.0)
    # The middle point is the posterior-mean perplexity of a guide whose means were pruned.
    pruned = prune_by_snr(guide, 0.5)
    with torch.no_grad():
        for site in guide.site_names:
            guide.loc[site].copy_(pruned[site])
    again = evaluate_stream(model, guide, stream, batch_size=4, bptt=7)
    assert curve.perplexities[1] == pytest.approx(again.perplexity, rel=1e-6)
    assert curve.perplexities[1] != pytest.approx(curve.perplexities[0], rel=1e-3)


def test_curve_rejects_streams_with_nothing_to_predict() -> None:
    guide = MeanFieldGuide(tiny_model())
    with pytest.raises(ValueError, match="nothing to predict"):
        pruning_curve(guide.model, guide, torch.arange(4) % VOCAB, batch_size=4)
    with pytest.raises(ValueError):
        pruning_curve(guide.model, guide, torch.tensor([], dtype=torch.long), batch_size=4)
    with pytest.raises(ValueError, match="at least one"):
        pruning_curve(guide.model, guide, torch.arange(40) % VOCAB, ())
    first = LanguageModel(VOCAB, 2, 2, num_layers=1, batch_first=True)
    with pytest.raises(ValueError, match="batch_first"):
        pruning_curve(first, MeanFieldGuide(first), torch.arange(40) % VOCAB)
