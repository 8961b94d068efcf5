"""``bayesrnn evaluate --ood FILE`` and ``TrainedRun.ood``: a text the user names as
out-of-distribution, scored sentence by sentence against the run's evaluation split.

FILE is read as UTF-8, one sentence per non-blank line, with the run's tokenizer and vocabulary
(unknown words become ``<unk>``, whose share is reported for each side: a high rate on FILE's side
alone can separate the two, so the report also gives the AUROC of that share per sentence, the
baseline a model's uncertainty has to beat). A language model's predictions that read or predict
``<unk>`` are left out of both sides' scores unless ``evaluation.ood_oov="include"``
(:mod:`bayesrnn.evaluation.sentence_ood`). Both sides are scored with the MC predictive of
``evaluation.mc_samples`` draws, in a pass of their own (each draw kept for the whole text, so
that sentence-level scores compare whole sentences under one network); see
:mod:`bayesrnn.evaluation.sentence_ood` for the scores.
A vocabulary without ``<unk>`` (PTB at character level) cannot read a symbol it never saw: such
symbols are removed from both texts before scoring (a word of them alone goes with its ``_``
boundary) and their share is reported as ``unseen_removed``, a separate signal of its own.
Fortunato's reversed test text is a separate comparison (``evaluation.reversed_text``), reported
under the split's ``"reversed"`` key whether or not FILE is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from bayesrnn.app.run_dir import JobError
from bayesrnn.app.setup import Setup, padding_id, seed_everything
from bayesrnn.data import Vocabulary, tokenize_text
from bayesrnn.data.checksums import DataError
from bayesrnn.data.input_files import read_input_bytes
from bayesrnn.data.tokenizers import SPACE_SYMBOL, TOKENIZERS
from bayesrnn.evaluation import plot_entropy_histograms
from bayesrnn.evaluation.ood import ood_report
from bayesrnn.evaluation.sentence_ood import (
    SentenceScores,
    sentence_ood_report,
    sentence_unk_rate,
    sentence_unk_shares,
    sequence_sentence_scores,
    stream_sentence_scores,
)

__all__ = ["MIN_WORDS", "OODReport", "OODText", "encode_ood_text", "read_ood_file"]

MIN_WORDS = 2  # a sentence is scored when it has at least this many tokens (its <eos> aside)
PLOT_NAME = "ood_entropy.png"


def read_ood_file(path: str | os.PathLike[str]) -> str:
    """The text of FILE, or a :class:`JobError` that says what is wrong with it."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"the OOD file must be a path, got {type(path).__name__}")
    file = Path(path).expanduser()
    if not file.exists():
        raise JobError(f"--ood {file}: no such file")
    if not file.is_file():
        raise JobError(f"--ood {file}: not a regular file (a folder?); name a UTF-8 text file")
    try:
        data = read_input_bytes(file, "--ood file")
    except DataError as error:
        raise JobError(str(error)) from None
    except OSError as error:
        raise JobError(f"--ood {file}: cannot be read ({error.strerror or error})") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise JobError(
            f"--ood {file}: looks binary (a NUL byte at offset {nul}); name a UTF-8 text file, "
            "one sentence per line"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JobError(f"--ood {file}: not UTF-8 text (byte offset {error.start})") from None
    if not text.strip():
        raise JobError(f"--ood {file}: the file is empty (no non-blank line)")
    return text


@dataclass(frozen=True, eq=False)
class OODText:
    """A foreign text encoded for one run: a token stream (language model) or one id sequence
    per line (classifier)."""

    name: str
    path: str | None  # the file's absolute path; None for text given directly
    lines: int
    words: int
    unk_rate: float
    stream: Tensor | None = field(default=None, repr=False)
    unseen_removed: float = 0.0  # share of tokens removed: unseen, and no <unk> to read them as
    sequences: list[Tensor] | None = field(default=None, repr=False)


def encode_ood_text(
    text: str,
    task: str,
    tokenizer: str,
    vocabulary: Vocabulary | None,
    *,
    name: str = "text",
    path: str | os.PathLike[str] | None = None,
) -> OODText:
    """``text`` as the run reads its data: its tokenizer, its ids, ``<eos>`` closing each line
    for a language model. Refuses a text with no line of :data:`MIN_WORDS` tokens."""
    if task not in ("lm", "classify") or vocabulary is None:
        raise JobError(
            f"--ood needs a language model or a sentence classifier; this is a {task} run"
        )
    if tokenizer not in TOKENIZERS:
        raise JobError(
            f"the run's data was read by a tokenizer bayesrnn cannot replay ({tokenizer!r}), so "
            f"{name} cannot be read the same way"
        )
    lines = tokenize_text(text, tokenizer)
    if not lines:
        raise JobError(f"{name}: the text is empty (no non-blank line)")
    unseen = 0.0
    if vocabulary.unk_id is None:
        lines, unseen = drop_unseen(lines, vocabulary)
    if max((len(line) for line in lines), default=0) < MIN_WORDS:
        raise JobError(
            f"{name}: no line has {MIN_WORDS} or more tokens (as the run's {tokenizer!r} "
            "tokenizer reads it); each line is one sentence, and shorter ones are not scored"
        )
    try:
        if task == "classify":
            sequences = [vocabulary.encode(line) for line in lines]
            ids = torch.cat(sequences)
            stream = None
        else:
            eos = vocabulary.eos_token
            if eos is None:
                raise JobError("the run's vocabulary has no <eos> to close sentences with")
            stream = ids = vocabulary.encode([t for line in lines for t in (*line, eos)])
            sequences = None
    except ValueError as error:  # a vocabulary without <unk> meets an unknown token
        raise JobError(f"{name} cannot be encoded with the run's vocabulary: {error}") from None
    return OODText(
        name=name,
        path=None if path is None else str(Path(path).expanduser().resolve()),
        lines=len(lines),
        words=sum(len(line) for line in lines),
        unk_rate=sentence_unk_rate(ids, vocabulary.unk_id, vocabulary.eos_id),
        stream=stream,
        sequences=sequences,
        unseen_removed=unseen,
    )


def drop_unseen(lines: list[list[str]], vocabulary: Vocabulary) -> tuple[list[list[str]], float]:
    """``lines`` without the tokens ``vocabulary`` lacks, for a vocabulary with no ``<unk>`` to
    read them as, and the share of tokens removed. Word boundaries (``_``) left doubled or at a
    line's ends by a removal are merged or dropped, so a removed word leaves no trace."""
    total = sum(len(line) for line in lines)
    kept_lines = []
    for line in lines:
        kept = [t for t in line if t in vocabulary]
        if len(kept) < len(line) and SPACE_SYMBOL in vocabulary:
            kept = [
                t
                for i, t in enumerate(kept)
                if t != SPACE_SYMBOL or (0 < i < len(kept) - 1 and kept[i + 1] != SPACE_SYMBOL)
            ]
        if kept:
            kept_lines.append(kept)
    removed = total - sum(len(line) for line in kept_lines)
    return kept_lines, removed / total if total else 0.0


@dataclass(frozen=True, eq=False)
class OODReport:
    """The comparison of in-distribution sentences (``inside``) with the named text's
    (``outside``); ``metrics`` is what ``metrics.json`` holds under ``"ood_file"``."""

    metrics: dict[str, Any]
    inside: SentenceScores = field(repr=False)
    outside: SentenceScores = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def plot(self, path: str | os.PathLike[str] | None = None, *, ax: Axes | None = None) -> Figure:
        """Histograms of the per-sentence predictive entropy of both sides, as every plot of the
        package draws: into ``ax`` when given, written to ``path`` when given; returns the
        figure."""
        return plot_entropy_histograms(
            self.inside.predictive_entropy,
            self.outside.predictive_entropy,
            path,
            labels=(f"{self.metrics['split']} sentences", f"{self.metrics['name']} sentences"),
            ax=ax,
        )


def file_batch_size(tokens: int, eval_batch_size: int, bptt: int) -> int:
    """Parallel sequences for a named text: the run's, fewer for a text too short to give each
    a full window, so a short file is not mostly sequence starts (whose first token is lost)."""
    return max(1, min(eval_batch_size, tokens // (bptt + 1)))


def lm_sentences(s: Setup, stream: Tensor, batch_size: int | None = None) -> SentenceScores:
    """A token stream's sentences under the run's language model, MC as the evaluation."""
    tr, ev = s.config.trainer, s.config.evaluation
    seed_everything(tr.seed + 2)
    return stream_sentence_scores(
        s.model,
        s.guide,
        stream,
        eos_id=s.corpus.vocab.eos_id,
        num_samples=ev.mc_samples,
        batch_size=batch_size or file_batch_size(stream.numel(), tr.eval_batch_size, tr.bptt),
        bptt=tr.bptt,
        min_words=MIN_WORDS,
        unk_id=s.corpus.vocab.unk_id,
        oov=ev.ood_oov,
    )


def classifier_sentences(s: Setup, sequences: list[Tensor]) -> SentenceScores:
    seed_everything(s.config.trainer.seed + 2)
    return sequence_sentence_scores(
        s.model,
        s.guide,
        sequences,
        num_samples=s.config.evaluation.mc_samples,
        batch_size=s.config.trainer.batch_size,
        pad_id=padding_id(s.corpus),
        min_words=MIN_WORDS,
    )


def _unk_shares(s: Setup, scores: SentenceScores, ids: Tensor | list[Tensor]) -> Tensor:
    vocab = s.corpus.vocab
    if isinstance(ids, list):
        return sentence_unk_shares(scores, vocab.unk_id, sequences=ids)
    return sentence_unk_shares(scores, vocab.unk_id, stream=ids, eos_id=vocab.eos_id)


def compare(
    s: Setup,
    text: OODText,
    inside: SentenceScores,
    in_ids: Tensor | list[Tensor],
    in_text: OODText | None = None,
) -> OODReport:
    """Score ``text`` with the run and compare it with the split's ``inside`` scores
    (``in_ids``: the split's token stream, or its sentences for a classifier; ``in_text``: the
    in-distribution text when it was given instead of the split)."""
    if text.stream is not None:
        outside = lm_sentences(s, text.stream)
    else:
        outside = classifier_sentences(s, text.sequences or [])
    if not len(inside):
        raise JobError(
            f"no sentence of the {s.config.evaluation.split} split has {MIN_WORDS} or more "
            "tokens to compare with"
        )
    if not len(outside):
        raise JobError(f"{text.name}: no sentence could be scored (too short for the run)")
    vocab = s.corpus.vocab
    lm = text.stream is not None
    out_ids = text.stream if lm else (text.sequences or [])
    unk_baseline = ood_report(_unk_shares(s, inside, in_ids), _unk_shares(s, outside, out_ids))
    flat_in = in_ids if isinstance(in_ids, Tensor) else torch.cat(in_ids)
    metrics = {
        "path": text.path,
        "name": text.name,
        "split": s.config.evaluation.split,
        "num_samples": s.config.evaluation.mc_samples,
        "min_words": MIN_WORDS,
        "sentences": {"in": len(inside), "out": len(outside)},
        "sentences_skipped": {
            "in": inside.sentences - len(inside),
            "out": outside.sentences - len(outside),
        },
        "unk_rate": {
            "in": sentence_unk_rate(flat_in, vocab.unk_id, vocab.eos_id),
            "out": text.unk_rate,
        },
        # a language model's predictions that read or predict <unk>: left out or scored
        "oov": s.config.evaluation.ood_oov if lm else "not applicable (whole sentences)",
        "positions_excluded": {"in": inside.excluded, "out": outside.excluded},
        "scores": sentence_ood_report(inside, outside),
        "unk_share_baseline": unk_baseline,
    }
    if vocab.unk_id is None:  # tokens the run never saw were removed: how many, per side
        metrics["unseen_removed"] = {
            "in": 0.0 if in_text is None else in_text.unseen_removed,
            "out": text.unseen_removed,
        }
    return OODReport(metrics, inside, outside)


def encoded_split(s: Setup, run_root: Path) -> Tensor | list[Tensor]:
    """The run's evaluation split read again from its data and encoded with its vocabulary
    (cut as the evaluation cuts it); data that changed since training is refused."""
    from bayesrnn.app.run_data import check_data, read_run_data
    from bayesrnn.app.run_dir import RunDir
    from bayesrnn.app.setup import load_data
    from bayesrnn.data import reencode_corpus

    ev = s.config.evaluation
    corpus = reencode_corpus(load_data(s.config), s.corpus.vocab)
    saved = read_run_data(RunDir(run_root))
    if saved is not None:
        check_data(saved, corpus, (ev.split,), RunDir(run_root))
    part = getattr(corpus, ev.split)
    if s.config.task == "classify":
        return list(part.sequences)
    return part if ev.max_tokens is None else part[: ev.max_tokens]


def compare_texts(s: Setup, text: OODText, inside: Tensor | list[Tensor] | OODText) -> OODReport:
    """``text`` against in-distribution text: the run's split (ids or sentences) or another
    named text, both scored here."""
    tr = s.config.trainer
    if isinstance(inside, OODText):
        ids = inside.stream if inside.stream is not None else list(inside.sequences or [])
        scores = (
            lm_sentences(s, inside.stream)
            if inside.stream is not None
            else classifier_sentences(s, inside.sequences or [])
        )
    elif isinstance(inside, list):
        ids, scores = inside, classifier_sentences(s, inside)
    else:  # the split, cut as the evaluation cuts it
        batch = max(1, min(tr.eval_batch_size, inside.numel() // 2))
        ids, scores = inside, lm_sentences(s, inside, batch_size=batch)
    return compare(s, text, scores, ids, inside if isinstance(inside, OODText) else None)
