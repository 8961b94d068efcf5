"""Early stopping: patience epochs without validation improvement stop training; the best
epoch's parameters are kept (in memory and in checkpoint.best.pt) and restored at the end."""

import functools
import math

import pytest
import torch

from bayesrnn.inference import EarlyStopping, TrainerConfig, load_checkpoint
from bayesrnn.inference.training.early_stopping import best_checkpoint_path, monitored_metric
from tests.inference.test_optimisers import line_trainer

SCORES = [5.0, 4.0, 3.0, 3.5, 3.2, 2.0, 1.0, 0.5]  # best at epoch 3, then two worse ones


def scripted(trainer_box: list, seen: list, scores=SCORES):
    """A validation that reports the next score and notes the parameters it scored."""
    values = iter(scores)

    def validate() -> dict[str, float]:
        seen.append(trainer_box[0].model.w.detach().clone())
        return {"valid_nll": next(values)}

    return validate


def _trainer(tmp_path, seen, **options):
    box: list = []
    trainer = line_trainer(
        epochs=8,
        checkpoint_path=tmp_path / "checkpoint.pt",
        validate=scripted(box, seen),
        early_stopping_patience=2,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05),
        **options,
    )
    box.append(trainer)
    return trainer


def test_stops_patience_epochs_after_the_best_and_restores_it(tmp_path, caplog):
    seen: list = []
    trainer = _trainer(tmp_path, seen)
    with caplog.at_level("INFO", logger="bayesrnn"):
        history = trainer.fit()
    assert len(history.epoch_lr) == len(seen) == 5  # epoch k = 3, stopped at k + patience
    assert (history.best_epoch, history.best_valid, history.stopped_epoch) == (3, 3.0, 5)
    assert history.stop_reason == (
        "early stopping: valid_nll did not improve for 2 epoch(s) after epoch 3"
    )
    assert not torch.equal(seen[2], seen[4])  # training moved the parameters on
    torch.testing.assert_close(trainer.model.w.detach(), seen[2])  # epoch 3's, restored
    best = load_checkpoint(best_checkpoint_path(tmp_path / "checkpoint.pt"))
    torch.testing.assert_close(best["model"]["w"], seen[2])
    final = load_checkpoint(tmp_path / "checkpoint.pt")  # final position, best parameters
    torch.testing.assert_close(final["model"]["w"], seen[2])
    assert final["history"]["stop_reason"] == history.stop_reason
    assert [t for t in tmp_path.iterdir() if t.name.endswith(".tmp")] == []
    messages = [r.getMessage() for r in caplog.records]
    assert "epoch 5: " + history.stop_reason in messages
    assert "restored the best parameters, epoch 3's" in messages


def test_a_resumed_stopped_run_trains_no_further(tmp_path):
    seen: list = []
    _trainer(tmp_path, seen).fit()
    again: list = []
    resumed = _trainer(tmp_path, again)
    history = resumed.fit(resume=True)
    assert again == []  # no epoch run, no validation
    assert history.stopped_epoch == 5 and history.best_epoch == 3
    torch.testing.assert_close(resumed.model.w.detach(), seen[2])


def test_a_resume_mid_run_keeps_counting_and_finds_the_best_file(tmp_path):
    seen: list = []
    box: list = []
    first = line_trainer(
        epochs=4,  # stops by running out of epochs, one bad epoch counted
        checkpoint_path=tmp_path / "checkpoint.pt",
        validate=scripted(box, seen),
        early_stopping_patience=2,
    )
    box.append(first)
    first.fit()
    assert first.history.stopped_epoch is None and first.early.bad_epochs == 1
    torch.testing.assert_close(first.model.w.detach(), seen[2])  # restored at the end anyway
    later: list = []
    box2: list = []
    resumed = line_trainer(
        epochs=8,
        checkpoint_path=tmp_path / "checkpoint.pt",
        validate=scripted(box2, later, scores=[3.2, 9.0]),
        early_stopping_patience=2,
    )
    box2.append(resumed)
    history = resumed.fit(resume=True)
    assert len(later) == 1 and history.stopped_epoch == 5  # one more bad epoch was enough
    torch.testing.assert_close(resumed.model.w.detach(), seen[2])


def test_without_patience_the_best_epoch_is_noted_but_nothing_stops(tmp_path):
    seen: list = []
    box: list = []
    path = tmp_path / "checkpoint.pt"
    trainer = line_trainer(epochs=8, validate=scripted(box, seen), checkpoint_path=path)
    box.append(trainer)
    history = trainer.fit()
    assert len(seen) == 8 and history.stop_reason is None
    assert history.best_epoch == 8 and not best_checkpoint_path(path).exists()


def test_accuracy_is_better_when_higher_and_nan_never_improves():
    stopper = EarlyStopping(1, monitor="valid_accuracy")
    assert stopper.update(0, {"valid_accuracy": 0.5, "valid_nll": 1.0}) == (True, False)
    assert stopper.update(1, {"valid_accuracy": 0.7, "valid_nll": 2.0}) == (True, False)
    assert stopper.update(2, {"valid_accuracy": 0.6, "valid_nll": 0.1}) == (False, True)
    nan = EarlyStopping(2, min_delta=0.5)
    assert nan.update(0, {"valid_perplexity": math.nan}) == (False, False)
    assert nan.update(1, {"valid_perplexity": 10.0}) == (True, False)
    assert nan.update(2, {"valid_perplexity": 9.7}) == (False, False)  # within min_delta
    assert monitored_metric({"valid_perplexity": 3.0, "valid_nll": 1.1}, None) == ("valid_nll", 1.1)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="early_stopping_patience must be None or a positive"):
        TrainerConfig(early_stopping_patience=0)
    with pytest.raises(ValueError, match="early_stopping_min_delta"):
        TrainerConfig(early_stopping_min_delta=-1.0)
    with pytest.raises(ValueError, match="monitor must be None or one of"):
        TrainerConfig(monitor="loss")
    with pytest.raises(ValueError, match="early stopping needs validation"):
        line_trainer(early_stopping_patience=2)
    with pytest.raises(ValueError, match="not among the validation results"):
        monitored_metric({"valid_nll": 1.0}, "valid_accuracy")
