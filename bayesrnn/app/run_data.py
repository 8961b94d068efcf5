"""``vocab.json``: the vocabulary a run was trained with, its tokenizer, and a data fingerprint.

Ids must mean the same thing at every later step (resume, evaluate, export, scoring new text),
so the vocabulary is stored, never rebuilt. The fingerprint (sha256 of each split's ids under
that vocabulary) tells whether a data source still holds the data the run saw.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bayesrnn.app.run_dir import JobError, RunDir, read_json, write_json
from bayesrnn.data import (
    ClassificationCorpus,
    LanguageCorpus,
    Vocabulary,
    corpus_fingerprint,
)

__all__ = ["RunData", "check_data", "read_run_data", "run_data_of", "write_run_data"]

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
    }


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
        return RunData(
            vocabulary=None if vocabulary is None else Vocabulary.from_dict(vocabulary),
            tokenizer=str(raw["tokenizer"]),
            task=str(raw["task"]),
            name=str(raw["data"]),
            splits={k: dict(v) for k, v in raw["splits"].items()},
            label_names=None if labels is None else tuple(labels),
            series=raw.get("series"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise JobError(
            f"{run.vocabulary} is not a bayesrnn vocabulary file ({error}); restore it from a "
            "backup, or delete the run and train again"
        ) from None


def check_data(
    saved: RunData,
    corpus: LanguageCorpus | ClassificationCorpus,
    needed: Iterable[str],
    run: RunDir,
) -> list[str]:
    """Refuse when a split in ``needed`` differs from the run's; return the other changed ones.

    ``corpus`` must already be encoded with the saved vocabulary.
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
