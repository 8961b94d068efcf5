"""Per-sentence uncertainty scores, to tell in-distribution sentences from a foreign text's.

A language model reads a text as one token stream (``<eos>`` closing each line), cut into the
run's parallel sequences exactly as :func:`bayesrnn.inference.evaluate_stream` cuts a test split;
each predicted token is then credited to the sentence it belongs to (its ``<eos>`` included), and
a sentence's score is the mean over its predicted tokens. Scoring both sides the same way keeps
the comparison fair: the hidden state runs on from the previous sentence of the same text on both.

A sentence classifier scores each sentence on its own: the entropy of its class distribution.

Scores, higher = more likely out-of-distribution, all in nats (:data:`SCORES` for every model,
:data:`LM_SCORES` for a language model); the epistemic ones are zero without MC draws:

* ``predictive_entropy`` (the MC predictive's entropy) and ``mutual_information`` (its
  epistemic part), ``expected_pairwise_kl`` and ``reverse_mutual_information``: each sentence's
  mean over its positions of a property of the *next-token distributions*, an expectation over
  the tokens the model would predict there, whatever the text says next;
* ``observed_nll``: the mean of −log p̄(y_t) of the tokens that occur (total, not epistemic);
* ``observed_token_rmi``: the mean over the sentence's tokens of the Jensen gap
  log mean_m p_m(y_t) − mean_m log p_m(y_t) at the token that occurs;
* ``observed_sentence_rmi``, ``observed_sentence_information_gain``,
  ``observed_sentence_epkl``: the same measures of the whole sentence, from each draw's
  log-likelihood of it (the sum over its scored tokens under that draw), divided by the number
  of scored tokens (Malinin & Gales 2021's length normalisation);
  :mod:`bayesrnn.evaluation.text_uncertainty` derives them.

The sentence-level scores need each draw to be one network for the whole sentence, so a
language model's text is scored with every draw kept for the whole stream: its weights drawn
once, and its masks (dropout drawn inside the model) drawn again from the same random state in
every window (:class:`StreamDraws`). Masks drawn per time step (naive dropout, zoneout) then
repeat with the window's period.

Out-of-vocabulary words: a foreign text is often full of words the run's vocabulary maps to
``<unk>``, and ``<unk>`` is a frequent, confidently predicted token in training text, so the
predictions that read or predict it say little about how familiar the rest of the sentence is.
``oov="exclude"`` scores a language model's sentence only at the positions where neither the
token just read nor the token predicted is ``<unk>`` (:func:`oov_positions`); ``"include"``
scores every position. Each side's ``<unk>`` rate is reported either way, and so is how well
that rate alone separates the two texts (:func:`sentence_unk_shares`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bayesrnn.data import pad_batch
from bayesrnn.evaluation.ood import ood_report
from bayesrnn.evaluation.stream_draws import StreamDraws, stream_token_values
from bayesrnn.evaluation.text_uncertainty import (
    observed_expected_pairwise_kl,
    observed_information_gain,
    observed_reverse_mutual_information,
)
from bayesrnn.evaluation.uncertainty import (
    categorical_entropy,
    expected_entropy,
    predictive_entropy,
)
from bayesrnn.inference import predict_sequences

__all__ = [
    "LM_SCORES",
    "OOV_POLICIES",
    "SCORES",
    "SENTENCE_SCORES",
    "TOKEN_SCORES",
    "SentenceScores",
    "StreamDraws",
    "check_oov_policy",
    "oov_positions",
    "sentence_ood_report",
    "sentence_spans",
    "sentence_unk_rate",
    "sentence_unk_shares",
    "sequence_sentence_scores",
    "stream_sentence_scores",
    "stream_token_values",
    "tokens_to_sentences",
]

SCORES = ("predictive_entropy", "mutual_information")  # every model's, a classifier's too
TOKEN_SCORES = (
    *SCORES,
    "expected_pairwise_kl",
    "reverse_mutual_information",
    "observed_nll",
    "observed_token_rmi",
)  # a language model's per-token values, averaged per sentence
SENTENCE_SCORES = (
    "observed_sentence_rmi",
    "observed_sentence_information_gain",
    "observed_sentence_epkl",
)  # from each draw's log-likelihood of the whole sentence
LM_SCORES = (*TOKEN_SCORES, *SENTENCE_SCORES)
_OF_SENTENCE = {
    "observed_sentence_rmi": observed_reverse_mutual_information,
    "observed_sentence_information_gain": observed_information_gain,
    "observed_sentence_epkl": observed_expected_pairwise_kl,
}
OOV_POLICIES = ("exclude", "include")


@dataclass(frozen=True, eq=False)
class SentenceScores:
    """Scores of the sentences that were scored (``kept`` indexes them among all sentences)."""

    predictive_entropy: Tensor  # (N,) float64, nats
    mutual_information: Tensor  # (N,) float64, nats
    predicted: Tensor  # (N,) tokens (LM) or 1 (classifier) behind each score
    kept: Tensor  # (N,) indices into the text's sentences
    sentences: int  # all sentences of the text, scored or not
    excluded: int = 0  # predicted positions left out because they read or predict <unk>
    others: dict[str, Tensor] = field(default_factory=dict)  # (N,) each: a language model's

    def __len__(self) -> int:
        return int(self.kept.numel())

    @property
    def names(self) -> tuple[str, ...]:
        """The scores these sentences have, in :data:`LM_SCORES` order."""
        return (*SCORES, *(name for name in LM_SCORES if name in self.others))

    def score(self, name: str) -> Tensor:
        if name in SCORES:
            return getattr(self, name)
        if name not in self.others:
            raise ValueError(f"unknown score {name!r}; known: {', '.join(self.names)}")
        return self.others[name]


def sentence_spans(stream: Tensor, eos_id: int) -> Tensor:
    """``(start, end)`` rows of each sentence of a token stream, ``end`` exclusive and past its
    ``<eos>``; tokens after the last ``<eos>`` (a stream cut short) form a last sentence."""
    if stream.dim() != 1:
        raise ValueError(f"stream must be 1-D, got shape {tuple(stream.shape)}")
    ends = (torch.nonzero(stream.cpu() == eos_id).reshape(-1) + 1).tolist()
    if not ends or ends[-1] != stream.numel():
        ends.append(stream.numel())
    starts = [0, *ends[:-1]]
    return torch.tensor([starts, ends], dtype=torch.long).t().reshape(-1, 2)


def oov_positions(stream: Tensor, unk_id: int | None) -> Tensor:
    """Stream positions whose prediction touches an unknown word: the token predicted there is
    ``<unk>`` or the token read just before it is (all False without an ``<unk>``)."""
    unknown = torch.zeros(stream.numel(), dtype=torch.bool)
    if unk_id is None:
        return unknown
    unknown |= stream.cpu() == unk_id
    touched = unknown.clone()
    touched[1:] |= unknown[:-1]
    return touched


def check_oov_policy(oov: str) -> str:
    if oov not in OOV_POLICIES:
        raise ValueError(f"oov must be one of {', '.join(OOV_POLICIES)}; got {oov!r}")
    return oov


def _words(stream: Tensor, spans: Tensor, eos_id: int) -> Tensor:
    """Tokens of each sentence without its closing ``<eos>``."""
    lengths = spans[:, 1] - spans[:, 0]
    closed = torch.zeros_like(lengths, dtype=torch.bool)
    nonempty = lengths > 0
    closed[nonempty] = stream.cpu()[spans[nonempty, 1] - 1] == eos_id
    return lengths - closed.long()


def tokens_to_sentences(
    token_values: dict[str, Tensor],
    stream: Tensor,
    batch_size: int,
    eos_id: int,
    min_words: int = 2,
    skip: Tensor | None = None,
    draw_log_likelihoods: Tensor | None = None,
) -> SentenceScores:
    """Per-sentence means of per-token values in ``evaluate_stream``'s order.

    ``evaluate_stream`` cuts the stream into ``batch_size`` columns of ``steps`` tokens and
    predicts rows 1 .. steps-1 of each, row by row: value ``i`` belongs to stream position
    ``(i % B) * steps + i // B + 1``. ``skip`` (a bool per stream position, e.g.
    :func:`oov_positions`) leaves those predictions out. A sentence is scored when it has
    ``min_words`` tokens besides its ``<eos>`` and at least one of its tokens was predicted
    (and not skipped). ``token_values`` holds :data:`SCORES` and any others of
    :data:`TOKEN_SCORES`; ``draw_log_likelihoods`` (M, predictions), each draw's log p of each
    predicted token, adds :data:`SENTENCE_SCORES` from each draw's sum over a sentence's
    scored tokens.
    """
    steps = stream.numel() // batch_size
    count = (steps - 1) * batch_size
    unknown = set(token_values) - set(TOKEN_SCORES)
    if unknown or set(SCORES) - set(token_values):
        raise ValueError(
            f"token values must include {', '.join(SCORES)} and be among "
            f"{', '.join(TOKEN_SCORES)}; got {', '.join(sorted(token_values))}"
        )
    given = dict(token_values)
    if draw_log_likelihoods is not None:
        if draw_log_likelihoods.dim() != 2:
            raise ValueError(
                "draw_log_likelihoods must have shape (draws, predictions), got "
                f"{tuple(draw_log_likelihoods.shape)}"
            )
        given["draw_log_likelihoods"] = draw_log_likelihoods[0]
    for name, value in given.items():
        if value.numel() != count:
            raise ValueError(
                f"{name} has {value.numel()} values; a stream of {stream.numel()} "
                f"tokens in {batch_size} sequences has {count} predictions"
            )
    index = torch.arange(count)
    positions = (index % batch_size) * steps + index // batch_size + 1
    used = torch.ones(count, dtype=torch.bool)
    if skip is not None:
        if skip.shape != stream.shape:
            raise ValueError(
                f"skip has shape {tuple(skip.shape)}; the stream {tuple(stream.shape)}"
            )
        used = ~skip.cpu()[positions]
    index, positions = index[used], positions[used]
    spans = sentence_spans(stream, eos_id)
    lengths = spans[:, 1] - spans[:, 0]
    sentence_of = torch.repeat_interleave(torch.arange(spans.shape[0]), lengths)[positions]
    n = spans.shape[0]
    predicted = torch.bincount(sentence_of, minlength=n)
    keep = (_words(stream, spans, eos_id) >= min_words) & (predicted > 0)
    kept = torch.nonzero(keep).reshape(-1)
    tokens = predicted[kept].to(torch.float64)
    means = {}
    for name, value in token_values.items():
        sums = torch.zeros(n, dtype=torch.float64).index_add(
            0, sentence_of, value.to(torch.float64)[index]
        )
        means[name] = sums[kept] / tokens
    if draw_log_likelihoods is not None:
        draws = draw_log_likelihoods.to(torch.float64)
        sums = torch.zeros(draws.shape[0], n, dtype=torch.float64).index_add(
            1, sentence_of, draws[:, index]
        )[:, kept]
        for name, measure in _OF_SENTENCE.items():
            means[name] = measure(sums) / tokens
    return SentenceScores(
        predictive_entropy=means.pop("predictive_entropy"),
        mutual_information=means.pop("mutual_information"),
        predicted=predicted[kept],
        kept=kept,
        sentences=n,
        excluded=int(count - used.sum()),
        others=means,
    )


def stream_sentence_scores(
    model,
    guide,
    stream: Tensor,
    *,
    eos_id: int,
    num_samples: int | None,
    batch_size: int,
    bptt: int,
    min_words: int = 2,
    unk_id: int | None = None,
    oov: str = "include",
) -> SentenceScores:
    """Score each sentence of a token stream under a language model (:data:`LM_SCORES`; MC
    with ``num_samples`` draws, the posterior mean with None), the stream cut as
    ``evaluate_stream`` cuts it; ``oov="exclude"`` leaves out the predictions that read or
    predict ``unk_id``."""
    check_oov_policy(oov)
    values, draws = stream_token_values(
        model, guide, stream, num_samples=num_samples, batch_size=batch_size, bptt=bptt
    )
    skip = oov_positions(stream, unk_id) if oov == "exclude" else None
    return tokens_to_sentences(values, stream, batch_size, eos_id, min_words, skip, draws)


def sequence_sentence_scores(
    model,
    guide,
    sequences: Sequence[Tensor],
    *,
    num_samples: int | None,
    batch_size: int,
    pad_id: int,
    min_words: int = 2,
) -> SentenceScores:
    """Score each sentence under a sentence classifier: the entropy of its predictive class
    distribution and the mutual information between label and weights."""
    kept = [i for i, seq in enumerate(sequences) if seq.numel() >= min_words]
    entropy, mutual = [], []
    device = next(iter(model.parameters())).device
    for start in range(0, len(kept), batch_size):
        batch = [sequences[i] for i in kept[start : start + batch_size]]
        tokens, lengths = pad_batch(batch, pad_id=pad_id)
        prediction = predict_sequences(
            model, guide, tokens.to(device), lengths, num_samples=num_samples
        )
        if prediction.draw_log_probs is None:
            log_probs = prediction.log_probs.cpu().double()
            entropy.append(categorical_entropy(log_probs))
            mutual.append(torch.zeros(len(batch), dtype=torch.float64))
        else:
            draws = prediction.draw_log_probs.cpu().double()
            total = predictive_entropy(draws)
            entropy.append(total)
            mutual.append((total - expected_entropy(draws)).clamp_min(0.0))
    empty = torch.zeros(0, dtype=torch.float64)
    return SentenceScores(
        predictive_entropy=torch.cat(entropy) if entropy else empty,
        mutual_information=torch.cat(mutual) if mutual else empty,
        predicted=torch.ones(len(kept), dtype=torch.long),
        kept=torch.tensor(kept, dtype=torch.long),
        sentences=len(sequences),
    )


def sentence_unk_rate(ids: Tensor, unk_id: int | None, eos_id: int | None = None) -> float:
    """Share of a text's words that are ``<unk>`` (``<eos>`` tokens are not words; 0 for a
    vocabulary without ``<unk>``, which cannot encode an unknown word at all)."""
    words = ids if eos_id is None else ids[ids != eos_id]
    if words.numel() == 0:
        raise ValueError("the text has no words")
    if unk_id is None:
        return 0.0
    return float((words == unk_id).double().mean())


def sentence_unk_shares(
    scores: SentenceScores,
    unk_id: int | None,
    *,
    stream: Tensor | None = None,
    eos_id: int | None = None,
    sequences: Sequence[Tensor] | None = None,
) -> Tensor:
    """Each scored sentence's share of ``<unk>`` words (its ``<eos>`` aside): the trivial
    out-of-distribution score that a model's uncertainty should beat, from a token stream
    (``stream`` and ``eos_id``) or one id sequence per sentence (``sequences``)."""
    if (stream is None) == (sequences is None):
        raise ValueError("give the sentences as stream (with eos_id) or as sequences, not both")
    if stream is not None:
        if eos_id is None:
            raise ValueError("a stream needs eos_id to find its sentences")
        spans = sentence_spans(stream, eos_id)
        stream = stream.cpu()
        words = [stream[a:b][stream[a:b] != eos_id] for a, b in spans.tolist()]
    else:
        words = [seq.cpu() for seq in sequences]
    shares = []
    for i in scores.kept.tolist():
        row = words[i]
        unknown = 0.0 if unk_id is None or row.numel() == 0 else (row == unk_id).double().mean()
        shares.append(float(unknown))
    return torch.tensor(shares, dtype=torch.float64)


def sentence_ood_report(inside: SentenceScores, outside: SentenceScores) -> dict[str, dict]:
    """AUROC, AUPR (outside = positive) and FPR95 of each score both sides have, with each
    side's mean."""
    if not len(inside) or not len(outside):
        raise ValueError(
            f"both sides need scored sentences (in: {len(inside)}, out: {len(outside)})"
        )
    out = {}
    for name in (n for n in inside.names if n in outside.names):
        s_in, s_out = inside.score(name), outside.score(name)
        out[name] = ood_report(s_in, s_out) | {
            "mean_in": float(s_in.mean()),
            "mean_out": float(s_out.mean()),
        }
    return out
