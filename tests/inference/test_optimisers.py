"""A caller's torch optimiser and LR scheduler drive the trainer; checkpoints carry their state."""

import functools
import math

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR

from bayesrnn.inference import (
    DeterministicGuide,
    SequenceBatches,
    SVITrainer,
    TBPTTTrainer,
    TrainerConfig,
)
from bayesrnn.inference.training.optimisers import build_optimizer
from bayesrnn.models import LanguageModel

SEQUENCES = [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([0, 1, 1]), torch.tensor([2])]
TARGETS = torch.tensor([1.0, -0.5, 2.0, 0.25])


class Line(torch.nn.Module):
    """y ~ N(w0 · Σ tokens + w1, 1): a loss whose gradient is easy to write down."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -0.3]))

    def forward(self, tokens, labels, lengths):
        loc = self.w[0] * tokens.float().sum(0) + self.w[1]
        pyro.sample("y", dist.Normal(loc, 1.0).to_event(1), obs=labels)


def no_latents(*args, **kwargs) -> None:
    """A guide for a model without latent sites."""


def line_trainer(*, checkpoint_path=None, validate=None, **options) -> SVITrainer:
    settings = {"batch_size": 4, "epochs": 2, "clip_norm": None, "progress": False, "seed": 1}
    spec = {k: options.pop(k) for k in ("optimizer", "scheduler") if k in options}
    return SVITrainer(
        Line(),
        no_latents,
        SequenceBatches(SEQUENCES, TARGETS, batch_size=4),  # one step per epoch
        TrainerConfig(**(settings | options)),
        checkpoint_path=checkpoint_path,
        validate=validate,
        **spec,
    )


def test_a_step_of_the_callers_sgd_is_the_hand_computed_one():
    trainer = line_trainer(
        epochs=1, optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    )
    x = torch.tensor([3.0, 3.0, 2.0, 2.0])  # Σ tokens of each (zero-padded) sequence
    w = trainer.model.w.detach().clone()
    residual = TARGETS - (w[0] * x + w[1])
    grad = -torch.stack([(residual * x).sum(), residual.sum()]) / 4  # the loss is the batch mean
    trainer.fit()
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    # first step of momentum SGD: the buffer is the gradient itself
    torch.testing.assert_close(trainer.model.w.detach(), w - 0.1 * grad)
    assert trainer.history.nll[0] == pytest.approx(
        float(0.5 * (residual**2).sum() + 2 * math.log(2 * math.pi))
    )


def test_step_lr_halves_the_rate_each_epoch():
    trainer = line_trainer(
        optimizer=functools.partial(torch.optim.SGD, lr=1.0),
        scheduler=functools.partial(StepLR, step_size=1, gamma=0.5),
        lr=0.01,  # the config's rate is not the caller's optimiser's
    )
    history = trainer.fit()
    assert history.epoch_lr == [1.0, 0.5]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.25)  # lr / 4 after 2


def test_a_class_a_pyro_optimiser_and_a_pyro_scheduler():
    trainer = line_trainer(epochs=1, optimizer=torch.optim.AdamW)
    trainer.fit()
    assert type(trainer.optimizer) is torch.optim.AdamW
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3  # AdamW's default, not config.lr

    trainer = line_trainer(epochs=1, optimizer=pyro.optim.Adam({"lr": 0.02}))
    trainer.fit()
    assert type(trainer.optimizer) is torch.optim.Adam
    assert trainer.optimizer.param_groups[0]["lr"] == 0.02
    assert trainer.scheduler is None

    pyro_step = pyro.optim.StepLR(
        {"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "step_size": 1, "gamma": 0.5}
    )
    trainer = line_trainer(epochs=3, optimizer=pyro_step)
    assert trainer.fit().epoch_lr == [1.0, 0.5, 0.25]
    assert isinstance(trainer.scheduler, StepLR)


def test_reduce_on_plateau_gets_the_validation_metric():
    scores = iter([3.0, 3.0, 3.0, 2.0])
    trainer = line_trainer(
        epochs=4,
        optimizer=functools.partial(torch.optim.SGD, lr=1.0),
        scheduler=functools.partial(ReduceLROnPlateau, factor=0.5, patience=0),
        validate=lambda: {"valid_nll": next(scores)},
    )
    assert trainer.fit().epoch_lr == [1.0, 1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="ReduceLROnPlateau needs a validation metric"):
        line_trainer(scheduler=ReduceLROnPlateau).fit()


def test_resume_restores_the_scheduler_and_matches_an_uninterrupted_run(tmp_path):
    def trainer(epochs, path):
        return line_trainer(
            epochs=epochs,
            checkpoint_path=path,
            optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.5),
            scheduler=functools.partial(StepLR, step_size=2, gamma=0.5),
        )

    whole = trainer(4, tmp_path / "whole.pt")
    whole.fit()
    first = trainer(3, tmp_path / "ckpt.pt")
    first.fit()
    assert first.scheduler.last_epoch == 3
    resumed = trainer(4, tmp_path / "ckpt.pt")
    resumed.fit(resume=True)
    assert resumed.scheduler.last_epoch == 4  # counted on from 3, not from 0
    assert resumed.history.epoch_lr == whole.history.epoch_lr == [0.1, 0.1, 0.05, 0.05]
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    torch.testing.assert_close(resumed.model.w, whole.model.w)


def test_the_tbptt_trainer_takes_them_too():
    model = LanguageModel(5, 4, 4, 1, prior=None)
    trainer = TBPTTTrainer(
        model,
        DeterministicGuide(model),
        torch.arange(200) % 5,
        batch_size=2,
        bptt=10,
        epochs=2,
        progress=False,
        optimizer=functools.partial(torch.optim.SGD, lr=0.3),
        scheduler=functools.partial(StepLR, step_size=1, gamma=0.1),
    )
    assert trainer.fit().epoch_lr == pytest.approx([0.3, 0.03])


def test_bad_optimisers_and_schedulers_are_clear_errors():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="already built SGD; pass the optimiser class"):
        line_trainer(optimizer=torch.optim.SGD([w], lr=1.0))
    with pytest.raises(ValueError, match="already built StepLR"):
        line_trainer(scheduler=StepLR(torch.optim.SGD([w], lr=1.0), 1))
    with pytest.raises(ValueError, match="optimizer must be None"):
        line_trainer(optimizer="adamw")
    with pytest.raises(ValueError, match="scheduler must be None"):
        line_trainer(scheduler=3)
    with pytest.raises(ValueError, match="leave lr_decay at 1"):
        line_trainer(optimizer=torch.optim.SGD, lr_decay=2.0)
    with pytest.raises(ValueError, match="per-parameter arguments"):
        line_trainer(optimizer=pyro.optim.Adam(lambda module, name: {"lr": 0.1}))
    with pytest.raises(ValueError, match="clip_args"):
        line_trainer(optimizer=pyro.optim.Adam({"lr": 0.1}, {"clip_norm": 1.0}))
    with pytest.raises(ValueError, match=r"not a torch\.optim\.Optimizer"):
        build_optimizer(lambda params: "sgd", [w], TrainerConfig())
    with pytest.raises(ValueError, match="no step"):
        line_trainer(scheduler=lambda optimizer: 0.5).fit()
