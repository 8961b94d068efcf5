"""OOD scores against hand-computed values (with ties) and a brute-force pair count."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesrnn.evaluation.ood import (
    aupr,
    auroc,
    entropy_gap,
    fpr_at_tpr,
    max_probability_score,
    ood_report,
)

# Worked 3-vs-3 example with a tie (0.4 appears in both sets).
IN = torch.tensor([0.1, 0.4, 0.35])
OUT = torch.tensor([0.8, 0.4, 0.3])
# AUROC = P(out > in) + P(out == in) / 2 over the 9 pairs:
#   out 0.8 beats 0.1, 0.4, 0.35           -> 3
#   out 0.4 beats 0.1, 0.35, ties 0.4      -> 2.5
#   out 0.3 beats 0.1 only                 -> 1
#   AUROC = 6.5 / 9
AUROC = 6.5 / 9
# AP, thresholds high to low, predict OOD when score >= t (3 OOD items):
#   t=0.8:  TP 1 FP 0  precision 1    recall 1/3  -> 1/3 * 1
#   t=0.4:  TP 2 FP 1  precision 2/3  recall 2/3  -> 1/3 * 2/3
#   t=0.35: TP 2 FP 2                 recall 2/3  -> 0
#   t=0.3:  TP 3 FP 2  precision 3/5  recall 1    -> 1/3 * 3/5
#   t=0.1:  recall unchanged                      -> 0
#   AP = 1/3 + 2/9 + 1/5 = 34/45
AUPR = 34 / 45


def test_auroc_worked_example_with_tie() -> None:
    assert auroc(IN, OUT) == pytest.approx(AUROC, abs=1e-12)
    assert auroc(OUT, IN) == pytest.approx(1 - AUROC, abs=1e-12)


def test_auroc_identical_scores_is_one_half() -> None:
    assert auroc(torch.full((4,), 0.3), torch.full((7,), 0.3)) == 0.5
    # Same multiset on both sides is also chance level.
    assert auroc([0.1, 0.2, 0.3], np.array([0.3, 0.2, 0.1])) == pytest.approx(0.5)


def test_auroc_separation_extremes() -> None:
    assert auroc([0.0, 0.1], [0.5, 0.9, 1.0]) == 1.0
    assert auroc([0.5, 0.9, 1.0], [0.0, 0.1]) == 0.0


def test_aupr_worked_example_with_tie() -> None:
    assert aupr(IN, OUT) == pytest.approx(AUPR, abs=1e-12)


def test_aupr_extremes() -> None:
    assert aupr([0.0, 0.1], [0.5, 0.9]) == pytest.approx(1.0)
    # All scores tied: one threshold, precision = base rate of OOD = 2 / 5.
    assert aupr(torch.zeros(3), torch.zeros(2)) == pytest.approx(2 / 5)
    # OOD ranked last: thresholds 0.9, 0.8 give recall 0, then 0.1 (TP 1, FP 2) recall 1/2
    # precision 1/3, then 0.0 (TP 2, FP 2) recall 1 precision 1/2: AP = 1/6 + 1/4 = 5/12.
    assert aupr([0.9, 0.8], [0.1, 0.0]) == pytest.approx(5 / 12)


def test_fpr_at_tpr_worked_example() -> None:
    # TPR >= 0.95 needs all three OOD items: threshold 0.3, in >= 0.3 are 0.4, 0.35 -> 2/3.
    assert fpr_at_tpr(IN, OUT) == pytest.approx(2 / 3)
    # TPR >= 0.6 needs two of three: threshold 0.4, in >= 0.4 is the tied 0.4 -> 1/3.
    assert fpr_at_tpr(IN, OUT, tpr=0.6) == pytest.approx(1 / 3)
    # TPR >= 0.3 needs one: threshold 0.8 -> no in-distribution item above it.
    assert fpr_at_tpr(IN, OUT, tpr=0.3) == 0.0


def test_fpr_at_tpr_exact_boundary_counts() -> None:
    # 20 OOD scores 1..20: TPR 0.95 means 19 items, so threshold 2; in-distribution scores
    # 0.5, 1.5, 2, 2.5 -> the last two are >= 2 -> FPR 2/4. A threshold of 1 would give 3/4.
    out = torch.arange(1, 21, dtype=torch.float64)
    assert fpr_at_tpr([0.5, 1.5, 2.0, 2.5], out, 0.95) == pytest.approx(0.5)
    # 0.28 * 25 = 7.000000000000001 in floating point; 7 of 25 items still reach TPR 0.28.
    out = torch.arange(25, 0, -1, dtype=torch.float64)  # 25 ... 1, 7th largest is 19
    assert fpr_at_tpr([18.5, 19.0, 19.5], out, 0.28) == pytest.approx(2 / 3)


def test_fpr_at_tpr_counts_tied_out_scores_together() -> None:
    # All OOD tied at 1.0: any threshold catching one catches all; FPR = share of in >= 1.0.
    assert fpr_at_tpr([0.0, 1.0, 2.0, 0.5], [1.0, 1.0, 1.0], 0.5) == pytest.approx(0.5)


def test_max_probability_score() -> None:
    probs = torch.tensor([[[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]])
    score = max_probability_score(probs)
    assert score.shape == (1, 2)
    assert score.flatten().tolist() == pytest.approx([0.3, 2 / 3])
    with pytest.raises(ValueError, match="probs"):
        max_probability_score(torch.tensor([0.7, 0.7]))


def test_entropy_gap_by_hand() -> None:
    # Forward mean (1 + 2 + 3) / 3 = 2, reversed mean (2 + 4) / 2 = 3 -> gap 1 nat/word.
    assert entropy_gap(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[2.0], [4.0]])) == 1.0
    assert entropy_gap([0.5], [0.25]) == pytest.approx(-0.25)


def test_ood_report_collects_the_three_numbers() -> None:
    report = ood_report(IN, OUT)
    assert report == pytest.approx({"auroc": AUROC, "aupr": AUPR, "fpr95": 2 / 3})
    assert all(isinstance(value, float) for value in report.values())


@pytest.mark.parametrize(
    ("in_scores", "out_scores", "argument"),
    [
        (torch.tensor([]), torch.tensor([1.0]), "in_scores"),
        (torch.tensor([1.0]), torch.tensor([]), "out_scores"),
        (torch.tensor([[1.0, 2.0]]), torch.tensor([1.0]), "in_scores"),
        (torch.tensor([1.0]), torch.tensor([math.nan]), "out_scores"),
        (torch.tensor([math.inf]), torch.tensor([1.0]), "in_scores"),
        (torch.tensor([True]), torch.tensor([1.0]), "in_scores"),
    ],
)
def test_bad_scores_raise(in_scores, out_scores, argument: str) -> None:
    for metric in (auroc, aupr, fpr_at_tpr, ood_report):
        with pytest.raises(ValueError, match=argument):
            metric(in_scores, out_scores)


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.5, math.nan, True])
def test_bad_tpr_raises(tpr) -> None:
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([0.0], [1.0], tpr)


def test_bad_entropies_raise() -> None:
    with pytest.raises(ValueError, match="forward_entropy"):
        entropy_gap([], [1.0])
    with pytest.raises(ValueError, match="reversed_entropy"):
        entropy_gap([1.0], [math.nan])
    with pytest.raises(ValueError, match="reversed_entropy"):
        entropy_gap([1.0], [-0.5])


_scores = st.lists(
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(-5, 5), min_size=1, max_size=25
)


def _pairwise_auroc(a: list[float], b: list[float]) -> float:
    """Definition: mean over all pairs of 1[out > in] + 1/2 1[out == in]."""
    wins = sum((y > x) + 0.5 * (y == x) for x in a for y in b)
    return wins / (len(a) * len(b))


def _loop_average_precision(a: list[float], b: list[float]) -> float:
    """Definition: sum over distinct thresholds of delta-recall * precision."""
    total, previous_recall = 0.0, 0.0
    for t in sorted(set(a) | set(b), reverse=True):
        tp = sum(y >= t for y in b)
        fp = sum(x >= t for x in a)
        recall = tp / len(b)
        total += (recall - previous_recall) * tp / (tp + fp)
        previous_recall = recall
    return total


@settings(max_examples=150, deadline=None)
@given(_scores, _scores)
def test_auroc_and_aupr_match_definitions(a: list[float], b: list[float]) -> None:
    assert auroc(a, b) == pytest.approx(_pairwise_auroc(a, b), abs=1e-12)
    assert auroc(a, b) + auroc(b, a) == pytest.approx(1.0, abs=1e-12)
    assert aupr(a, b) == pytest.approx(_loop_average_precision(a, b), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(_scores, _scores, st.floats(0.01, 1.0))
def test_fpr_at_tpr_is_the_lowest_fpr_reaching_tpr(a: list[float], b: list[float], tpr: float):
    # Brute force over every candidate threshold: keep those with TPR >= tpr, take min FPR.
    best = min(
        sum(x >= t for x in a) / len(a)
        for t in set(a) | set(b)
        if sum(y >= t for y in b) >= tpr * len(b) - 1e-9
    )
    assert fpr_at_tpr(a, b, tpr) == pytest.approx(best)
