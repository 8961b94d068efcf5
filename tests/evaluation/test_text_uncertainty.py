"""Epistemic uncertainty about a given text: hand-computed values, the expectations that define
the measures, and the per-sentence sums that feed them."""

import itertools
import math

import pyro
import pytest
import torch

from bayesrnn.app.config_files import resolve_config
from bayesrnn.app.setup import build
from bayesrnn.evaluation.sentence_ood import (
    LM_SCORES,
    SENTENCE_SCORES,
    stream_token_values,
    tokens_to_sentences,
)
from bayesrnn.evaluation.stream_report import TokenAccumulator
from bayesrnn.evaluation.text_uncertainty import (
    expected_pairwise_kl,
    observed_expected_pairwise_kl,
    observed_information_gain,
    observed_reverse_mutual_information,
    reverse_mutual_information,
)
from bayesrnn.evaluation.uncertainty import mutual_information
from bayesrnn.inference import evaluate_stream


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def test_two_draws_by_hand():
    # the text has probability 0.1 under one draw and 0.4 under the other; the predictive 0.25
    ll = torch.log(torch.tensor([[0.1], [0.4]], dtype=torch.float64))
    rmi = math.log(0.25) - (math.log(0.1) + math.log(0.4)) / 2  # = log 1.25
    # after reading it the draws weigh 0.2 and 0.8: KL to (1/2, 1/2)
    gain = 0.2 * math.log(0.4) + 0.8 * math.log(1.6)
    assert observed_reverse_mutual_information(ll).item() == pytest.approx(math.log(1.25))
    assert observed_reverse_mutual_information(ll).item() == pytest.approx(rmi)
    assert observed_information_gain(ll).item() == pytest.approx(gain)
    epkl = 0.2 * math.log(0.1) + 0.8 * math.log(0.4) - (math.log(0.1) + math.log(0.4)) / 2
    assert observed_expected_pairwise_kl(ll).item() == pytest.approx(epkl)
    assert epkl == pytest.approx(rmi + gain)
    same = torch.log(torch.full((3, 4), 0.3, dtype=torch.float64))
    for measure in (
        observed_reverse_mutual_information,
        observed_information_gain,
        observed_expected_pairwise_kl,
    ):
        assert torch.equal(measure(same), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="-inf"):
        observed_reverse_mutual_information(torch.tensor([[0.0], [-math.inf]]))
    with pytest.raises(ValueError, match="leading dim"):
        observed_information_gain(torch.zeros(0, 3))


def test_the_observed_measures_average_to_the_distributional_ones():
    """Each observed measure, averaged over y drawn from the predictive, is its measure of the
    draws' distributions (the definition, summed over every y here); and the distributional
    measures equal the pairwise KLs counted by hand."""
    p = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]]
    log_p = torch.log(torch.tensor(p, dtype=torch.float64))  # (M=3 draws, K=3 outcomes)
    mixture = log_p.exp().mean(0)
    over_y = {
        measure: float((mixture * measure(log_p)).sum())  # log_p[:, y]: every draw's ℓ of y
        for measure in (
            observed_reverse_mutual_information,
            observed_information_gain,
            observed_expected_pairwise_kl,
        )
    }
    pbar = mixture.tolist()
    rmi = sum(_kl(pbar, q) for q in p) / 3
    epkl = sum(_kl(a, b) for a, b in itertools.product(p, p)) / 9
    mi = sum(_kl(q, pbar) for q in p) / 3
    assert over_y[observed_reverse_mutual_information] == pytest.approx(rmi)
    assert over_y[observed_information_gain] == pytest.approx(mi)
    assert over_y[observed_expected_pairwise_kl] == pytest.approx(epkl)
    assert float(reverse_mutual_information(log_p)) == pytest.approx(rmi)
    assert float(expected_pairwise_kl(log_p)) == pytest.approx(epkl)
    assert float(mutual_information(log_p)) == pytest.approx(mi)
    # a zero probability in one draw stays finite (floored), as a window's would
    zero = torch.log(torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64))
    assert math.isfinite(float(expected_pairwise_kl(zero)))
    assert float(reverse_mutual_information(zero)) > 0


