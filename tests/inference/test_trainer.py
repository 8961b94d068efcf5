"""TBPTT trainer: windows, KL split over an epoch, state carry, resume, failures, autoguides."""

import logging
import math
from fractions import Fraction

import pyro
import pytest
import torch
from pyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal

import bayesrnn.inference.training.trainer_checkpoint as trainer_module
from bayesrnn.inference import (
    DeterministicGuide,
    DivergenceError,
    GalDropoutGuide,
    MeanFieldGuide,
    NonFiniteLossError,
    SharpenedGuide,
    TBPTTTrainer,
    TrainerConfig,
    epoch_kl_scales,
    evaluate_stream,
    plan_windows,
    window_batch,
)
from bayesrnn.models import LanguageModel

STREAM = torch.arange(1200) % 7  # a learnable cycle over 7 token ids


def _lm(vocab=7, hidden=8, **kwargs):
    return LanguageModel(vocab, hidden, hidden, num_layers=1, **kwargs)


def _config(**overrides):
    base = dict(batch_size=4, bptt=10, epochs=1, lr=0.5, progress=False, seed=3)
    return TrainerConfig(**(base | overrides))


def test_epoch_scales_sum_to_exactly_one():
    assert sum(epoch_kl_scales(29), Fraction(0)) == 1


@pytest.mark.parametrize("variable", [False, True])
def test_windows_tile_the_stream_once(variable):
    windows = plan_windows(300, 35, variable=variable, generator=torch.Generator().manual_seed(0))
    covered = [step for w in windows for step in range(w.start, w.start + w.length)]
    assert covered == list(range(299))  # every step with a target, exactly once, in order
    if variable:
        assert len({w.length for w in windows}) > 2


@pytest.mark.parametrize("variable", [False, True])
def test_one_epoch_adds_up_to_exactly_one_kl(variable):
    """With the weights frozen, Σ over the epoch's windows of the logged KL is the full KL."""
    model = _lm()
    guide = GalDropoutGuide(model, hidden=0.3, input=0.2)  # a deterministic KL given M
    trainer = TBPTTTrainer(model, guide, STREAM, config=_config(lr=1e-30, variable_bptt=variable))
    history = trainer.fit()
    full_kl = float(guide.kl_divergence().detach())
    windows = len(history.kl)
    assert windows == len(
        plan_windows(300, 10, variable=variable, generator=torch.Generator().manual_seed(3))
    )
    assert sum(history.kl) == pytest.approx(full_kl, rel=1e-5)
    assert history.kl[0] == pytest.approx(full_kl / windows, rel=1e-5)


def test_state_is_carried_detached_and_reset_each_epoch():
    model = _lm()
    guide = MeanFieldGuide(model)
    seen = []
    original = model.forward

    def spy(tokens, targets=None, state=None):
        seen.append(None if state is None else state[0].requires_grad)
        return original(tokens, targets, state)

    model.forward = spy
    trainer = TBPTTTrainer(model, guide, STREAM[:250], config=_config(epochs=2, bptt=20))
    trainer.fit()
    per_epoch = len(plan_windows(62, 20))
    # each window calls the model once (the guide does not run it); epochs start from None
    assert len(seen) == 2 * per_epoch
    assert seen[0] is None and seen[per_epoch] is None
    assert seen[1] is False and seen[per_epoch + 1] is False  # carried, graph cut


def test_training_lowers_the_validation_perplexity():
    model = _lm(hidden=16)
    guide = MeanFieldGuide(model, init_scale=0.01)
    trainer = TBPTTTrainer(model, guide, STREAM, STREAM[:300], config=_config(epochs=2, lr=1.0))
    before = trainer.evaluate(STREAM[:300]).perplexity
    history = trainer.fit()
    assert before > 5.0  # untrained: close to uniform over 7 tokens
    assert history.valid_perplexity[-1] < 1.5  # a deterministic cycle is nearly predictable


