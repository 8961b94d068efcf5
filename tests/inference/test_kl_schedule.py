"""The KL taken on every k-th window with weight k/C: the same epoch objective, less work."""

from fractions import Fraction

import pyro
import pytest
import torch

from bayesrnn.inference import MeanFieldGuide, epoch_kl_scales, scale_kl, window_terms
from bayesrnn.models import GaussianPrior, LanguageModel


def test_scales_put_the_kl_on_every_kth_window_and_sum_to_one():
    f = Fraction
    assert epoch_kl_scales(10, every=4) == [f(4, 10), 0, 0, 0, f(4, 10), 0, 0, 0, f(2, 10), 0]
    assert epoch_kl_scales(3, every=1) == [f(1, 3)] * 3
    for windows in (1, 2, 7, 29, 100):
        for every in (1, 2, 3, 8, 200):
            scales = epoch_kl_scales(windows, every)
            assert sum(scales, Fraction(0)) == 1
            assert sum(1 for s in scales if s) == -(-windows // every)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            epoch_kl_scales(5, every=bad)


def test_a_window_without_kl_computes_none_and_keeps_the_likelihood():
    lm = LanguageModel(11, 4, 5, num_layers=1, prior=GaussianPrior(0.5))
    guide = MeanFieldGuide(lm, init_scale=0.1)
    tokens, targets = torch.randint(0, 11, (6, 2)), torch.randint(0, 11, (6, 2))
    terms = {}
    for scale in (0.0, 0.25, 1.0):
        pyro.set_rng_seed(0)
        terms[scale] = window_terms(scale_kl(lm, scale), scale_kl(guide, scale), tokens, targets)
    assert float(terms[0.0].kl) == 0.0
    torch.testing.assert_close(terms[0.0].nll, terms[1.0].nll)  # same draw, same likelihood
    torch.testing.assert_close(terms[0.25].kl, 0.25 * terms[1.0].kl)
    # the closed-form Gaussian KL, computed independently
    expected = 0.0
    for site in guide.site_names:
        mu, sigma = guide.loc[site], guide.scale(site)
        expected += (torch.log(0.5 / sigma) + (sigma**2 + mu**2) / (2 * 0.25) - 0.5).sum()
    torch.testing.assert_close(terms[1.0].kl, expected, rtol=1e-5, atol=1e-3)


def test_the_epoch_kl_is_the_same_for_every_schedule():
    lm = LanguageModel(11, 4, 5, num_layers=1, prior=GaussianPrior(0.5))
    guide = MeanFieldGuide(lm, init_scale=0.1)
    tokens = torch.randint(0, 11, (4, 2))
    totals = []
    for every in (1, 3, 7):
        total = 0.0
        for scale in map(float, epoch_kl_scales(7, every)):
            terms = window_terms(scale_kl(lm, scale), scale_kl(guide, scale), tokens, tokens)
            total += float(terms.kl.detach())
        totals.append(total)
    assert totals == pytest.approx([totals[0]] * 3, rel=1e-5)


def test_the_trainer_takes_the_kl_on_every_kth_window_and_records_its_share():
    from bayesrnn.inference import TBPTTTrainer, TrainerConfig

    torch.manual_seed(3)
    lm = LanguageModel(7, 4, 4, num_layers=1, prior=GaussianPrior(0.5))
    guide = MeanFieldGuide(lm, init_scale=0.1)
    stream = torch.arange(4 * 36) % 7  # 4 columns of 36: 5 windows of 7 steps
    config = TrainerConfig(batch_size=4, bptt=7, epochs=1, kl_every=2, lr=1e-12, progress=False)
    trainer = TBPTTTrainer(lm, guide, stream, config=config)
    seen = []
    step = trainer._step

    def spy(batch, scale, epoch, index):
        seen.append(scale)
        return step(batch, scale, epoch, index)

    trainer._step = spy
    history = trainer.fit()
    windows = len(seen)
    assert seen == [float(s) for s in epoch_kl_scales(windows, 2)]
    # lr 1e-12: the parameters do not move, so every window's share is the closed-form KL / C
    expected = 0.0
    for site in guide.site_names:
        mu, sigma = guide.loc[site].detach(), guide.scale(site).detach()
        expected += float((torch.log(0.5 / sigma) + (sigma**2 + mu**2) / 0.5 - 0.5).sum())
    assert history.kl == pytest.approx([expected / windows] * windows, rel=1e-4)
    with pytest.raises(ValueError, match="kl_every"):
        TrainerConfig(kl_every=0)
