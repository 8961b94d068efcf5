"""Sequence regressor: a Bayesian RNN stack over real-valued rows that forecasts the next row.

Each input row holds ``F`` real values: the ``output_size`` target columns first, then any
covariates. At every step the model predicts the *next* row's target values with a Gaussian or
Student-t distribution whose location and scale come from a decoder head on the RNN output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from bayesrnn.data.lags import check_lags
from bayesrnn.models.bayesian import PriorSpec, bayesianize
from bayesrnn.models.layers import Linear
from bayesrnn.models.likelihood import recording
from bayesrnn.models.priors import GaussianPrior
from bayesrnn.models.regularisers import Regularisers
from bayesrnn.models.rnn import State
from bayesrnn.models.sequence_models import make_rnn, model_draws, reinitialise
from bayesrnn.models.validation import check_positive_int

LIKELIHOODS = ("gaussian", "student_t")
MIN_DF = 2.0  # df = 2 + softplus(raw): the predictive variance always exists
INITIAL_DF = 10.0

__all__ = ["INITIAL_DF", "LIKELIHOODS", "MIN_DF", "Forecast", "SequenceRegressor"]


@dataclass(frozen=True, eq=False)
class Forecast:
    """Predictive parameters of real values: ``loc``, ``scale`` and, for Student-t, ``df``.

    All fields share one shape (…, D) (the model gives (T, B, D), or (B, T, D) batch-first);
    ``df`` is None for a Gaussian. Stacks of S posterior draws are Forecasts of shape
    (S, …, D) (see :meth:`stack`).
    """

    loc: Tensor
    scale: Tensor
    df: Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("loc", "scale", "df"):
            value = getattr(self, name)
            if name == "df" and value is None:
                continue
            if not isinstance(value, Tensor) or not value.is_floating_point():
                got = value.dtype if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"Forecast.{name} must be a floating-point tensor, got {got}")
            if value.shape != self.loc.shape:
                raise ValueError(
                    f"Forecast.{name} has shape {tuple(value.shape)}, loc {tuple(self.loc.shape)}"
                )

    @property
    def likelihood(self) -> str:
        return "gaussian" if self.df is None else "student_t"

    @property
    def shape(self) -> torch.Size:
        return self.loc.shape

    def distribution(self) -> dist.Normal | dist.StudentT:
        """One distribution per value (batch shape = ``loc.shape``, no event dims)."""
        if self.df is None:
            return dist.Normal(self.loc, self.scale)
        return dist.StudentT(self.df, self.loc, self.scale)

    def log_prob(self, value: Tensor) -> Tensor:
        """log density of each value, shape of ``loc`` (broadcast)."""
        return self.distribution().log_prob(value)

    @property
    def mean(self) -> Tensor:
        """The predictive mean (the location: Student-t here always has df > 1)."""
        return self.loc

    def cdf(self, value: Tensor) -> Tensor:
        """P(Y ≤ value) per value, in float64 (Student-t through ``scipy.special.stdtr``)."""
        z = (value.double() - self.loc.double()) / self.scale.double()
        if self.df is None:
            return torch.special.ndtr(z)
        from scipy.special import stdtr

        df, z = torch.broadcast_tensors(self.df.double(), z)
        result = stdtr(df.detach().cpu().numpy(), z.detach().cpu().numpy())
        return torch.from_numpy(np.asarray(result, dtype=np.float64)).to(z.device)

    def icdf(self, probability: Tensor | float) -> Tensor:
        """The quantile at ``probability`` (in (0, 1)) per value, in float64."""
        p = torch.as_tensor(probability, dtype=torch.float64, device=self.loc.device)
        loc, scale = self.loc.double(), self.scale.double()
        if self.df is None:
            z = torch.special.ndtri(p)
        else:
            from scipy.special import stdtrit

            df, p = torch.broadcast_tensors(self.df.double(), p)
            quantile = stdtrit(df.detach().cpu().numpy(), p.detach().cpu().numpy())
            z = torch.from_numpy(np.asarray(quantile, dtype=np.float64)).to(loc.device)
        return loc + scale * z

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self.distribution().sample(torch.Size(sample_shape))

    def map(self, fn) -> Forecast:
        """The Forecast with ``fn`` applied to every field (slicing, moving dims, devices)."""
        return Forecast(fn(self.loc), fn(self.scale), None if self.df is None else fn(self.df))

    def __getitem__(self, index) -> Forecast:
        return self.map(lambda t: t[index])

    def detach(self) -> Forecast:
        return self.map(lambda t: t.detach())

    @staticmethod
    def stack(forecasts: Iterable[Forecast], dim: int = 0) -> Forecast:
        """Stack Forecasts of one shape and likelihood along a new dim (S draws → (S, …))."""
        items = list(forecasts)
        if not items or not all(isinstance(f, Forecast) for f in items):
            raise ValueError("stack needs a non-empty sequence of Forecast")
        kinds = {f.likelihood for f in items}
        if len(kinds) > 1:
            raise ValueError(f"cannot stack Forecasts of different likelihoods {sorted(kinds)}")
        df = None if items[0].df is None else torch.stack([f.df for f in items], dim)
        return Forecast(
            torch.stack([f.loc for f in items], dim),
            torch.stack([f.scale for f in items], dim),
            df,
        )


def inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


def _check_values(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must hold real values (a float tensor), got dtype {value.dtype}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return value


class SequenceRegressor(PyroModule):
    """A Pyro model of one-step-ahead forecasts of real-valued multivariate series.

    ``forward(inputs, targets=None, state=None)`` takes (T, B, F) rows ((B, T, F) with
    ``batch_first``; with weight draws in front, inputs may carry the same draw dims in front, one
    input per draw, as the RNN layers read them) and returns ``(forecast, state)``: a
    :class:`Forecast` of the next row's ``output_size`` target columns, each field (T, B, D)
    ((B, T, D) batch-first). ``targets``
    are the next rows, the shape of ``inputs``; their first ``output_size`` columns are observed
    at the site ``obs`` (inside the plates ``sequences`` and ``steps``, ``.to_event(1)`` over
    the D outputs); the other columns are covariates the model reads but does not predict.

    Heads. The decoder ``Linear(hidden, 2·D)`` gives ``loc`` (its first D outputs, used as-is)
    and ``scale = softplus(raw) + min_scale`` (its last D): the noise scale depends on the
    input. ``likelihood="student_t"`` adds degrees of freedom ``df = 2 + softplus(df_raw)``,
    one global value per output column, learned as a *point estimate* (a plain parameter that
    is never a weight site, whatever the prior), started at 10; df > 2 keeps the predictive
    variance finite, so the scale always measures a spread.

    Weights (``rnn.weight_ih_l0``, …, ``decoder.weight``, ``decoder.bias``) are sample sites
    with ``prior`` unless named in ``deterministic``; ``prior=None`` gives a plain network.
    One weight draw per call. ``regularisers`` (locked input/hidden/output dropout, zoneout, …)
    act in the RNN as in the other models; Gal's guide drives them. ``residual=True`` adds the
    current row's targets to ``loc``: the network forecasts the change, so a series that leaves
    its training range (a trend) stays within reach of a bounded network.

    ``linear_skip=True`` adds a linear autoregression to ``loc``: ``skip.weight`` (D, F), a
    weight site like the others (started at 0), times the input row (targets, lags,
    covariates), beside the network; with lags it holds a linear AR model, whose multi-step
    forecasts stay stable where the network's own feedback may drift.

    ``lags``: the lags whose columns follow the targets in each row (see
    :mod:`bayesrnn.data.lags`); the forward pass reads them as any other input, and
    :func:`bayesrnn.evaluation.sample_paths` builds them from a path's own earlier values.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        output_size: int = 1,
        likelihood: str = "gaussian",
        batch_first: bool = False,
        *,
        prior: PriorSpec | None = GaussianPrior(1.0),
        deterministic: Iterable[str] = (),
        regularisers: Regularisers | Mapping[str, float] | None = None,
        init_range: float | None = None,
        min_scale: float = 1e-3,
        residual: bool = False,
        lags: Iterable[int] = (),
        linear_skip: bool = False,
    ) -> None:
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        check_positive_int("output_size", output_size)
        if output_size > input_size:
            raise ValueError(
                f"output_size ({output_size}) exceeds input_size ({input_size}): the targets are "
                "the first output_size columns of each row"
            )
        lags = check_lags(tuple(lags))
        if output_size * (1 + len(lags)) > input_size:
            raise ValueError(
                f"{len(lags)} lags of {output_size} target(s) need input_size >= "
                f"{output_size * (1 + len(lags))}, got {input_size}"
            )
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if not (isinstance(min_scale, int | float) and min_scale > 0 and math.isfinite(min_scale)):
            raise ValueError(f"min_scale must be a positive number, got {min_scale!r}")
        super().__init__()
        self.mc_dropout = False
        self.rnn = make_rnn(cell, input_size, hidden_size, num_layers, regularisers)
        self.decoder = Linear(hidden_size, 2 * output_size)
        if linear_skip:
            self.skip = Linear(input_size, output_size, bias=False)
        reinitialise(self, init_range)
        if linear_skip:  # starts as no autoregression at all, the prior's mean
            with torch.no_grad():
                self.skip.weight.zero_()
        self.init_range = init_range  # how the weights were drawn: ensemble members redraw them
        if prior is not None:
            bayesianize(self, prior, deterministic)
        if likelihood == "student_t":  # after bayesianize: always a point estimate
            raw = inverse_softplus(INITIAL_DF - MIN_DF)
            self.df_raw = nn.Parameter(torch.full((output_size,), raw))
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.output_size = output_size
        self.likelihood = likelihood
        self.batch_first = bool(batch_first)
        self.min_scale = float(min_scale)
        self.residual = bool(residual)
        self.lags = lags
        self.linear_skip = bool(linear_skip)

    @property
    def regularisers(self) -> Regularisers:
        return self.rnn.regularisers

    @regularisers.setter
    def regularisers(self, value: Regularisers | Mapping[str, float] | None) -> None:
        self.rnn.regularisers = value

    def df(self) -> Tensor | None:
        """The Student-t degrees of freedom per output column (None for a Gaussian)."""
        if self.likelihood != "student_t":
            return None
        return MIN_DF + nn.functional.softplus(self.df_raw)

    def forward(
        self, inputs: Tensor, targets: Tensor | None = None, state: State | None = None
    ) -> tuple[Forecast, State]:
        inputs = self._check_inputs(inputs)
        if targets is not None:
            _check_values("targets", targets)
            if targets.shape != inputs.shape:
                raise ValueError(
                    f"targets must be the next rows, the shape of inputs {tuple(inputs.shape)}, "
                    f"got {tuple(targets.shape)}"
                )
        draws, lead = model_draws(self, nesting=2)
        x = inputs.transpose(-3, -2) if self.batch_first else inputs
        output, state = self.rnn(x, state)
        if draws and output.dim() == 3:  # only the decoder has draws: every draw sees h
            output = output.expand(*draws, *output.shape)
        if self.batch_first:
            output = output.transpose(-3, -2)
        raw = self.decoder(output)
        if draws:  # (*draws, T, B, 2D) → left of the model's plates, where Pyro put the draws
            raw = raw.reshape(*lead, *raw.shape[-3:])
        if self.linear_skip:
            raw = self._add_skip(raw, x, draws, lead)
        forecast = self._head(raw)
        if self.residual:  # the network predicts the change from the current row's targets
            forecast = Forecast(
                forecast.loc + inputs[..., : self.output_size], forecast.scale, forecast.df
            )
        batch_dim = 0 if self.batch_first else 1
        if targets is not None:
            observe_values(forecast, targets[..., : self.output_size], batch_dim)
        elif recording():  # Predictive and traces: the next rows are sampled at ``obs``
            observe_values(forecast, None, batch_dim)
        return forecast, state

    def _add_skip(self, raw: Tensor, x: Tensor, draws, lead) -> Tensor:
        """``raw`` with the linear autoregression W·row added to its location half."""
        if draws and x.dim() == 3:  # one input shared by every draw
            x = x.expand(*draws, *x.shape)
        skip = self.skip(x)
        if self.batch_first:
            skip = skip.transpose(-3, -2)
        if draws:
            skip = skip.reshape(*lead, *skip.shape[-3:])
        d = self.output_size
        return torch.cat([raw[..., :d] + skip, raw[..., d:].expand_as(skip)], -1)

    def _head(self, raw: Tensor) -> Forecast:
        d = self.output_size
        loc = raw[..., :d]
        scale = nn.functional.softplus(raw[..., d:]) + self.min_scale
        df = self.df()
        return Forecast(loc, scale, None if df is None else df.expand_as(loc))

    def _check_inputs(self, inputs: object) -> Tensor:
        inputs = _check_values("inputs", inputs)
        if inputs.dim() < 3:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise ValueError(
                f"inputs must be 3-D {layout} (draw dims may lead), got shape {tuple(inputs.shape)}"
            )
        if inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"inputs have {inputs.shape[-1]} features per row, the model's input_size is "
                f"{self.input_size}"
            )
        return inputs


def observe_values(forecast: Forecast, values: Tensor | None, batch_dim: int) -> None:
    """The likelihood: one D-dimensional observation per step and sequence.

    ``values`` are (T, B, D) (``batch_dim=1``) or (B, T, D) (``batch_dim=0``); the batch lies in
    the plate ``sequences``, time in ``steps``, and the D outputs form the event; ``None``
    samples them.
    """
    steps_dim = 1 - batch_dim
    shape = forecast.loc.shape[-3:-1]
    with (
        pyro.plate("sequences", shape[batch_dim], dim=batch_dim - 2),
        pyro.plate("steps", shape[steps_dim], dim=steps_dim - 2),
    ):
        pyro.sample("obs", forecast.distribution().to_event(1), obs=values)
