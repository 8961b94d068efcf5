"""``vocab.json``: the vocabulary a run was trained with, its tokenizer, and a data fingerprint.

Ids must mean the same thing at every later step (resume, evaluate, export, scoring new text),
so the vocabulary is stored, never rebuilt. The fingerprint (sha256 of each split's ids under
that vocabulary) tells whether a data source still holds the data the run saw, and
``vocabulary_sha256`` (of the id → token table, written at training) whether the table itself
was edited since: two tokens swapped would otherwise score every text with the wrong words.
Files written before that field existed are read as they are (``vocabulary_checked`` False).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bayesrnn.app.run_dir import JobError, RunDir, read_json, write_json
from bayesrnn.data import (
    ClassificationCorpus,
    LanguageCorpus,
    Vocabulary,
    corpus_fingerprint,
    vocabulary_fingerprint,
)

__all__ = [
    "RunData",
    "check_checkpoint_vocabulary",
    "check_data",
    "checkpoint_tags",
    "read_run_data",
    "recorded_tags",
    "run_data_of",
    "write_run_data",
]

_FORMAT = 1


@dataclass(frozen=True)
class RunData:
    """What a run knows about its data without reading it again."""

    vocabulary: Vocabulary | None  # None for a real-valued series
    tokenizer: str
    task: str
    name: str
    splits: dict[str, dict] = field(default_factory=dict)  # split -> {"items", "sha256"}
    label_names: tuple[str, ...] | None = None
    series: dict | None = None  # forecasting: columns, targets, train mean, scale, transform
    vocabulary_checked: bool = True  # False: an older file, without the table's fingerprint

    @property
    def n_classes(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)


def _series_info(corpus) -> dict | None:
    if not hasattr(corpus, "columns"):
        return None
    return {
        "columns": list(corpus.columns),
        "targets": int(corpus.targets),
        "mean": [float(v) for v in corpus.mean],
        "scale": [float(v) for v in corpus.scale],
        # a target value v the model sees is (g(x) − mean)/scale with g this transform
        "transform": corpus.transform.to_dict(),
        "future_covariates": list(corpus.future_columns),
        "lags": list(getattr(corpus, "lags", ())),  # their columns follow the targets
    }


def _check_series(series: Any) -> None:
    """A forecasting run's columns and scaling, as :func:`_series_info` writes them."""
    if not isinstance(series, dict):
        raise ValueError(f"series is {series!r}, not the columns and their scaling")
    columns, targets = series.get("columns"), series.get("targets")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise ValueError("series.columns is not a list of column names")
    if (
        isinstance(targets, bool)
        or not isinstance(targets, int)
        or not 1 <= targets <= len(columns)
    ):
        raise ValueError(f"series.targets is {targets!r}, not a count of the columns")
    for name in ("mean", "scale"):
        values = series.get(name)
        if (
            not isinstance(values, list)
            or len(values) != len(columns)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            raise ValueError(f"series.{name} is not one number per column")
    if not all(v > 0 for v in series["scale"]):
        raise ValueError("series.scale holds a value that is not positive")
    lags = series.get("lags", [])
    if (
        not isinstance(lags, list)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in lags)
        or targets * (1 + len(lags)) > len(columns)
    ):
        raise ValueError(f"series.lags is {lags!r}, not lags >= 2 whose columns the run has")


def run_data_of(corpus, task: str) -> RunData:
    return RunData(
        vocabulary=getattr(corpus, "vocab", None),
        tokenizer=getattr(corpus, "tokenizer", "whitespace"),
        task=task,
        name=getattr(corpus, "name", ""),
        splits=corpus_fingerprint(corpus),
        label_names=getattr(corpus, "label_names", None),
        series=_series_info(corpus),
    )


def write_run_data(run: RunDir, data: RunData) -> None:
    write_json(
        run.vocabulary,
        {
            "format": _FORMAT,
            "task": data.task,
            "data": data.name,
            "tokenizer": data.tokenizer,
            "label_names": None if data.label_names is None else list(data.label_names),
            "splits": data.splits,
            "vocabulary": None if data.vocabulary is None else data.vocabulary.to_dict(),
            "vocabulary_sha256": (
                None if data.vocabulary is None else vocabulary_fingerprint(data.vocabulary)
            ),
            "series": data.series,
        },
    )