@pytest.mark.parametrize("guide_cls", [AutoNormal, AutoLowRankMultivariateNormal])
def test_stock_autoguides_train_with_the_same_trainer(guide_cls):
    model = _lm(vocab=7, hidden=6)
    guide = guide_cls(model, init_scale=0.01)
    config = _config(epochs=3, optimizer="adam", lr=0.03)
    trainer = TBPTTTrainer(model, guide, STREAM[:600], STREAM[:200], config=config)
    history = trainer.fit()
    assert history.valid_perplexity[-1] < 0.6 * 7  # uniform guessing scores 7
    assert all(k > 0 for k in history.kl)


def _fresh(tmp_path, **overrides):
    pyro.clear_param_store()
    torch.manual_seed(11)
    model = _lm()
    guide = MeanFieldGuide(model)
    config = _config(epochs=2, checkpoint_every=1, variable_bptt=True, **overrides)
    return TBPTTTrainer(
        model,
        guide,
        STREAM[:400],
        STREAM[:100],
        config=config,
        checkpoint_path=tmp_path / "ckpt.pt",
    )


CYCLE = torch.arange(600) % 12  # a deterministic 12-token cycle


def _twins():
    """A time-major and a batch-first LM with identical weights, each with its guide."""
    torch.manual_seed(0)
    time_major = _lm(vocab=12, hidden=8)
    batch_first = _lm(vocab=12, hidden=8, batch_first=True)
    batch_first.load_state_dict(time_major.state_dict())
    guide = MeanFieldGuide(time_major, init_scale=0.01)
    guide_bf = MeanFieldGuide(batch_first, init_scale=0.01)
    guide_bf.load_state_dict(guide.state_dict())
    return (time_major, guide), (batch_first, guide_bf)


def test_window_batch_in_batch_first_layout_is_the_transpose():
    data = torch.arange(30).reshape(10, 3)  # (steps, B)
    window = plan_windows(10, 4)[-1]  # the shorter last window: steps 8..9
    assert window.length == 1
    inputs, targets = window_batch(data, window, batch_first=True)
    assert inputs.tolist() == [[24], [25], [26]] and targets.tolist() == [[27], [28], [29]]


def test_a_batch_first_model_trains_exactly_as_the_time_major_one():
    """Same seed, same data, same weights: the layout must not change a single number."""
    # 600 tokens in 4 sequences: 150 steps, 149 with a target, so the last window has 9 steps.
    assert plan_windows(150, 10)[-1].length == 9
    runs = []
    for model, guide in _twins():
        trainer = TBPTTTrainer(model, guide, CYCLE, CYCLE[:300], config=_config(epochs=2))
        runs.append((trainer, trainer.fit()))
    (tm_trainer, tm), (bf_trainer, bf) = runs
    assert tm.tokens == bf.tokens and sum(tm.tokens) == 2 * 149 * 4
    assert bf.nll == pytest.approx(tm.nll, rel=1e-5)
    assert bf.kl == pytest.approx(tm.kl, rel=1e-5)
    assert bf.valid_perplexity == pytest.approx(tm.valid_perplexity, rel=1e-5)
    assert tm.valid_perplexity[-1] < 1.5  # the cycle was learned (uniform guessing scores 12)
    # Monte Carlo evaluation: the same draws under the same seed, whatever the layout.
    results = []
    for trainer in (tm_trainer, bf_trainer):
        torch.manual_seed(5)
        results.append(
            evaluate_stream(
                trainer.model, trainer.guide, CYCLE[:301], batch_size=3, bptt=7, num_samples=3
            )
        )
    assert results[1].tokens == results[0].tokens
    assert results[1].perplexity == pytest.approx(results[0].perplexity, rel=1e-5)


def test_a_batch_first_model_trains_and_scores_sharpened_as_the_time_major_one():
    """Posterior sharpening runs the model inside the guide, on the targets: same layout rule."""
    torch.manual_seed(0)
    time_major = _lm(vocab=12, hidden=8)
    batch_first = _lm(vocab=12, hidden=8, batch_first=True)
    batch_first.load_state_dict(time_major.state_dict())
    guide, guide_bf = SharpenedGuide(time_major), SharpenedGuide(batch_first)
    guide_bf.load_state_dict(guide.state_dict())
    results = []
    for model, g in ((time_major, guide), (batch_first, guide_bf)):
        history = TBPTTTrainer(model, g, CYCLE[:300], config=_config(max_windows=4)).fit()
        bound = evaluate_stream(model, g, CYCLE[:301], batch_size=3, bptt=7, sharpened=True)
        results.append((history, bound))
    (tm, tm_bound), (bf, bf_bound) = results
    assert bf.nll == pytest.approx(tm.nll, rel=1e-5) and len(tm.nll) == 4
    assert bf.sharpening_step_ratio == pytest.approx(tm.sharpening_step_ratio, rel=1e-4)
    assert bf_bound.perplexity == pytest.approx(tm_bound.perplexity, rel=1e-5)


