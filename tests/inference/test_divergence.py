"""DivergenceGuard: non-finite at once, a finite NLL above the ceiling after `patience` updates."""

import math

import pytest
import torch

from bayesrnn.inference import DivergenceError, DivergenceGuard, NonFiniteLossError
from bayesrnn.inference.divergence import uniform_ceiling


def test_the_ceiling_is_a_multiple_of_the_uniform_predictors_nll():
    assert uniform_ceiling(10_000, 10.0) == pytest.approx(92.1034037, rel=1e-9)  # 10 ln 10⁴
    assert DivergenceGuard.uniform(2, factor=3.0).ceiling == pytest.approx(3 * 0.6931471806)
    assert uniform_ceiling(12, None) is None  # disabled
    assert uniform_ceiling(1, 10.0) is None  # one outcome: every predictor scores 0 nats


def test_patience_counts_consecutive_updates_above_the_ceiling():
    guard = DivergenceGuard(ceiling=20.0, patience=3, unit="token", steps="windows")
    for value in (25.0, 1e6, 5.0, 21.0, 20.0, 30.0, 30.0):  # never three in a row above 20
        guard.update(value, "somewhere")
    assert guard.streak == 2 and guard.suspect
    with pytest.raises(DivergenceError) as caught:
        guard.update(5.9e6, "epoch 2, window 7")
    message = str(caught.value)
    assert "epoch 2, window 7" in message and "5.9e+06 nats per token" in message
    assert "3 consecutive windows" in message and "last good checkpoint is left intact" in message
    assert isinstance(caught.value, NonFiniteLossError)  # callers that catch it still do


def test_a_value_at_or_below_the_ceiling_resets_the_count():
    guard = DivergenceGuard(ceiling=20.0, patience=2)
    guard.update(21.0, "a")
    guard.update(19.0, "b")
    assert guard.streak == 0 and not guard.suspect
    guard.update(21.0, "c")  # one above again: not yet two in a row
    assert guard.streak == 1


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("ceiling", [None, 50.0])
def test_a_non_finite_nll_stops_at_once_even_without_a_ceiling(value, ceiling):
    guard = DivergenceGuard(ceiling=ceiling, patience=5)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at epoch 1, window 2;") as e:
        guard.update(value, "epoch 1, window 2")
    assert not isinstance(e.value, DivergenceError)


def test_without_a_ceiling_any_finite_value_passes():
    guard = DivergenceGuard(ceiling=None, patience=1)
    guard.update(1e300, "x")
    assert guard.streak == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ceiling": 0.0}, "ceiling"),
        ({"ceiling": math.inf}, "ceiling"),
        ({"ceiling": -1.0}, "ceiling"),
        ({"patience": 0}, "patience"),
        ({"patience": 2.5}, "patience"),
        ({"patience": True}, "patience"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DivergenceGuard(**kwargs)


@pytest.mark.parametrize("factor", [0.0, -1.0, math.nan, math.inf, True])
def test_bad_factors_are_refused(factor):
    with pytest.raises(ValueError, match="factor"):
        uniform_ceiling(10, factor)


def test_a_forecaster_blowing_up_on_a_real_series_stops():
    """Real values: the ceiling is factor × ½log(2πe), the NLL of N(0, 1) on standardised data."""
    from bayesrnn.inference import DivergenceError, TBPTTTrainer, make_guide
    from bayesrnn.models import SequenceRegressor

    torch.manual_seed(0)
    series = torch.sin(torch.arange(400.0) / 4).unsqueeze(1)
    model = SequenceRegressor(1, 8, prior=None)
    with torch.no_grad():  # a confident, wrong head: tiny scales far from the values
        model.decoder.weight.mul_(1e3)
        model.decoder.bias.fill_(-50.0)
    trainer = TBPTTTrainer(
        model, make_guide("none", model), series, None,
        batch_size=4, bptt=10, lr=1e-9, divergence_patience=2, progress=False,
    )  # fmt: skip
    assert trainer.guard.ceiling == pytest.approx(10 * 0.5 * math.log(2 * math.pi * math.e))
    with pytest.raises(DivergenceError, match=r"epoch 1, window 2"):
        trainer.fit()
