"""``bayesrnn compare``: rank runs by their held-out elpd with ``arviz_stats.compare``.

Each run is read from its ArviZ export (``RUN/posterior.nc``, or a ``.nc`` file named
directly), whatever its guide: ``compare`` needs only the per-observation log-likelihood draws.
Runs are comparable only when they were scored on the same observations: the same ids at the
same positions of the same split, which the observations' fingerprint
(:func:`bayesrnn.evaluation.arviz_layout.observations_fingerprint`, recomputed here from
``observed_data``) decides, and the same words: each run's vocabulary numbers its own words, so
two texts can encode to the same ids; the exports' ``text_fingerprint`` (of the observed words,
written since it exists; an export without it is compared on ids alone) decides that. Language
models exported with different ``evaluation.split``, ``evaluation.max_tokens``,
``trainer.eval_batch_size`` or vocabulary are refused, and so is a ``log_likelihood`` that is
not one float per observation and draw.

Two estimates of the elpd, ranked, differenced and weighted by ``arviz_stats.compare``:

- ``"holdout"`` (default): the tokens were never trained on, so the held-out log predictive
  density elpd_i = log mean_s p(y_i | θ_s) is the estimate itself (a one-fold cross-validation,
  passed to ``compare`` as an ``ELPDDataLOOKFold``), se = sqrt(N·var_i elpd_i);
- ``"loo"``: ``arviz_stats``' PSIS-LOO on the same draws. It leaves each token out of a
  posterior that never held it, giving elpd_i = −log mean_s 1/p(y_i | θ_s) <= the held-out
  value; the gap (loo's ``p``) grows with the spread of the draws, so a wide mean-field
  posterior pays more than Gal's (0.6 against 0.1 nats a token in the ArviZ guide's toy runs)
  and the two rankings can disagree. It needs at least :data:`MIN_DRAWS` draws and reports Pareto k̂.

Values are per observation (token, sequence or forecast value): totals grow with the split,
per-token values compare with a perplexity (exp(−elpd per token)).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bayesrnn.app.export import no_export_reason
from bayesrnn.app.run_dir import JobError, RunDir, read_run_config
from bayesrnn.evaluation.psis_loo import psis_loo as loo_of

MIN_DRAWS = 25  # arviz_stats' PSIS: a Pareto tail of S/5 draws, at least 5
ESTIMATES = ("holdout", "loo")

__all__ = [
    "ESTIMATES",
    "MIN_DRAWS",
    "ComparedRun",
    "Comparison",
    "compare_runs",
    "holdout_elpd",
    "loo_of",
]


@dataclass(frozen=True)
class ComparedRun:
    """One row of the comparison; every ``*_per_token`` value is per observation.

    ``elpd``/``se`` (totals) and the per-token values are of the comparison's estimate;
    ``lpd_per_token`` is always the held-out value, ``p_loo`` only with ``estimate="loo"``.
    """

    rank: int
    run: str
    path: str
    guide: str
    elpd_per_token: float
    se_per_token: float
    elpd_diff_per_token: float
    dse_per_token: float
    weight: float
    lpd_per_token: float
    elpd: float
    se: float
    p_loo: float | None
    diagnostic: str


@dataclass(frozen=True)
class Comparison:
    """``arviz_stats.compare`` of runs scored on the same observations, best first."""

    runs: tuple[ComparedRun, ...]
    observations: int
    draws: dict[str, int]
    split: str | None
    fingerprint: str
    method: str
    estimate: str

    def to_dict(self) -> dict:
        return {
            "observations": self.observations,
            "split": self.split,
            "fingerprint": self.fingerprint,
            "estimate": self.estimate,
            "method": self.method,
            "draws": dict(self.draws),
            "runs": [asdict(run) for run in self.runs],
        }

    def table(self) -> str:
        """The comparison as aligned text, one run a line."""
        what = f"split {self.split}" if self.split else "the same observations"
        how = (
            "held-out log predictive density"
            if self.estimate == "holdout"
            else "PSIS-LOO (lpd: the held-out value)"
        )
        lines = [
            f"{self.observations} observations of {what} (fingerprint {self.fingerprint[:12]}); "
            f"elpd per observation: {how}; arviz_stats.compare, {self.method} weights",
        ]
        loo = self.estimate == "loo"
        header = ("rank", "run", "elpd", "se", "elpd_diff", "dse", "weight")
        header += ("lpd", "note") if loo else ()
        rows = [
            (
                str(r.rank),
                r.run,
                f"{r.elpd_per_token:.4f}",
                f"{r.se_per_token:.4f}",
                f"{r.elpd_diff_per_token:.4f}",
                f"{r.dse_per_token:.4f}",
                f"{r.weight:.3f}",
                *((f"{r.lpd_per_token:.4f}", r.diagnostic) if loo else ()),
            )
            for r in self.runs
        ]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            cells = [
                cell.ljust(width) if name in ("run", "note") else cell.rjust(width)
                for name, cell, width in zip(header, row, widths, strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def _export_path(run: str | os.PathLike[str]) -> Path:
    path = Path(run).expanduser()
    if path.is_dir():
        run = RunDir(path)
        if not run.posterior.is_file():
            reason = no_export_reason(read_run_config(run))  # not a run: says so
            if reason is not None:
                raise JobError(f"{path} cannot be compared: {reason}")
            raise JobError(
                f"{path} has no posterior.nc: write it with `bayesrnn export --out {path}`"
            )
        return run.posterior
    if path.is_file():
        return path
    if path.exists():  # a FIFO or a device: h5py would block on it or read without end
        raise JobError(f"{path} is not a regular file; name a run directory or an ArviZ file")
    raise JobError(f"{path}: no such run directory or ArviZ file")


def _refuse_external_storage(path: Path) -> None:
    """HDF5 lets a dataset keep its values in other files (external storage, virtual
    datasets): reading such an export would read files outside the run. None is ever written
    by the package, so one is refused before xarray reads anything."""
    import h5py

    outside: list[str] = []

    def visit(name: str, item) -> None:
        if isinstance(item, h5py.Dataset) and (item.external or item.is_virtual):
            outside.append(name)

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(visit)
    except OSError as error:
        raise JobError(f"{path} is not an ArviZ netCDF file ({error})") from None
    if outside:
        raise JobError(
            f"{path}: {outside[0]} keeps its values in another file (HDF5 external storage); "
            "refused: an export of this package holds its own data"
        )


def _open(path: Path):
    import xarray as xr

    _refuse_external_storage(path)
    try:
        tree = xr.open_datatree(path, engine="h5netcdf")
    except (OSError, ValueError) as error:
        raise JobError(f"{path} is not an ArviZ netCDF file ({error})") from None
    try:
        tree.load()
    finally:
        tree.close()
    if "log_likelihood" not in tree.children or "obs" not in tree["log_likelihood"]:
        raise JobError(f"{path} has no log_likelihood['obs'] to compare")
    if "observed_data" not in tree.children or "obs" not in tree["observed_data"]:
        raise JobError(f"{path} has no observed_data['obs'] to tell which tokens it scored")
    return tree


def _check_log_likelihood(label: str, tree) -> None:
    """``log_likelihood['obs']``: floats over (chain, draw) and exactly the dims and sizes of
    ``observed_data['obs']``; each fault is one line naming ``label``."""
    ll, obs = tree["log_likelihood"]["obs"], tree["observed_data"]["obs"]
    where = f"{label}: log_likelihood['obs']"
    if ll.dtype.kind != "f":
        raise JobError(f"{where} holds {ll.dtype} values, not log-densities (floats)")
    if "chain" not in ll.dims or "draw" not in ll.dims:
        raise JobError(f"{where} has dims {tuple(ll.dims)}, without the (chain, draw) of draws")
    dims = tuple(d for d in ll.dims if d not in ("chain", "draw"))
    if dims != tuple(obs.dims):
        raise JobError(
            f"{where} has observation dims {dims}, observed_data['obs'] {tuple(obs.dims)}: "
            "not the same observations"
        )
    covered = int(np.prod([ll.sizes[d] for d in dims]))
    if covered != obs.size or any(ll.sizes[d] != obs.sizes[d] for d in dims):
        raise JobError(
            f"{where} covers {covered} of the {obs.size} observations of observed_data['obs']"
        )
    for dim in dims:
        if dim in ll.coords and dim in obs.coords and not np.array_equal(ll[dim], obs[dim]):
            raise JobError(f"{where} and observed_data['obs'] label the {dim!r} dim differently")
    if bool(np.isnan(ll.values).any()):
        raise JobError(f"{where} holds NaN: not a log-density of every observation")


def _text_fingerprint(tree) -> str | None:
    value = tree["observed_data"].attrs.get("text_fingerprint")
    return None if value is None else str(value)


def _refuse_other_texts(labels: list[str], trees: list) -> None:
    """Runs scored on the same ids of other words: refused when their exports say so."""
    texts = {label: _text_fingerprint(tree) for label, tree in zip(labels, trees, strict=True)}
    known = {label: text for label, text in texts.items() if text is not None}
    if len(set(known.values())) > 1:
        shown = " vs ".join(f"{label} (text {text[:12]})" for label, text in known.items())
        raise JobError(
            "the runs scored the same token ids but different words (each run's vocabulary "
            f"numbers its own text), so their elpd is not comparable: {shown}; export them on "
            "the same text"
        )


def _fingerprint(tree) -> str:
    from bayesrnn.evaluation.arviz_layout import observations_fingerprint

    obs = tree["observed_data"]["obs"]
    return observations_fingerprint(obs.values, *(obs[dim].values for dim in obs.dims))


def _label(given: str | os.PathLike[str]) -> str:
    text = str(given)
    return text.rstrip("/") or text


def holdout_elpd(tree):
    """The held-out elpd of an export as ``arviz_stats``' ELPD data (a one-fold
    ``ELPDDataLOOKFold``): elpd_i = log mean_s p(y_i | θ_s), se = sqrt(N·var_i elpd_i).

    ``p`` is NaN: there is no in-sample fit to subtract it from.
    """
    import xarray as xr
    from arviz_stats.utils import ELPDDataLOOKFold
    from scipy.special import logsumexp

    ll = tree["log_likelihood"]["obs"]
    sample = [d for d in ll.dims if d in ("chain", "draw")]
    draws = int(np.prod([ll.sizes[d] for d in sample]))
    values = np.asarray(ll.transpose(*sample, ...).values, dtype=np.float64)
    pointwise = logsumexp(values.reshape(draws, -1), axis=0) - math.log(draws)
    obs_dims = [d for d in ll.dims if d not in sample]
    elpd_i = xr.DataArray(
        pointwise.reshape([ll.sizes[d] for d in obs_dims]),
        dims=obs_dims,
        coords={d: ll[d] for d in obs_dims if d in ll.coords},
    )
    n = pointwise.size
    return ELPDDataLOOKFold(
        elpd=float(pointwise.sum()),
        se=float(math.sqrt(n * pointwise.var())),
        p=math.nan,
        n_samples=draws,
        n_data_points=n,
        scale="log",
        warning=False,
        good_k=None,
        elpd_i=elpd_i,
        n_folds=1,
    )


def _refuse_mismatch(labels: list[str], fingerprints: list[str], trees: list) -> None:
    groups: dict[str, list[int]] = {}
    for index, fingerprint in enumerate(fingerprints):
        groups.setdefault(fingerprint, []).append(index)
    if len(groups) == 1:
        return
    parts = []
    for fingerprint, members in groups.items():
        tree = trees[members[0]]
        split = tree["observed_data"].attrs.get("split", tree.attrs.get("split", "unknown"))
        size = tree["observed_data"]["obs"].size
        names = ", ".join(labels[i] for i in members)
        parts.append(f"{names} (split {split}, {size} observations, {fingerprint[:12]})")
    raise JobError(
        "the runs were scored on different observations, so their elpd is not comparable: "
        + " vs ".join(parts)
        + "; export them on the same data (evaluation.split, evaluation.max_tokens, "
        "trainer.eval_batch_size and the vocabulary must agree)"
    )


def _too_few_draws(label: str, draws: int, tree) -> str:
    """Why ``compare`` refuses ``label``, and the remedy: more draws, or for an ensemble (whose
    draws are its members: repeating them would fake draws) more members."""
    if tree.attrs.get("guide") == "EnsembleGuide":
        return (
            f"{label} is an ensemble of {draws} members, its only posterior draws; compare needs "
            f"at least {MIN_DRAWS}: train it with guide.members >= {MIN_DRAWS}"
        )
    return (
        f"{label} has {draws} posterior draws; compare needs at least "
        f"{MIN_DRAWS}: re-export it with `bayesrnn export --out RUN --samples 100 --force`"
    )


def compare_runs(
    runs: Sequence[str | os.PathLike[str]],
    *,
    estimate: str = "holdout",
    method: str = "stacking",
) -> Comparison:
    """Rank ``runs`` (run directories or ArviZ ``.nc`` files, at least two) by their elpd on
    the exported held-out observations: ``estimate`` "holdout" or "loo" (module docstring).

    Refuses (:class:`JobError`) a run without an export, an export with fewer than
    :data:`MIN_DRAWS` draws or whose ``log_likelihood`` is not one float per observation and
    draw, the same file twice, and runs scored on different observations or words.
    ``method`` is ``arviz_stats.compare``'s weighting ("stacking", "BB-pseudo-BMA",
    "pseudo-BMA").
    """
    if isinstance(runs, str | os.PathLike) or len(runs) < 2:
        raise JobError("compare needs at least two runs")
    if estimate not in ESTIMATES:
        raise JobError(f"estimate must be one of {', '.join(ESTIMATES)}, got {estimate!r}")
    if method not in ("stacking", "BB-pseudo-BMA", "pseudo-BMA"):
        raise JobError(f"method must be stacking, BB-pseudo-BMA or pseudo-BMA, got {method!r}")
    paths = [_export_path(run) for run in runs]
    seen: dict[Path, str] = {}
    for path, run in zip(paths, runs, strict=True):
        if path.resolve() in seen:
            raise JobError(f"{run} and {seen[path.resolve()]} are the same export ({path})")
        seen[path.resolve()] = str(run)
    labels = [_label(run) for run in runs]
    trees = [_open(path) for path in paths]
    draws = {}
    for label, tree in zip(labels, trees, strict=True):
        _check_log_likelihood(label, tree)
        obs = tree["log_likelihood"]["obs"]
        draws[label] = int(obs.sizes.get("chain", 1) * obs.sizes.get("draw", 1))
        if draws[label] < MIN_DRAWS:
            raise JobError(_too_few_draws(label, draws[label], tree))
    fingerprints = [_fingerprint(tree) for tree in trees]
    _refuse_mismatch(labels, fingerprints, trees)
    _refuse_other_texts(labels, trees)

    import arviz_stats

    with warnings.catch_warnings():
        # k̂ warnings: compare's diag_elpd column carries them into the table instead
        warnings.simplefilter("ignore", UserWarning)
        score = loo_of if estimate == "loo" else holdout_elpd
        elpds = {label: score(tree) for label, tree in zip(labels, trees, strict=True)}
        table = arviz_stats.compare(elpds, method=method, round_to="none")
        held_out = (
            {label: holdout_elpd(tree) for label, tree in zip(labels, trees, strict=True)}
            if estimate == "loo"
            else elpds
        )
    n = int(trees[0]["observed_data"]["obs"].size)
    by_label = dict(zip(labels, zip(paths, trees, strict=True), strict=True))
    rows = []
    for label, row in table.iterrows():
        path, tree = by_label[label]
        note = str(row.get("diag_elpd", "") or "")
        rows.append(
            ComparedRun(
                rank=int(row["rank"]),
                run=str(label),
                path=str(path),
                guide=str(tree.attrs.get("guide", "unknown")),
                elpd_per_token=float(row["elpd"]) / n,
                se_per_token=float(row["se"]) / n,
                elpd_diff_per_token=float(row["elpd_diff"]) / n,
                dse_per_token=float(row["dse"]) / n,
                weight=float(row["weight"]),
                lpd_per_token=held_out[label].elpd / n,
                elpd=float(row["elpd"]),
                se=float(row["se"]),
                p_loo=float(row["p"]) if estimate == "loo" else None,
                diagnostic=note if note and note.lower() != "nan" else "",
            )
        )
    split = trees[0]["observed_data"].attrs.get("split")
    if any(not math.isfinite(r.elpd) for r in rows):
        raise JobError("arviz_stats.compare gave a non-finite elpd; check the exports")
    return Comparison(
        runs=tuple(rows),
        observations=n,
        draws=draws,
        split=str(split) if split is not None else None,
        fingerprint=fingerprints[0],
        method=method,
        estimate=estimate,
    )
