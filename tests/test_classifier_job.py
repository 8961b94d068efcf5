"""The sentence-classification trainer of a run: divergence stops it with the checkpoint intact."""

import pytest
import torch

from bayesrnn.app.classifier_task import train_classifier
from bayesrnn.app.config_files import resolve_config
from bayesrnn.app.setup import Setup, build, quiet_log
from bayesrnn.data import ClassificationCorpus, ClassificationSplit, Vocabulary
from bayesrnn.inference.training.divergence import DivergenceError, NonFiniteLossError


def _split(count: int, seed: int) -> ClassificationSplit:
    generator = torch.Generator().manual_seed(seed)
    sequences = [
        torch.randint(
            2, 12, (int(torch.randint(2, 7, (), generator=generator)),), generator=generator
        )
        for _ in range(count)
    ]
    labels = torch.tensor([int(s[0]) % 2 for s in sequences])
    return ClassificationSplit(sequences, labels, torch.arange(count))


def _setup(tmp_path, *overrides: str) -> Setup:
    vocab = Vocabulary(
        ["<pad>", "<unk>", *(f"w{i}" for i in range(10))], eos_token=None, pad_token="<pad>"
    )
    corpus = ClassificationCorpus(
        _split(64, 0), _split(16, 1), _split(16, 2), vocab, "synthetic", ("even", "odd")
    )
    config = resolve_config(
        None,
        None,
        [
            "model.embedding_size=8",
            "model.hidden_size=8",
            "trainer.batch_size=8",
            "trainer.epochs=3",
            "trainer.progress=false",
            *overrides,
        ],
        {"task": "classify"},
    )
    return Setup(config, corpus, *build(config, len(vocab), 2))


def test_a_diverging_classifier_stops_naming_the_batch(tmp_path):
    s = _setup(
        tmp_path,
        'trainer.optimizer="adam"',
        "trainer.lr=1e6",
        "trainer.clip_norm=none",
        "trainer.checkpoint_every=1",
    )
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, batch \d+") as info:
        train_classifier(s, checkpoint, quiet_log)
    assert "checkpoint" in str(info.value)
    # the first step at lr 1e6 already blew the weights up: no checkpoint was ever vouched for
    assert not checkpoint.exists()


def test_a_sane_classifier_trains_through(tmp_path):
    s = _setup(tmp_path)
    history = train_classifier(s, tmp_path / "checkpoint.pt", quiet_log)
    assert len(history["epoch_lr"]) == 3


def test_a_finite_blow_up_stops_after_patience_batches(tmp_path):
    # Fortunato's σ: under init_scale="auto" (σ ≈ 0.018) a decoder mean of −3·10⁴ makes the
    # expected mixture KL's σ-gradient NaN, and the run stops at batch 1 as non-finite instead.
    s = _setup(
        tmp_path, "trainer.lr=1e-9", "trainer.divergence_patience=3", "guide.init_scale=fortunato"
    )
    with torch.no_grad():  # a confident, wrong decoder: a huge but finite NLL per label
        for name, value in s.guide.named_parameters():
            if "decoder" in name and "loc" in name:
                value.copy_(torch.randn_like(value) * 1e4)
    with pytest.raises(DivergenceError, match=r"epoch 1, batch 3") as info:
        train_classifier(s, tmp_path / "checkpoint.pt", quiet_log)
    assert "6.93" in str(info.value)  # the ceiling: 10 × log 2 nats per label
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing above the ceiling was saved


def test_a_stopped_classifier_resumes_to_the_uninterrupted_numbers(tmp_path):
    whole = train_classifier(_setup(tmp_path), tmp_path / "whole.pt", quiet_log)
    part = tmp_path / "part.pt"
    train_classifier(_setup(tmp_path, "trainer.max_windows=11"), part, quiet_log)  # mid-epoch 2
    first = torch.load(part, weights_only=True)
    assert first["position"] == [1, 3]
    resumed = train_classifier(_setup(tmp_path), part, quiet_log)
    assert resumed["elbo"] == pytest.approx(whole["elbo"], rel=1e-6)
    assert resumed["valid_accuracy"] == whole["valid_accuracy"]
