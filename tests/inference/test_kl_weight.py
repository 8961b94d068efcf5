"""KL warm-up and tempering: the weight of each window's KL, its bookkeeping and its checks."""

import json
import math
from fractions import Fraction

import pyro
import pytest
import torch

from bayesrnn.inference import MeanFieldGuide, TBPTTTrainer, TrainerConfig
from bayesrnn.inference.training.kl_weight import (
    TEMPERED_LABEL,
    kl_warmup_weight,
    posterior_label,
    weighted_kl_scales,
)
from bayesrnn.models import GaussianPrior, LanguageModel


def test_warmup_weights_by_hand():
    # E = 2 warm-up epochs of C = 3 windows: 1/6, 2/6, …, 6/6, then 1
    weights = [kl_warmup_weight(e, i, 3, 2) for e in range(3) for i in range(3)]
    assert weights == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1, 1, 1], abs=1e-15)
    assert weights[5] == 1.0 and weights[6:] == [1.0] * 3  # exactly the ELBO afterwards
    assert sum(weights[:6]) == pytest.approx(21 / 6)
    # no warm-up: always 1; epochs of unequal length (variable BPTT) use their own C
    assert {kl_warmup_weight(e, i, 5, 0) for e in range(2) for i in range(5)} == {1.0}
    assert kl_warmup_weight(1, 1, 4, 3) == pytest.approx((1 + 2 / 4) / 3)


def test_kl_every_carrier_windows_take_their_runs_mean_weight():
    split = [float(s) for s in (Fraction(2, 5), 0, Fraction(2, 5), 0, Fraction(1, 5))]
    weights = [0.2, 0.4, 0.6, 0.8, 1.0]
    scaled = weighted_kl_scales(split, weights)
    assert scaled == pytest.approx([0.4 * 0.3, 0, 0.4 * 0.7, 0, 0.2 * 1.0])
    every_window = weighted_kl_scales([0.2] * 5, weights)
    assert sum(scaled) == pytest.approx(sum(every_window)) == pytest.approx(0.6)


def _closed_form_kl(guide, prior_scale):
    total = 0.0
    for site in guide.site_names:
        mu, sigma = guide.loc[site].detach().double(), guide.scale(site).detach().double()
        var = prior_scale**2
        terms = math.log(prior_scale) - sigma.log() + (sigma**2 + mu**2) / (2 * var) - 0.5
        total += float(terms.sum())
    return total


def _trainer(tmp_path=None, **overrides):
    pyro.clear_param_store()
    torch.manual_seed(3)
    lm = LanguageModel(7, 4, 4, num_layers=1, prior=GaussianPrior(0.5))
    guide = MeanFieldGuide(lm, init_scale=0.1)
    stream = torch.arange(4 * 36) % 7  # 4 columns of 36: 5 windows of 7 steps
    base = dict(batch_size=4, bptt=7, epochs=3, lr=1e-12, progress=False, kl_warmup_epochs=2)
    config = TrainerConfig(**(base | overrides))
    path = None if tmp_path is None else tmp_path / "ckpt.pt"
    return TBPTTTrainer(lm, guide, stream, config=config, checkpoint_path=path)


def test_the_trainer_ramps_the_kl_and_trains_the_elbo_after_the_warmup():
    trainer = _trainer(kl_every=2)
    seen = []
    step = trainer._step

    def spy(batch, scale, epoch, index):
        seen.append(scale)
        return step(batch, scale, epoch, index)

    trainer._step = spy
    history = trainer.fit()
    c = 5
    ramp = [(k + 1) / (2 * c) for k in range(2 * c)] + [1.0] * c
    assert history.kl_weight == pytest.approx(ramp, abs=1e-15)
    assert history.kl_weight[-c:] == [1.0] * c  # the last epoch's objective is the ELBO
    # kl_every=2: windows 0, 2, 4 carry 2/5, 2/5, 1/5 of the KL at their runs' mean weight
    expected = []
    for epoch in range(3):
        w = ramp[epoch * c : (epoch + 1) * c]
        expected += [0.4 * (w[0] + w[1]) / 2, 0, 0.4 * (w[2] + w[3]) / 2, 0, 0.2 * w[4]]
    assert seen == pytest.approx(expected, abs=1e-15)
    assert seen[-c:] == pytest.approx([0.4, 0, 0.4, 0, 0.2], abs=1e-15)
    # lr 1e-12: nothing moves, so the recorded KL share is the unweighted closed form / C
    kl = _closed_form_kl(trainer.guide, 0.5)
    assert history.kl == pytest.approx([kl / c] * (3 * c), rel=1e-4)
    assert history.elbo == pytest.approx(
        [-(n + k) for n, k in zip(history.nll, history.kl, strict=True)]
    )


