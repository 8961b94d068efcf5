"""``load_run``: a trained run directory as Python objects, to score new text with it.

The model is rebuilt from ``config.toml`` and ``vocab.json`` and loaded from ``checkpoint.pt``;
the data the run was trained on is not read again (runs written before ``vocab.json`` existed
rebuild their vocabulary from it).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bayesrnn.app.backtest_plan import backtest_plan
from bayesrnn.app.config import RunConfig
from bayesrnn.app.forecast_backtest import horizon_backtest, run_corpus
from bayesrnn.app.ood_task import (
    OODReport,
    compare_texts,
    encode_ood_text,
    encoded_split,
    read_ood_file,
)
from bayesrnn.app.run_data import read_run_data
from bayesrnn.app.run_dir import JobError, RunDir, read_metrics, read_run_config
from bayesrnn.app.run_forecast import SeriesScaling, forecast_run
from bayesrnn.app.setup import Setup, build, quiet_log, restore, seed_everything, setup
from bayesrnn.data import Vocabulary, pad_batch, tokenize_text
from bayesrnn.data.tokenizers import TOKENIZERS
from bayesrnn.evaluation.path_forecast import PathForecast
from bayesrnn.evaluation.sentence_ood import check_oov_policy
from bayesrnn.evaluation.stream_report import TokenAccumulator, report_from_accumulator
from bayesrnn.inference import evaluate_stream, predict_sequences

__all__ = ["TextScore", "TrainedRun", "load_run"]


@dataclass(frozen=True, eq=False)
class TextScore:
    """How well a run's language model predicts a text.

    ``token_entropy[i]`` is the predictive entropy (nats) of the distribution that predicted
    token ``i`` of the encoded text; NaN for tokens that were not predicted (the first token of
    each of the parallel sequences the text is cut into, and a remainder shorter than one).
    """

    perplexity: float
    nll: float  # nats per predicted token
    tokens: int  # predicted tokens
    num_samples: int  # 0: the posterior mean
    token_entropy: Tensor = field(repr=False)
    token_ids: Tensor = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        entropy = self.token_entropy[~torch.isnan(self.token_entropy)]
        return {
            "perplexity": self.perplexity,
            "nll": self.nll,
            "tokens": self.tokens,
            "num_samples": self.num_samples,
            "mean_entropy": float(entropy.mean()) if entropy.numel() else math.nan,
        }


class TrainedRun:
    """A trained run: ``model``, ``guide``, ``vocabulary`` (None for a series), ``config``,
    ``metrics``; a forecasting run also ``series`` (its columns and their training scaling)."""

    def __init__(
        self,
        path: Path,
        setup_: Setup,
        tokenizer: str,
        label_names,
        series: SeriesScaling | None = None,
    ) -> None:
        self.path = path
        self.config: RunConfig = setup_.config
        self.model = setup_.model
        self.guide = setup_.guide
        self.vocabulary: Vocabulary | None = setup_.corpus.vocab
        self.tokenizer = tokenizer
        self.label_names = label_names
        self.series = series  # a forecasting run's columns and their training scaling
        self._setup = setup_

    def __repr__(self) -> str:
        if self.series is not None:
            data = f"columns={list(self.series.columns)}, targets={self.series.targets}"
        elif self.vocabulary is not None:
            data = f"vocabulary={len(self.vocabulary)}"
        else:
            data = "vocabulary=None"
        return (
            f"TrainedRun({str(self.path)!r}, task={self.config.task!r}, "
            f"model={type(self.model).__name__}, {data})"
        )

    def forecast(
        self,
        horizon: int,
        num_samples: int = 1000,
        history: object = None,
        covariates: object = None,
    ) -> PathForecast:
        """``num_samples`` sample paths of the next ``horizon`` values, in the data's units.

        Each path draws its weights once, reads the history, then samples each step from the
        predictive and feeds that value back (see :func:`bayesrnn.evaluation.sample_paths`).
        ``history`` (N, F) or (N,) raw values, targets first then covariates, defaults to the
        run's whole series (train, valid and test); its end is where the paths start. A run
        with covariates needs ``covariates`` (horizon, C), their values at the forecast steps.
        Returns a :class:`~bayesrnn.evaluation.PathForecast` (``paths``, ``times``, ``mean``,
        ``quantiles(q)``, ``to_frame()``, ``to_csv(path)``, ``plot()``); draws come from
        torch's global generator, seeded here from the run's seed.
        """
        seed_everything(self.config.trainer.seed + 1)
        return forecast_run(self, horizon, num_samples, history, covariates)

    def backtest(
        self,
        horizon: int | None = None,
        *,
        stride: int | None = None,
        num_samples: int | None = None,
        baselines: tuple[str, ...] | list[str] | None = None,
        season: int | None = None,
        split: str | None = None,
    ) -> dict:
        """Multi-step forecasts from rolling origins of the evaluation ``split``, scored per
        horizon for the network and the classical ``baselines``: what ``metrics.json`` holds as
        ``test.horizons``. At each origin the network reads the rows before it only (its state
        warmed up on them) and draws ``num_samples`` paths of ``horizon`` steps.

        Each argument left None is the run's ``evaluation.horizon``, ``backtest_stride``,
        ``backtest_samples``, ``baselines`` (names among persistence, seasonal_naive,
        climatology, ets, arima; ``("auto",)``) and ``split``, and ``data.season``. Returns
        ``methods`` (``{name: {"crps": [H floats], "mae", "rmse", "mase", "msis",
        "coverage_50", "coverage_90"}}``, the network as ``"bayesrnn"``), ``ranking``,
        ``origin_rows``, ``season`` and its source; nothing is written.
        """
        if self.config.task != "forecast":
            raise JobError(f"backtest needs a forecasting run; this is a {self.config.task} run")
        ev = {
            key: value
            for key, value in (
                ("horizon", horizon),
                ("backtest_stride", stride),
                ("backtest_samples", num_samples),
                ("baselines", None if baselines is None else tuple(baselines)),
                ("split", split),
            )
            if value is not None
        }
        data = {} if season is None else {"season": season}
        config = dataclasses.replace(
            self.config,
            evaluation=dataclasses.replace(self.config.evaluation, **ev),
            data=dataclasses.replace(self.config.data, **data),
        )
        corpus = run_corpus(self)
        return horizon_backtest(
            self.model, self.guide, corpus, config, backtest_plan(config, corpus), log=quiet_log
        )

    @property
    def metrics(self) -> dict | None:
        """The run's ``metrics.json`` (None before it was evaluated)."""
        path = RunDir(self.path).metrics
        return read_metrics(path) if path.is_file() else None

    def encode(self, text: str) -> Tensor:
        """``text`` as the run's token ids: its tokenizer, one ``<eos>`` per non-blank line."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.tokenizer not in TOKENIZERS:
            raise JobError(
                f"{self.path} was trained on data read by a tokenizer bayesrnn cannot replay "
                f"({self.tokenizer!r}); encode the text with run.vocabulary yourself"
            )
        lines = tokenize_text(text, self.tokenizer)
        eos = self.vocabulary.eos_token
        tokens = [t for line in lines for t in (*line, *((eos,) if eos else ()))]
        try:
            return self.vocabulary.encode(tokens)
        except ValueError as error:
            raise JobError(
                f"the text cannot be encoded with the run's vocabulary: {error}"
            ) from None

    def score_text(self, text: str, num_samples: int = 0) -> TextScore:
        """Perplexity and per-token predictive entropy of ``text`` under the language model.

        ``num_samples=0`` predicts with the posterior mean, S > 0 averages S posterior draws
        (MC). Windows and parallel sequences are the run's (``trainer.bptt``,
        ``trainer.eval_batch_size``), so the run's own test text gives ``metrics.json``'s
        ``test.perplexity_mean`` (when the run did not cut it with ``evaluation.max_tokens``).
        """
        if self.config.task != "lm":
            raise JobError(
                f"score_text needs a language model; this is a {self.config.task} run"
                + (" (use classify_text)" if self.config.task == "classify" else "")
            )
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"num_samples must be an integer >= 0, got {num_samples!r}")
        ids = self.encode(text)
        if ids.numel() < 2:
            raise ValueError(f"the text has {ids.numel()} token(s); scoring needs at least 2")
        tr = self.config.trainer
        batch = min(tr.eval_batch_size, ids.numel() // 2)
        accumulator = TokenAccumulator()
        seed_everything(tr.seed + 1)
        evaluate_stream(
            self.model,
            self.guide,
            ids,
            batch_size=batch,
            bptt=tr.bptt,
            num_samples=num_samples or None,
            on_window=accumulator,
        )
        ev = self.config.evaluation
        report = report_from_accumulator(
            accumulator, num_samples or None, ev.n_bins, ev.bin_strategy
        )
        steps = ids.numel() // batch
        entropy = torch.full((ids.numel(),), math.nan, dtype=torch.float64)
        # predictions come window by window, row-major over (step, sequence); sequence b holds
        # ids[b*steps:(b+1)*steps], and step r predicts its token r
        rows = report.token_entropy.reshape(steps - 1, batch)
        positions = torch.arange(batch).unsqueeze(0) * steps + torch.arange(1, steps).unsqueeze(1)
        entropy[positions.reshape(-1)] = rows.reshape(-1)
        return TextScore(
            perplexity=report.perplexity,
            nll=report.nll,
            tokens=report.tokens,
            num_samples=num_samples,
            token_entropy=entropy,
            token_ids=ids,
        )

    def ood(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        text: str | None = None,
        in_text: str | None = None,
        num_samples: int | None = None,
        oov: str | None = None,
    ) -> OODReport:
        """Score a foreign text (the file ``path``, or ``text``; one sentence per line) as
        out-of-distribution against the run's evaluation split (or ``in_text``), sentence by
        sentence: AUROC, AUPR, FPR95 of each score (a language model's
        :data:`~bayesrnn.evaluation.sentence_ood.LM_SCORES`: predictive entropy, mutual
        information and the other next-token measures, and the observed-text scores that compare
        the draws' likelihoods of the sentences themselves; a classifier's entropy and mutual
        information), each side's ``<unk>`` rate and how well that rate alone separates them.
        MC with ``num_samples`` draws
        (default: ``evaluation.mc_samples``); ``oov`` ("exclude" or "include", default
        ``evaluation.ood_oov``): whether a language model's predictions that read or predict
        ``<unk>`` are scored. Writes nothing; ``report.plot(path)`` (or ``ax=``) draws the entropy
        histograms."""
        if (path is None) == (text is None):
            raise ValueError("give the out-of-distribution text as path or as text (one of them)")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        s = self._setup
        if num_samples is not None:
            if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
                raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
            ev = dataclasses.replace(s.config.evaluation, mc_samples=num_samples)
            s = dataclasses.replace(s, config=dataclasses.replace(s.config, evaluation=ev))
        if oov is not None:
            check_oov_policy(oov)
            ev = dataclasses.replace(s.config.evaluation, ood_oov=oov)
            s = dataclasses.replace(s, config=dataclasses.replace(s.config, evaluation=ev))
        task, vocab = self.config.task, self.vocabulary
        name = "text" if path is None else Path(path).name
        raw = read_ood_file(path) if path is not None else text
        foreign = encode_ood_text(raw or "", task, self.tokenizer, vocab, name=name, path=path)
        if in_text is not None:
            inside = encode_ood_text(in_text, task, self.tokenizer, vocab, name="in_text")
        else:
            inside = encoded_split(s, self.path)
        return compare_texts(s, foreign, inside)

    def classify_text(self, text: str, num_samples: int = 0) -> Tensor:
        """Class probabilities (lines × classes) of each non-blank line of ``text``."""
        if self.config.task != "classify":
            raise JobError(
                f"classify_text needs a sentence classifier; this is a {self.config.task} run"
            )
        lines = tokenize_text(text, self.tokenizer)
        if not lines:
            raise ValueError("the text has no non-blank lines to classify")
        sequences = [self.vocabulary.encode(line or [self.vocabulary.itos[0]]) for line in lines]
        pad = self.vocabulary.pad_id or 0
        tokens, lengths = pad_batch(sequences, pad_id=pad)
        seed_everything(self.config.trainer.seed + 1)
        prediction = predict_sequences(
            self.model, self.guide, tokens, lengths, num_samples=num_samples or None
        )
        return prediction.log_probs.exp()


def load_run(path: str | os.PathLike[str], device: str | None = None) -> TrainedRun:
    """Open a trained run directory (``bayesrnn run/train --out PATH``) for scoring.

    ``device`` defaults to the run's own, or the CPU where that is a GPU this machine lacks.
    """
    run = RunDir(Path(path).expanduser())
    config = read_run_config(run)
    wanted = device or config.trainer.device
    if device is None and wanted.startswith("cuda") and not torch.cuda.is_available():
        wanted = "cpu"
    if wanted != config.trainer.device:
        config = dataclasses.replace(
            config, trainer=dataclasses.replace(config.trainer, device=wanted)
        )
    saved = read_run_data(run)
    if saved is None:  # an older run: the vocabulary comes from its data
        s = setup(config, quiet_log, training=False)
        tokenizer = getattr(s.corpus, "tokenizer", "whitespace")
        labels = getattr(s.corpus, "label_names", None)
        series = SeriesScaling.of_corpus(s.corpus) if config.task == "forecast" else None
    else:
        if saved.series is not None:
            sizes = (len(saved.series["columns"]), saved.series["targets"])
            # data.lags=auto was read off the data: the lags it chose are the stored ones
            lags = tuple(saved.series.get("lags", ()))
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, lags=lags))
        else:
            sizes = (len(saved.vocabulary), saved.n_classes)
        model, guide = build(config, *sizes, training=False)
        s = Setup(config, _VocabularyOnly(saved.vocabulary), model, guide)
        tokenizer, labels = saved.tokenizer, saved.label_names
        if config.data.source == "ptb-char" and tokenizer == "whitespace":
            tokenizer = "ptb-characters"  # recorded before plain text could be spelled out
        series = None if saved.series is None else SeriesScaling(saved.series)
    restore(s, run)
    s.model.eval()
    if isinstance(s.guide, torch.nn.Module):
        s.guide.eval()
    return TrainedRun(run.root, s, tokenizer, labels, series)


@dataclass(frozen=True)
class _VocabularyOnly:
    """Stands in for a corpus where only the vocabulary is known."""

    vocab: Vocabulary
