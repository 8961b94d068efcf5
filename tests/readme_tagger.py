"""The user guide's own-model example (docs/guide/pyro-models.md), as written there, for the
tests that check what the guide says of it (training from the default initial σ, Pyro's
vectorised paths)."""

import pyro
import pyro.distributions as dist
from torch import nn

from bayesrnn.models import BayesianLSTM


class Tagger(nn.Module):  # your own model: torch modules around a bayesrnn LSTM
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.rnn = BayesianLSTM(8, 16, prior=None)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens, tags=None):
        logits = self.head(self.rnn(self.embed(tokens))[0])
        with pyro.plate("batch", tokens.shape[1], dim=-1):  # noqa: SIM117 (README's words)
            with pyro.plate("time", tokens.shape[0], dim=-2):
                pyro.sample("obs", dist.Categorical(logits=logits), obs=tags)
        return logits
