"""A saved vocabulary or scaling applied to freshly loaded data, and a fingerprint of each
split and of the vocabulary itself.

A trained run keeps its vocabulary; data read again later is re-encoded with it (so ids never
re-rank when counts change), and each split's sha256 over those ids says whether the data is
still the data the run saw. A series is scaled again with the run's own training mean and scale
(a target doubled after training keeps its standardised values when rescaled with its own new
statistics, so only the run's statistics make the change visible).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping

import torch
from torch import Tensor

from bayesrnn.data.checksums import DataError
from bayesrnn.data.corpora import SPLITS, LanguageCorpus
from bayesrnn.data.polarity import ClassificationCorpus, ClassificationSplit
from bayesrnn.data.series import SPLITS as SERIES_SPLITS
from bayesrnn.data.series import SeriesCorpus
from bayesrnn.data.transforms import SeriesTransform
from bayesrnn.data.vocab import Vocabulary

__all__ = ["corpus_fingerprint", "reencode_corpus", "rescale_series", "vocabulary_fingerprint"]

Corpus = LanguageCorpus | ClassificationCorpus


def _id_map(source: Vocabulary, target: Vocabulary) -> Tensor:
    """For every id of ``source``, its token's id in ``target`` (−1 where ``target`` has none)."""
    unk = -1 if target.unk_id is None else target.unk_id
    ids = [target.token_to_id(t) if t in target else unk for t in source.itos]
    return torch.tensor(ids, dtype=torch.long)


def _mapped(ids: Tensor, table: Tensor, target: Vocabulary, source: Vocabulary, where: str):
    out = table[ids]
    if out.numel() and int(out.min()) < 0:
        token = source.id_to_token(int(ids[out < 0][0]))
        raise DataError(
            f"{where} holds the token {token!r}, which the run's vocabulary lacks (and it has "
            "no <unk> to map it to)"
        )
    return out


def reencode_corpus(corpus: Corpus, vocab: Vocabulary) -> Corpus:
    """``corpus`` with every split encoded by ``vocab`` instead of its own vocabulary."""
    if corpus.vocab == vocab:
        return corpus
    table = _id_map(corpus.vocab, vocab)
    name = getattr(corpus, "name", "the data")
    if isinstance(corpus, LanguageCorpus):
        streams = {
            split: _mapped(getattr(corpus, split), table, vocab, corpus.vocab, f"{name} {split}")
            for split in SPLITS
        }
        return dataclasses.replace(corpus, vocab=vocab, **streams)

    def split_of(split: str) -> ClassificationSplit:
        part: ClassificationSplit = getattr(corpus, split)
        where = f"{name} {split}"
        sequences = [_mapped(s, table, vocab, corpus.vocab, where) for s in part.sequences]
        return ClassificationSplit(sequences, part.labels, part.source_index)

    return dataclasses.replace(corpus, vocab=vocab, **{s: split_of(s) for s in SPLITS})


def _digest_stream(stream: Tensor) -> str:
    kind = torch.float32 if stream.is_floating_point() else torch.int64  # series rows or ids
    return hashlib.sha256(stream.to(kind).cpu().contiguous().numpy().tobytes()).hexdigest()


def _digest_split(split: ClassificationSplit) -> str:
    digest = hashlib.sha256()
    for sequence, label in zip(split.sequences, split.labels.tolist(), strict=True):
        digest.update(torch.tensor([sequence.numel(), label], dtype=torch.int64).numpy().tobytes())
        digest.update(sequence.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def corpus_fingerprint(corpus: Corpus) -> dict[str, dict[str, int | str]]:
    """Per split: its size (tokens, examples or rows) and the sha256 of its ids (and labels) or
    of its (scaled) rows."""
    out = {}
    for split in SPLITS:
        part = getattr(corpus, split)
        if isinstance(part, Tensor):
            out[split] = {"items": int(part.shape[0]), "sha256": _digest_stream(part)}
        else:
            out[split] = {"items": len(part), "sha256": _digest_split(part)}
    return out


def vocabulary_fingerprint(vocab: Vocabulary) -> str:
    """sha256 of the id → token table (and which tokens are special): two tokens swapped, one
    renamed or the table cut all change it."""
    table = {
        "itos": vocab.itos,
        "special": [vocab.unk_token, vocab.eos_token, vocab.pad_token],  # <unk>, <eos>, <pad>
    }
    return hashlib.sha256(json.dumps(table, ensure_ascii=True).encode("ascii")).hexdigest()


def rescale_series(corpus: SeriesCorpus, series: Mapping) -> SeriesCorpus:
    """``corpus`` scaled with a trained run's statistics (``series``: its columns, targets,
    mean, scale and transform, as ``vocab.json`` records them) instead of those of the data
    read now; unchanged when they agree."""
    columns, targets = tuple(series["columns"]), int(series["targets"])
    if tuple(corpus.columns) != columns or corpus.targets != targets:
        raise DataError(
            f"{corpus.name} now reads the columns {list(corpus.columns)} ({corpus.targets} "
            f"target(s)); the run was trained on {list(columns)} ({targets} target(s))"
        )
    mean = torch.tensor(series["mean"], dtype=torch.float64)
    scale = torch.tensor(series["scale"], dtype=torch.float64)
    transform = SeriesTransform.from_dict(series.get("transform"))
    if (
        torch.equal(mean, corpus.mean.double())
        and torch.equal(scale, corpus.scale.double())
        and transform == corpus.transform
    ):
        return corpus
    rows = corpus.full().double()
    covariates = rows[:, targets:] * corpus.scale[targets:] + corpus.mean[targets:]
    raw = corpus.observed(0, rows.shape[0])  # the targets in the data's units
    values = torch.cat([transform.forward(raw), covariates], dim=1)
    scaled = ((values - mean) / scale).float()
    parts = scaled.split([corpus.sizes()[split] for split in SERIES_SPLITS])
    return dataclasses.replace(
        corpus,
        **dict(zip(SERIES_SPLITS, parts, strict=True)),
        mean=mean,
        scale=scale,
        transform=transform,
    )