def read_run_data(run: RunDir) -> RunData | None:
    """The run's ``vocab.json``, or None for runs written before it existed."""
    if not run.vocabulary.is_file():
        return None
    raw = read_json(run.vocabulary)
    try:
        if raw["format"] != _FORMAT:
            raise ValueError(f"format {raw['format']!r}, this version reads {_FORMAT}")
        labels = raw["label_names"]
        vocabulary = raw["vocabulary"]
        if raw["task"] != "forecast" and not isinstance(vocabulary, dict):
            raise ValueError(f"a text run's vocabulary is {vocabulary!r}, not a table")
        if raw["task"] == "forecast":
            _check_series(raw.get("series"))
        table = None if vocabulary is None else Vocabulary.from_dict(vocabulary)
        recorded = raw.get("vocabulary_sha256")
        data = RunData(
            vocabulary=table,
            tokenizer=str(raw["tokenizer"]),
            task=str(raw["task"]),
            name=str(raw["data"]),
            splits={k: dict(v) for k, v in raw["splits"].items()},
            label_names=None if labels is None else tuple(labels),
            series=raw.get("series"),
            vocabulary_checked=table is None or recorded is not None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise JobError(
            f"{run.vocabulary} is not a bayesrnn vocabulary file ({error}); restore it from a "
            "backup, or delete the run and train again"
        ) from None
    if table is not None and recorded is not None and recorded != vocabulary_fingerprint(table):
        raise JobError(
            f"{run.vocabulary} no longer holds the vocabulary the run was trained with (its "
            "id → token table was edited since training: the checkpoint's ids would mean other "
            "words); restore the file from a backup, or train the run again"
        )
    return data


def check_data(
    saved: RunData,
    corpus: LanguageCorpus | ClassificationCorpus,
    needed: Iterable[str],
    run: RunDir,
) -> list[str]:
    """Refuse when a split in ``needed`` differs from the run's; return the other changed ones.

    ``corpus`` must already be encoded with the saved vocabulary (a series scaled with the
    saved statistics: see :func:`bayesrnn.data.rescale_series`).
    """
    now = corpus_fingerprint(corpus)
    changed = [s for s in now if saved.splits.get(s) != now[s]]
    for split in changed:
        if split in needed:
            before, after = saved.splits.get(split, {}), now[split]
            sizes = (
                f"{before.get('items')} items then, {after['items']} now"
                if before.get("items") != after["items"]
                else f"the same {after['items']} items, other content"
            )
            raise JobError(
                f"the {split} split of the data differs from the one recorded in "
                f"{run.vocabulary} ({sizes}): restore the run's data, or train a new run in "
                "another --out"
            )
    return changed


VOCABULARY_TAG = "vocabulary_sha256"  # in a checkpoint: the fingerprint of its vocabulary


def checkpoint_tags(corpus) -> dict[str, str]:
    """What a checkpoint records of the run's data: its vocabulary's fingerprint (none for a
    series)."""
    vocab = getattr(corpus, "vocab", None)
    return {} if vocab is None else {VOCABULARY_TAG: vocabulary_fingerprint(vocab)}


def recorded_tags(path: Path) -> dict[str, str]:
    """The data tags of the checkpoint at ``path``, read without loading its tensors (memory-
    mapped); {} for one unreadable here (its restore names the damage)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a damaged or foreign file: restore reports it
        return {}
    if not isinstance(payload, dict) or not isinstance(payload.get(VOCABULARY_TAG), str):
        return {}
    return {VOCABULARY_TAG: payload[VOCABULARY_TAG]}


def check_checkpoint_vocabulary(payload: dict, vocab: Vocabulary | None, run: RunDir) -> None:
    """Refuse a vocabulary other than the one the checkpoint was trained with (checkpoints
    written before the tag existed are taken as they are)."""
    recorded = payload.get(VOCABULARY_TAG)
    if recorded is None or vocab is None or recorded == vocabulary_fingerprint(vocab):
        return
    source = run.vocabulary if run.vocabulary.is_file() else "the vocabulary rebuilt from the data"
    raise JobError(
        f"{source} is not the vocabulary {run.checkpoint} was trained with (another run's, or "
        "edited); put the run's own vocab.json back (from a backup), or train the run again"
    )