def test_resume_gives_the_same_numbers_as_an_uninterrupted_run(tmp_path):
    full = _fresh(tmp_path / "a")
    expected = full.fit()
    interrupted = _fresh(tmp_path / "b", max_windows=13)  # stops mid second epoch
    interrupted.fit()
    resumed = _fresh(tmp_path / "b")
    history = resumed.fit(resume=True)
    assert history.elbo == expected.elbo
    assert history.valid_perplexity == expected.valid_perplexity
    for (name, a), (_, b) in zip(
        full.guide.named_parameters(), resumed.guide.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_non_finite_loss_names_epoch_and_window_and_keeps_the_checkpoint(tmp_path):
    trainer = _fresh(tmp_path, max_windows=3)
    trainer.fit()
    checkpoint = (tmp_path / "ckpt.pt").read_bytes()
    broken = _fresh(tmp_path)
    original = broken._restore

    def restore_then_poison(payload):
        original(payload)
        with torch.no_grad():
            broken.guide.loc["rnn.weight_hh_l0"].fill_(float("nan"))

    broken._restore = restore_then_poison
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, window 4"):
        broken.fit(resume=True)
    assert (tmp_path / "ckpt.pt").read_bytes() == checkpoint


CEILING_7 = 10 * math.log(7)  # the default ceiling for 7 tokens: 10 × a uniform guess's NLL


def test_a_finite_divergence_stops_naming_epoch_and_window_and_keeps_the_checkpoint(tmp_path):
    """Adam at lr 1e6 (the issue's case): finite NLLs of ~1e6 nats per token, then no crash."""
    _fresh(tmp_path, max_windows=3, optimizer="adam", lr=0.01).fit()
    checkpoint = (tmp_path / "ckpt.pt").read_bytes()
    wild = _fresh(tmp_path, optimizer="adam", lr=1e6)  # checkpoint_every=1
    # Window 4 scores the good weights and its step blows them up; windows 5 to 9 are the five
    # in a row above the ceiling. The state after window 4 was never vouched for: not written.
    with pytest.raises(DivergenceError, match=r"at epoch 1, window 9: .* nats per token") as error:
        wild.fit(resume=True)
    assert "last good checkpoint is left intact" in str(error.value)
    assert isinstance(error.value, NonFiniteLossError)
    per_token = [n / t for n, t in zip(wild.history.nll, wild.history.tokens, strict=True)]
    assert len(per_token) == 8 and max(per_token[:4]) < CEILING_7 < min(per_token[4:])
    assert all(math.isfinite(v) for v in per_token)  # a finite divergence, not a NaN
    assert (tmp_path / "ckpt.pt").read_bytes() == checkpoint


@pytest.mark.parametrize("patience", [1, 3])
def test_patience_counts_the_windows_in_a_row_above_the_ceiling(tmp_path, patience):
    _fresh(tmp_path, max_windows=3).fit()
    checkpoint = (tmp_path / "ckpt.pt").read_bytes()
    broken = _fresh(tmp_path, divergence_patience=patience)
    original = broken._restore

    def restore_then_blow_up(payload):
        original(payload)
        with torch.no_grad():  # logits in the thousands: a large but finite NLL
            broken.guide.loc["decoder.weight"].mul_(1e4)

    broken._restore = restore_then_blow_up
    with pytest.raises(DivergenceError, match=rf"epoch 1, window {3 + patience}: "):
        broken.fit(resume=True)
    assert len(broken.history.nll) == 3 + patience - 1
    assert (tmp_path / "ckpt.pt").read_bytes() == checkpoint


def test_checkpoints_are_written_once_the_next_window_has_scored_their_weights(tmp_path):
    trainer = _fresh(tmp_path, max_windows=5)  # checkpoint_every=1
    steps, writes = [], []
    step, save = trainer._step, trainer_module.save_checkpoint

    def counting_step(*args):
        steps.append(1)
        return step(*args)

    def spy(path, payload):
        writes.append((len(steps), payload["position"]))
        return save(path, payload)

    trainer._step = counting_step
    trainer_module.save_checkpoint = spy
    try:
        trainer.fit()
    finally:
        trainer_module.save_checkpoint = save
    # the state after window k is written during window k + 1; the last one when fit returns
    assert writes == [(2, [0, 1]), (3, [0, 2]), (4, [0, 3]), (5, [0, 4]), (5, [0, 5])]
    assert trainer_module.load_checkpoint(tmp_path / "ckpt.pt")["position"] == [0, 5]


def test_without_a_ceiling_a_diverged_run_reports_an_infinite_perplexity():
    model = _lm()
    guide = MeanFieldGuide(model)
    config = _config(optimizer="adam", lr=1e6, divergence_factor=None)
    history = TBPTTTrainer(model, guide, STREAM[:400], STREAM[:100], config=config).fit()
    assert history.valid_perplexity == [math.inf]  # was OverflowError: math range error
    assert min(n / t for n, t in zip(history.nll[1:], history.tokens[1:], strict=True)) > 1e3


def test_bad_inputs():
    model = _lm()
    guide = MeanFieldGuide(model)
    with pytest.raises(ValueError, match="longer than the data"):
        TBPTTTrainer(model, guide, STREAM[:40], config=_config(bptt=20))
    with pytest.raises(ValueError, match="outside"):
        TBPTTTrainer(model, guide, torch.tensor([0, 1, 9] * 50), config=_config())
    with pytest.raises(ValueError, match="unknown trainer option"):
        TBPTTTrainer(model, guide, STREAM, config=_config(), learning_rate=1.0)
    with pytest.raises(ValueError, match="optimizer"):
        _config(optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr_decay"):
        _config(lr_decay=0.5)
    for factor in (0.0, -1.0, math.inf, math.nan, "10"):
        with pytest.raises(ValueError, match="divergence_factor"):
            _config(divergence_factor=factor)
    with pytest.raises(ValueError, match="divergence_patience"):
        _config(divergence_patience=0)
    assert _config(divergence_factor=None).divergence_factor is None


def test_learning_rate_schedule_is_zaremba_style():
    config = _config(lr=1.0, lr_decay=2.0, constant_epochs=4)
    assert [config.learning_rate(e) for e in range(6)] == [1, 1, 1, 1, 0.5, 0.25]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_trains_on_cuda():
    model = _lm()
    guide = MeanFieldGuide(model)
    history = TBPTTTrainer(model, guide, STREAM, STREAM[:200], config=_config(device="cuda")).fit()
    assert history.valid_perplexity[-1] > 0


def test_a_log_file_gets_one_line_per_epoch_and_no_progress_bar(capsys, caplog):
    """stderr is not a terminal under pytest: no tqdm frames; one INFO record per epoch, and one
    with its validation, from the trainer's logger (the library itself prints nothing)."""
    pyro.set_rng_seed(0)
    model = LanguageModel(12, 8, 8, 1, prior=None)
    stream = torch.arange(12).repeat(60)
    trainer = TBPTTTrainer(
        model, DeterministicGuide(model), stream[:600], stream[600:],
        batch_size=4, bptt=10, epochs=2, progress=True,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="bayesrnn"):
        trainer.fit()
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err
    assert "epoch" not in err  # no handler of the library's own: logging decides
    records = [r for r in caplog.records if r.name.startswith("bayesrnn.")]
    assert {(r.name, r.levelno) for r in records} == {
        ("bayesrnn.inference.training.trainer", logging.INFO)
    }
    lines = [r.getMessage() for r in records]
    assert [line.split(":")[0] for line in lines] == [
        "epoch 1/2",
        "epoch 1",
        "epoch 2/2",
        "epoch 2",
    ]
    assert "train NLL" in lines[0] and "valid perplexity" in lines[1]