def test_sentence_scores_sum_each_draw_over_the_sentence():
    eos = 0
    # sentences: [5 6 eos] [7 8 9 eos]; batch 1: positions 1..6 predicted
    stream = torch.tensor([5, 6, eos, 7, 8, 9, eos])
    zeros = torch.zeros(6, dtype=torch.float64)
    values = {"predictive_entropy": zeros, "mutual_information": zeros}
    # two draws' log p of each predicted token (positions 1..6)
    draws = torch.log(
        torch.tensor(
            [[0.5, 0.2, 0.1, 0.1, 0.1, 0.3], [0.5, 0.4, 0.1, 0.2, 0.4, 0.6]], dtype=torch.float64
        )
    )
    scores = tokens_to_sentences(values, stream, 1, eos, draw_log_likelihoods=draws)
    assert scores.names == ("predictive_entropy", "mutual_information", *SENTENCE_SCORES)
    # sentence 0 (positions 1, 2): P = 0.1 and 0.2; sentence 1 (3..6): 0.0003 and 0.0048
    first = math.log(0.15) - (math.log(0.1) + math.log(0.2)) / 2
    second = math.log((0.0003 + 0.0048) / 2) - (math.log(0.0003) + math.log(0.0048)) / 2
    rmi = scores.score("observed_sentence_rmi")
    assert rmi.tolist() == pytest.approx([first / 2, second / 4])
    w = 0.0048 / 0.0051  # the second draw's weight after reading sentence 1
    gain = (1 - w) * math.log(2 * (1 - w)) + w * math.log(2 * w)
    assert scores.score("observed_sentence_information_gain")[1].item() == pytest.approx(gain / 4)
    epkl = scores.score("observed_sentence_epkl")
    assert torch.allclose(epkl, rmi + scores.score("observed_sentence_information_gain"))
    with pytest.raises(ValueError, match="unknown score"):
        scores.score("observed_nll")
    with pytest.raises(ValueError, match="draws, predictions"):
        tokens_to_sentences(values, stream, 1, eos, draw_log_likelihoods=draws[0])


def _gal_model():
    overrides = [
        "guide.name=gal",
        "model.prior=gaussian",
        "model.embedding_size=6",
        "model.hidden_size=6",
        "guide.dropout_input=0.4",
        "guide.dropout_hidden=0.3",
        "guide.dropout_embedding=0.2",
        "guide.dropout_output=0.4",
    ]
    pyro.clear_param_store()
    return build(resolve_config(None, None, overrides, {}), 12, None)[:2]


def test_each_draw_is_one_network_for_the_whole_stream():
    """Dropout masks drawn inside the model repeat in every window: short windows give each
    draw the log-probabilities one window over the whole stream gives it, and the plain
    per-window draws do not."""
    model, guide = _gal_model()
    stream = torch.randint(0, 12, (61,), generator=torch.Generator().manual_seed(0))
    per_draw = {}
    for bptt in (29, 7):  # one window per sequence (30 tokens each), or five
        torch.manual_seed(1)
        values, per_draw[bptt] = stream_token_values(
            model, guide, stream, num_samples=3, batch_size=2, bptt=bptt
        )
    assert set(values) == set(LM_SCORES) - set(SENTENCE_SCORES)
    assert per_draw[7].shape == (3, 58)
    assert torch.allclose(per_draw[7], per_draw[29], atol=1e-6)
    assert not torch.allclose(per_draw[7][0], per_draw[7][1])  # the draws do differ
    windows = []

    def plain(targets, log_probs, draw_log_probs):
        windows.append(draw_log_probs.gather(-1, targets.expand(3, -1, -1).unsqueeze(-1)))

    torch.manual_seed(1)
    evaluate_stream(model, guide, stream, batch_size=2, bptt=7, num_samples=3, on_window=plain)
    redrawn = torch.cat([w.squeeze(-1).reshape(3, -1) for w in windows], 1).double()
    assert not torch.allclose(redrawn, per_draw[29], atol=1e-6)
    # the token values agree with a TokenAccumulator's on the same windows
    acc = TokenAccumulator()
    torch.manual_seed(1)
    evaluate_stream(model, guide, stream, batch_size=2, bptt=29, num_samples=3, on_window=acc)
    assert torch.allclose(values["predictive_entropy"], acc.column("entropy"), atol=1e-6)
    gap = values["expected_pairwise_kl"] - values["reverse_mutual_information"]
    assert torch.allclose(gap, values["mutual_information"], atol=1e-5)
