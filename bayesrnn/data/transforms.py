"""Variance-stabilising transforms of positive target series, and the way back to data units.

A forecaster of a positive series whose spread grows with its level (counts, sales, sunspots)
fits better on log x, √x or the Box-Cox (x^λ − 1)/λ than on x. The model then sees
z = (g(x) − m)/s, with g the transform and m, s the mean and standard deviation of g(x) over
the training split. Its predictive density of z becomes one of x by the change of variables

    p_X(x) = p_Z(z(x)) · |dz/dx|,   dz/dx = g'(x)/s,

so a negative log density in data units is the model's NLL minus log g'(x) plus log s.
All transforms here are increasing, so quantiles and PIT values carry over unchanged.

The Box-Cox λ is fitted on the training split only (maximum likelihood,
``scipy.stats.boxcox_normmax(method="mle")``), one per target column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bayesrnn.data.checksums import DataError

__all__ = [
    "AUTO_TRANSFORM",
    "TRANSFORMS",
    "SeriesTransform",
    "TargetUnits",
    "auto_transform",
    "check_domain",
]

TRANSFORMS = ("none", "log", "sqrt", "boxcox")
AUTO_TRANSFORM = "auto"  # chosen from the data by auto_transform


def auto_transform(values: np.ndarray, train_rows: int) -> str:
    """What ``data.transform=auto`` picks for target values (N, D): √ for a count-like series,
    one never negative whose training values come within one standard deviation of 0 (sunspots:
    lowest 0, sd 38), where the spread grows with the level and a Gaussian on the raw values
    puts mass below 0; ``none`` for anything else (co2: lowest 313 ppm, sd 10)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    train = values[:train_rows]
    near_zero = train.min(0) < train.std(0)
    return "sqrt" if bool((values >= 0).all() and near_zero.all()) else "none"


_FLOOR = 1e-12  # the inverse Box-Cox base (λt + 1) and √x are clamped at 0 from below


def _check_kind(kind: object) -> str:
    if kind not in TRANSFORMS:
        raise ValueError(f"data.transform must be one of {list(TRANSFORMS)}, got {kind!r}")
    return str(kind)


def check_domain(kind: str, values: np.ndarray, columns: Sequence[str]) -> None:
    """A one-line DataError for the first value outside transform ``kind``'s domain (log and
    Box-Cox: positive values; √: values ≥ 0)."""
    kind = _check_kind(kind)
    if kind == "none":
        return
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    bad = values < 0 if kind == "sqrt" else values <= 0
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        what, need = ("below 0", "values ≥ 0") if kind == "sqrt" else ("≤ 0", "positive values")
        raise DataError(
            f"column {columns[col]!r} has {int(bad[:, col].sum())} value(s) {what} (first "
            f"{values[row, col]:g} at row {row}); data.transform={kind} needs {need}"
        )


@dataclass(frozen=True)
class SeriesTransform:
    """g applied to each target column: ``kind`` none, log, sqrt or boxcox; ``lmbda`` the
    Box-Cox λ per target column (None otherwise)."""

    kind: str = "none"
    lmbda: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if (self.kind == "boxcox") != (self.lmbda is not None):
            raise ValueError("a Box-Cox transform needs one λ per target column, others none")

    @classmethod
    def fit(cls, kind: str, values: np.ndarray, columns: Sequence[str]) -> SeriesTransform:
        """The transform ``kind`` of target columns, its Box-Cox λ fitted on ``values`` (N, D):
        pass the training rows, after :func:`check_domain` of the whole series."""
        kind = _check_kind(kind)
        if kind == "none":
            return cls()
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        if kind != "boxcox":
            return cls(kind)
        from scipy import stats

        lmbda = tuple(
            float(stats.boxcox_normmax(values[:, d], method="mle")) for d in range(values.shape[1])
        )
        for name, value in zip(columns, lmbda, strict=True):
            if not math.isfinite(value):
                raise DataError(f"column {name!r}: no Box-Cox λ fits its training values")
        return cls(kind, lmbda)

    def _lmbda(self, like: Tensor) -> Tensor:
        return torch.as_tensor(self.lmbda, dtype=like.dtype, device=like.device)

    def forward(self, x: Tensor) -> Tensor:
        """g(x), elementwise over (…, D)."""
        if self.kind == "log":
            return x.log()
        if self.kind == "sqrt":
            return x.sqrt()
        if self.kind == "boxcox":
            lam = self._lmbda(x)
            power = (x.pow(lam) - 1) / torch.where(lam == 0, torch.ones_like(lam), lam)
            return torch.where(lam == 0, x.log(), power)
        return x

    def inverse(self, t: Tensor) -> Tensor:
        """g⁻¹(t); where t leaves g's range (√ below 0, Box-Cox past −1/λ) the bound's value."""
        if self.kind == "log":
            return t.exp()
        if self.kind == "sqrt":
            return t.clamp_min(0).square()
        if self.kind == "boxcox":
            lam = self._lmbda(t)
            safe = torch.where(lam == 0, torch.ones_like(lam), lam)
            base = (lam * t + 1).clamp_min(_FLOOR)
            return torch.where(lam == 0, t.exp(), base.pow(1 / safe))
        return t

    def log_derivative(self, x: Tensor) -> Tensor:
        """log g'(x): log 1/x, log 1/(2√x), (λ − 1) log x, or 0."""
        if self.kind == "log":
            return -x.log()
        if self.kind == "sqrt":
            return -math.log(2) - 0.5 * x.log()
        if self.kind == "boxcox":
            return (self._lmbda(x) - 1) * x.log()
        return torch.zeros_like(x)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lambda": None if self.lmbda is None else list(self.lmbda)}

    @classmethod
    def from_dict(cls, raw: Mapping | None) -> SeriesTransform:
        if raw is None:
            return cls()
        lmbda = raw.get("lambda")
        return cls(str(raw["kind"]), None if lmbda is None else tuple(float(v) for v in lmbda))


@dataclass(frozen=True, eq=False)
class TargetUnits:
    """The map between the model's standardised targets z and the data's units x:
    z = (g(x) − mean)/scale, for the D target columns."""

    transform: SeriesTransform
    mean: Tensor  # (D,) float64, of g(x) over the training split
    scale: Tensor  # (D,) float64

    def _moments(self, like: Tensor) -> tuple[Tensor, Tensor]:
        d = like.shape[-1]
        return (
            self.mean[:d].to(like.device, like.dtype),
            self.scale[:d].to(like.device, like.dtype),
        )

    def to_model(self, x: Tensor) -> Tensor:
        """Data values (…, D) as the model sees them."""
        mean, scale = self._moments(x)
        return (self.transform.forward(x) - mean) / scale

    def to_data(self, z: Tensor) -> Tensor:
        """Model values (…, D) back in the data's units."""
        mean, scale = self._moments(z)
        return self.transform.inverse(z * scale + mean)

    def log_jacobian(self, x: Tensor) -> Tensor:
        """log dz/dx at data values x (…, D): add it to log p(z) for log p(x)."""
        _, scale = self._moments(x)
        return self.transform.log_derivative(x) - scale.log()

    def to_dict(self) -> dict:
        return {
            **self.transform.to_dict(),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
        }
