"""Per-sequence noise under a share of the minibatch is one process's noise for those rows.

Two processes are simulated in one: each re-seeds the shared random stream (as every rank
does) and runs its half of the sequences inside ``sequence_share``. Every sequence gets the
same input, so sequences can differ only through their masks or noise.
"""

import pytest
import torch
from pyro import poutine

from bayesrnn.inference import GalDropoutGuide
from bayesrnn.models import GaussianPrior, LanguageModel
from bayesrnn.models.sequence_share import SequenceShare, per_sequence, sequence_share

BATCH, STEPS, VOCAB = 4, 6, 11


def _gal_model():
    model = LanguageModel(VOCAB, 5, 7, num_layers=2, prior=GaussianPrior(1.0))
    guide = GalDropoutGuide(model, embedding=0.3, input=0.4, hidden=0.5, output=0.4)
    return poutine.condition(model, data=guide.median()), model


def _plain_model(**rates):
    model = LanguageModel(VOCAB, 5, 7, num_layers=2, prior=None, regularisers=rates)
    return model, model


MODELS = {
    "gal": _gal_model,  # locked input/hidden/output masks and word-type (embedding) masks
    "zaremba": lambda: _plain_model(naive_dropout=0.5),
    "zoneout": lambda: _plain_model(zoneout_c=0.3, zoneout_h=0.3),
}


def _logits(call, tokens, share=None):
    torch.manual_seed(7)  # every process holds the same random stream
    with sequence_share(share):
        return call(tokens)[0].detach()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_two_shares_give_each_sequence_the_noise_one_process_gives_it(kind):
    torch.manual_seed(0)
    call, model = MODELS[kind]()
    model.train()
    column = torch.randint(0, VOCAB, (STEPS, 1))
    tokens = column.expand(STEPS, BATCH).contiguous()  # every sequence reads the same words
    whole = _logits(call, tokens)
    halves = [
        _logits(call, tokens[:, :2], SequenceShare(BATCH, 0, 2)),
        _logits(call, tokens[:, 2:], SequenceShare(BATCH, 2, 4)),
    ]
    torch.testing.assert_close(halves[0], whole[:, :2], atol=1e-6, rtol=0)
    torch.testing.assert_close(halves[1], whole[:, 2:], atol=1e-6, rtol=0)
    # the processes' sequences get independent noise: same input, different outputs
    assert (halves[0] - halves[1]).abs().max() > 1e-3
    model.eval()  # no noise: the sequences agree, so the difference above is the noise's
    plain = _logits(call, tokens)
    torch.testing.assert_close(plain[:, 0], plain[:, 3], atol=1e-6, rtol=0)


def test_grouped_draws_keep_the_share_in_every_group():
    """G weight draws run as G·b sequences, draw-major: rows start:stop of each group of B."""

    def rows(n):
        return torch.arange(float(n)).unsqueeze(1)

    with sequence_share(SequenceShare(4, 2, 4)):
        kept = per_sequence(rows, 2 * 2)  # 2 draws of this process's 2 sequences
    assert kept.squeeze(1).tolist() == [2.0, 3.0, 6.0, 7.0]
    with sequence_share(SequenceShare(4, 0, 4)):  # the whole minibatch: drawn as is
        assert per_sequence(rows, 4).squeeze(1).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_batch_that_is_not_a_multiple_of_the_share_is_refused():
    with sequence_share(SequenceShare(6, 0, 2)), pytest.raises(ValueError, match="multiple"):
        per_sequence(lambda n: torch.zeros(n, 1), 3)
    with pytest.raises(ValueError, match="start < stop"):
        SequenceShare(4, 3, 3)
