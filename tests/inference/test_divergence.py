"""DivergenceGuard: non-finite at once, a finite NLL above the ceiling after `patience` updates."""

import math

import pytest
import torch

from bayesrnn.inference import DivergenceError, DivergenceGuard, NonFiniteLossError
from bayesrnn.inference.training.divergence import uniform_ceiling


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
    assert "3 consecutive windows" in message
    assert "before any checkpoint was written" in message  # the guard was given no file
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


def test_the_message_names_a_checkpoint_only_when_the_file_exists(tmp_path):
    path = tmp_path / "checkpoint.pt"
    guard = DivergenceGuard(ceiling=1.0, patience=1, checkpoint=path)
    with pytest.raises(DivergenceError) as missing:
        guard.update(2.0, "epoch 3, window 1")
    assert "checkpoint is left intact" not in str(missing.value)
    assert "before any checkpoint was written" in str(missing.value)
    path.write_bytes(b"weights")
    with pytest.raises(NonFiniteLossError) as present:
        guard.update(math.nan, "epoch 3, window 2")
    assert f"the last good checkpoint is left intact ({path})" in str(present.value)


def test_a_real_valued_ceiling_is_ten_times_what_n01_scores_on_the_window():
    from bayesrnn.inference.training.divergence import gaussian_ceiling_basis

    # values ±3: N(0, 1) scores ½log(2π) + 9/2 = 5.4189 nats on each
    assert gaussian_ceiling_basis(9.0 * 4, 4) == pytest.approx(0.9189385 + 4.5, rel=1e-6)
    # calm values never lower it below ½log(2πe) = 1.4189, N(0, 1)'s mean over the train split
    assert gaussian_ceiling_basis(0.0, 4) == pytest.approx(1.4189385, rel=1e-6)
    guard = DivergenceGuard(ceiling=14.19, patience=1)
    guard.update(20.0, "a", ceiling=54.19)  # a spiky window's own, higher ceiling
    assert guard.streak == 0


def test_a_deferred_verdict_waits_for_validation():
    guard = DivergenceGuard(ceiling=14.19, patience=2, unit="value", steps="windows", defer=True)
    for value in (30.0, 40.0, 50.0):
        guard.update(value, "epoch 3, window 4")  # no raise: the verdict waits
    assert guard.verdict is not None and guard.suspect
    assert guard.settle(1.06, "epoch 3") is True  # healthy validation: training goes on
    assert guard.verdict is None and guard.streak == 0 and not guard.suspect
    for value in (30.0, 40.0):
        guard.update(value, "epoch 4, window 2")
    with pytest.raises(DivergenceError, match=r"validation NLL 1000 at epoch 4 confirms it"):
        guard.settle(1e3, "epoch 4")
    assert DivergenceGuard(ceiling=10.0, defer=True).settle(9.0, "epoch 5") is False  # none due


@pytest.mark.parametrize("defer", [True, False])
def test_a_validation_above_the_ceiling_stops_without_a_streak(defer):
    """One window an epoch never builds a streak; a blown-up validation still stops the run."""
    guard = DivergenceGuard(ceiling=14.19, patience=5, unit="value", defer=defer)
    guard.update(3.0e14, "epoch 1, window 1")  # one update: no verdict yet
    assert guard.verdict is None
    with pytest.raises(DivergenceError, match=r"validation NLL 3.7e\+14 per value at epoch 2, abo"):
        guard.settle(3.7e14, "epoch 2")
    with pytest.raises(DivergenceError, match=r"validation NLL nan per value"):
        DivergenceGuard(defer=defer, unit="value").settle(float("nan"), "epoch 1")
    assert DivergenceGuard(ceiling=14.19, defer=defer).settle(14.19, "epoch 1") is False


def _spiky_series(rows: int = 240) -> torch.Tensor:
    """A smooth series with rare large jumps: a confident forecaster pays many nats on them."""
    t = torch.arange(float(rows))
    values = torch.sin(t / 6)
    values[::40] += 12.0
    return ((values - values.mean()) / values.std()).unsqueeze(1)


def test_spiky_training_windows_do_not_stop_a_run_whose_validation_is_healthy():
    from bayesrnn.inference import TBPTTTrainer, make_guide
    from bayesrnn.models import SequenceRegressor

    torch.manual_seed(0)
    series = _spiky_series()
    model = SequenceRegressor(1, 4, prior=None)
    with torch.no_grad():  # a confident head: scale softplus(−6) ≈ 0.0025 on every row
        model.decoder.weight.zero_()
        model.decoder.bias.copy_(torch.tensor([0.0, -6.0]))
    valid = torch.sin(torch.arange(40.0) / 6).unsqueeze(1) * 0.01  # what it predicts well
    trainer = TBPTTTrainer(
        model, make_guide("none", model), series, valid,
        batch_size=2, bptt=10, lr=1e-9, epochs=2, divergence_patience=1, progress=False,
    )  # fmt: skip
    per_window = []
    original = trainer.guard.update

    def spy(value, where, ceiling=None):
        per_window.append((value, ceiling))
        original(value, where, ceiling)

    trainer.guard.update = spy
    history = trainer.fit()
    assert max(v for v, _ in per_window) > 1e3  # windows far above any ceiling: the spikes
    assert len(history.valid_nll) == 2 and max(history.valid_nll) < trainer.guard.ceiling
    assert trainer.guard.verdict is None


def test_a_real_valued_run_whose_validation_also_blows_up_stops_at_the_epoch_end(tmp_path):
    from bayesrnn.inference import TBPTTTrainer, make_guide
    from bayesrnn.models import SequenceRegressor

    torch.manual_seed(0)
    series = torch.sin(torch.arange(200.0) / 4).unsqueeze(1)
    model = SequenceRegressor(1, 4, prior=None)
    with torch.no_grad():  # confident and wrong everywhere, validation included
        model.decoder.weight.zero_()
        model.decoder.bias.copy_(torch.tensor([-50.0, -6.0]))
    trainer = TBPTTTrainer(
        model, make_guide("none", model), series, series[:40],
        batch_size=2, bptt=10, lr=1e-9, epochs=3, divergence_patience=2, progress=False,
        checkpoint_path=tmp_path / "checkpoint.pt",
    )  # fmt: skip
    with pytest.raises(DivergenceError, match=r"validation NLL .* at epoch 1 confirms it") as e:
        trainer.fit()
    assert "before any checkpoint was written" in str(e.value)
    assert not (tmp_path / "checkpoint.pt").exists()
