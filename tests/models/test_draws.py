"""S stacked weight draws in one call equal S separate calls (the batched MC path)."""

import pytest
import torch
from pyro import poutine

from bayesrnn.models import LanguageModel, weight_sites


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_stacked_draws_equal_separate_runs(cell, batch_first):
    model = LanguageModel(
        11, 5, 6, num_layers=2, cell=cell, batch_first=batch_first, deterministic=("decoder.bias",)
    )
    draws = [
        {s: torch.randn_like(v) * 0.5 for s, v in weight_sites(model).items()} for _ in range(3)
    ]
    stacked = {s: torch.stack([d[s] for d in draws]) for s in draws[0]}
    shape = (2, 7) if batch_first else (7, 2)
    first, second = torch.randint(0, 11, shape), torch.randint(0, 11, shape)
    logits, state = poutine.condition(model, data=stacked)(first)
    logits2, _ = poutine.condition(model, data=stacked)(second, state=state)
    for s, weights in enumerate(draws):
        alone, alone_state = poutine.condition(model, data=weights)(first)
        torch.testing.assert_close(logits[s], alone, atol=1e-5, rtol=1e-5)
        alone2, _ = poutine.condition(model, data=weights)(second, state=alone_state)
        torch.testing.assert_close(logits2[s], alone2, atol=1e-5, rtol=1e-5)


def test_stacked_draws_observe_targets_per_draw():
    """With targets, each draw's tokens are scored by that draw's logits (vectorised ELBOs)."""
    model = LanguageModel(11, 5, 6, num_layers=1)
    draws = [{s: torch.randn_like(v) for s, v in weight_sites(model).items()} for _ in range(2)]
    stacked = {s: torch.stack([d[s] for d in draws]) for s in draws[0]}
    tokens, targets = torch.randint(0, 11, (4, 2)), torch.randint(0, 11, (4, 2))
    trace = poutine.trace(poutine.condition(model, data=stacked)).get_trace(tokens, targets)
    obs = trace.nodes["obs"]
    scored = obs["fn"].log_prob(obs["value"])
    for s, weights in enumerate(draws):
        logits, _ = poutine.condition(model, data=weights)(tokens)
        expected = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(scored[s], expected, atol=1e-5, rtol=1e-5)
