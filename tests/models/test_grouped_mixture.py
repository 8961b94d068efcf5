"""The row-wise scale mixture of brnn_ptb.py against hand computation, and its settings."""

import math

import pytest
import torch

from bayesrnn.models import (
    GroupedScaleMixture,
    LanguageModel,
    ScaleMixturePrior,
    brnn_ptb_prior,
    site_prior,
)

PI, S1, S2 = 0.25, math.exp(-1.0), math.exp(-7.0)


def _log_normal(x: float, sigma: float) -> float:
    return -0.5 * (x / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def _row_log_density(row: list[float]) -> float:
    """log(π Π N(w; 0, σ1²) + (1−π) Π N(w; 0, σ2²)), one row, by hand in Python floats."""
    first = math.log(PI) + sum(_log_normal(w, S1) for w in row)
    second = math.log(1 - PI) + sum(_log_normal(w, S2) for w in row)
    top = max(first, second)
    return top + math.log(math.exp(first - top) + math.exp(second - top))


# Row 0 lies in the σ2 spike (that component wins by ~13 nats), row 1 is ordinary weights (the
# σ1 component wins by ~10⁵ nats), row 2 sits where both components matter.
ROWS = [[1e-4, -2e-4, 5e-5], [0.3, -0.1, 0.2], [3.25e-3, -3.25e-3, 3.25e-3]]


def test_row_wise_log_prob_matches_hand_computation_for_rows_favouring_each_component():
    d = ScaleMixturePrior(PI, S1, S2, per="row").distribution(
        torch.Size([3, 3]), torch.device("cpu"), torch.float64
    )
    value = torch.tensor(ROWS, dtype=torch.float64)
    expected = sum(_row_log_density(r) for r in ROWS)
    assert d.log_prob(value).item() == pytest.approx(expected, rel=1e-12)
    # The rows really favour different components: the spike for row 0, the wide one for row 1.
    first = [math.log(PI) + sum(_log_normal(w, S1) for w in r) for r in ROWS]
    second = [math.log(1 - PI) + sum(_log_normal(w, S2) for w in r) for r in ROWS]
    assert second[0] > first[0] + 10 and first[1] > second[1] + 1e4
    assert abs(first[2] - second[2]) < 1
    # A row-wise mixture is not the per-weight one.
    per_weight = ScaleMixturePrior(PI, S1, S2).distribution(
        torch.Size([3, 3]), torch.device("cpu"), torch.float64
    )
    assert abs(per_weight.log_prob(value).item() - expected) > 1.0


def test_column_and_whole_groupings_and_sample_dims():
    value = torch.tensor(ROWS, dtype=torch.float64)
    cols = ScaleMixturePrior(PI, S1, S2, per="column").distribution(
        torch.Size([3, 3]), torch.device("cpu"), torch.float64
    )
    assert cols.log_prob(value).item() == pytest.approx(
        sum(_row_log_density(list(c)) for c in zip(*ROWS, strict=True)), rel=1e-12
    )
    whole = ScaleMixturePrior(PI, S1, S2, per="whole").distribution(
        torch.Size([3, 3]), torch.device("cpu"), torch.float64
    )
    assert whole.log_prob(value).item() == pytest.approx(
        _row_log_density([w for r in ROWS for w in r]), rel=1e-12
    )
    stacked = torch.stack([value, 2 * value])  # a leading sample dim is kept
    rows = ScaleMixturePrior(PI, S1, S2, per="row").distribution(
        torch.Size([3, 3]), torch.device("cpu"), torch.float64
    )
    got = rows.log_prob(stacked)
    assert got.shape == (2,)
    assert got[1].item() == pytest.approx(sum(_row_log_density([2 * w for w in r]) for r in ROWS))


def test_row_samples_share_one_component_per_row():
    d = GroupedScaleMixture(0.5, 1.0, 1e-6, (400, 50), "row")
    draws = d.sample()
    assert draws.shape == (400, 50)
    spread = draws.abs().amax(dim=-1)
    wide, narrow = spread > 1e-3, spread < 1e-4  # each row is all-wide or all-narrow
    assert bool((wide | narrow).all()) and 150 < int(wide.sum()) < 250


@pytest.mark.parametrize("per", ["row", "column"])
def test_row_wise_prior_on_a_vector_site_is_a_value_error_naming_the_setting(per):
    with pytest.raises(ValueError, match=f"per={per!r}"):
        ScaleMixturePrior(per=per).distribution(torch.Size([8]), torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="per='row'"):
        LanguageModel(10, 4, 4, prior=ScaleMixturePrior(per="row"))


def test_unknown_grouping_is_a_value_error():
    with pytest.raises(ValueError, match="per must be one of"):
        ScaleMixturePrior(per="gate")


def test_brnn_ptb_prior_groups_as_tensorflow_rows():
    model = LanguageModel(
        10, 4, 6, num_layers=1, prior=brnn_ptb_prior(), deterministic=["decoder.bias"]
    )
    assert site_prior(model, "embedding.weight").per == "row"  # (vocab, dim): a word's vector
    assert site_prior(model, "rnn.weight_ih_l0").per == "column"  # (4H, in): an input unit
    assert site_prior(model, "decoder.weight").per == "column"  # (V, H): a hidden unit
    assert site_prior(model, "rnn.bias_ih_l0").per == "whole"  # a bias is one group