def test_kl_weight_tempers_every_window():
    trainer = _trainer(kl_warmup_epochs=0, epochs=1, kl_weight=0.25)
    seen = []
    step = trainer._step
    trainer._step = lambda batch, scale, *rest: seen.append(scale) or step(batch, scale, *rest)
    history = trainer.fit()
    assert seen == pytest.approx([0.25 / 5] * 5) and history.kl_weight == [0.25] * 5
    assert history.kl == pytest.approx([_closed_form_kl(trainer.guide, 0.5) / 5] * 5, rel=1e-4)
    assert posterior_label(0.25).startswith(TEMPERED_LABEL) and "0.25" in posterior_label(0.25)
    assert posterior_label(1.0) is None


def test_a_resumed_warmup_continues_the_ramp_exactly(tmp_path):
    full = _trainer(tmp_path / "a", lr=0.05, checkpoint_every=1, variable_bptt=True)
    (tmp_path / "a").mkdir()
    expected = full.fit()
    (tmp_path / "b").mkdir()
    _trainer(tmp_path / "b", lr=0.05, checkpoint_every=1, variable_bptt=True, max_windows=7).fit()
    resumed = _trainer(tmp_path / "b", lr=0.05, checkpoint_every=1, variable_bptt=True)
    history = resumed.fit(resume=True)
    assert history.kl_weight == expected.kl_weight and history.elbo == expected.elbo
    assert history.kl_weight[-1] == 1.0 and history.kl_weight[0] < 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kl_warmup_epochs": -1}, "kl_warmup_epochs must be an integer >= 0"),
        ({"kl_warmup_epochs": True}, "kl_warmup_epochs must be an integer >= 0"),
        ({"kl_warmup_epochs": 1.5}, "kl_warmup_epochs must be an integer >= 0"),
        ({"kl_warmup_epochs": 3, "epochs": 3}, r"must be below epochs \(3\)"),
        ({"kl_weight": 0}, "kl_weight must be a positive finite number"),
        ({"kl_weight": -0.5}, "kl_weight must be a positive finite number"),
        ({"kl_weight": True}, "kl_weight must be a positive finite number"),
        ({"kl_weight": float("inf")}, "kl_weight must be a positive finite number"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        TrainerConfig(**overrides)
    assert "\n" not in str(error.value)


def test_a_tempered_run_is_labelled_in_metrics_summary_and_export(tmp_path, capsys):
    pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")
    xr = pytest.importorskip("xarray")
    from bayesrnn.app.cli import main

    out = tmp_path / "run"
    argv = ["run", "--out", str(out), "--quiet", "--task", "forecast", "--epochs", "2"]
    argv += ["--set", "trainer.kl_weight=0.5", "--set", "trainer.kl_warmup_epochs=1"]
    argv += ["--samples", "2", "--set", "evaluation.export_samples=2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    label = f"{TEMPERED_LABEL} (trainer.kl_weight = 0.5)"
    assert json.loads((out / "metrics.json").read_text())["posterior"] == label
    assert f"posterior: {label}" in printed
    history = json.loads((out / "history.json").read_text())
    steps = history["epoch_steps"][0]
    assert history["kl_weight"] == pytest.approx(
        [0.5 * (i + 1) / steps for i in range(steps)] + [0.5] * steps
    )
    with xr.open_datatree(out / "posterior.nc") as tree:
        assert tree.attrs["posterior"] == label
        assert tree["posterior"].attrs["posterior"] == label
