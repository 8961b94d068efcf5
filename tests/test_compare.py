"""``bayesrnn compare`` and ``compare_runs``: arviz_stats.compare of runs on the same tokens."""

import json
import math
import warnings
from pathlib import Path

import arviz_stats
import numpy as np
import pytest
import torch
import xarray as xr

from bayesrnn.app.cli import main
from bayesrnn.app.compare import MIN_DRAWS, compare_runs, loo_of
from bayesrnn.app.config import EvaluationConfig
from bayesrnn.app.config_files import resolve_config, write_config
from bayesrnn.app.export import no_export_reason
from bayesrnn.app.run_dir import JobError
from bayesrnn.evaluation import psis_loo
from bayesrnn.evaluation.arviz_export import export_language_model
from bayesrnn.inference import GalDropoutGuide, MeanFieldGuide
from bayesrnn.models import GaussianPrior, LanguageModel

V = 13
STREAM = (torch.arange(120) * 5 + torch.arange(120) // 7) % V
DRAWS = MIN_DRAWS


@pytest.fixture(autouse=True)
def _one_thread(_fresh_pyro_state):
    torch.set_num_threads(1)


def write_run(folder: Path, guide: str, stream=STREAM, draws=DRAWS, batch_size=4) -> Path:
    """A run directory holding only the export compare reads.

    Gal's masks on 16 inputs and 16 hidden units: 2^32 patterns, so no token's largest
    importance ratios tie and arviz_stats' own PSIS runs on every token.
    """
    model = LanguageModel(V, 16, 16, num_layers=1, prior=GaussianPrior(1.0))
    gal = GalDropoutGuide(model, input=0.3, hidden=0.5) if guide == "gal" else None
    q = gal or MeanFieldGuide(model)
    tree = export_language_model(
        model, q, stream, draws, batch_size=batch_size, bptt=8, split="test"
    )
    folder.mkdir(parents=True)
    tree.to_netcdf(folder / "posterior.nc", engine="h5netcdf")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("compare")
    torch.manual_seed(0)
    return [write_run(root / "bbb", "mean_field"), write_run(root / "gal", "gal")]


def test_holdout_comparison_is_the_log_mean_density_of_the_draws(runs) -> None:
    result = compare_runs(runs)
    n = 4 * (120 // 4 - 1)  # 4 sequences of 30 tokens, 29 targets each
    assert result.observations == n and result.split == "test" and result.estimate == "holdout"
    pointwise = {}
    for run in runs:  # independently: log mean_s p(y_i | θ_s) from the file
        with xr.open_datatree(run / "posterior.nc", engine="h5netcdf") as tree:
            ll = tree.log_likelihood.obs.to_numpy()[0]
        pointwise[str(run)] = np.logaddexp.reduce(ll, axis=0) - math.log(DRAWS)
    best, other = result.runs
    assert best.elpd_per_token >= other.elpd_per_token and best.rank == 0 and other.rank == 1
    for row in result.runs:
        elpd_i = pointwise[row.run]
        assert row.elpd_per_token == pytest.approx(elpd_i.mean(), rel=1e-12)
        assert row.lpd_per_token == row.elpd_per_token and row.p_loo is None
        assert row.se_per_token == pytest.approx(math.sqrt(n * elpd_i.var()) / n, rel=1e-9)
    diff = pointwise[other.run] - pointwise[best.run]
    assert other.elpd_diff_per_token == pytest.approx(diff.mean(), rel=1e-9)
    assert other.dse_per_token == pytest.approx(math.sqrt(n * diff.var()) / n, rel=1e-6)
    assert best.elpd_diff_per_token == 0.0 and best.weight + other.weight == pytest.approx(1.0)
    assert {r.guide for r in result.runs} == {"MeanFieldGuide", "GalDropoutGuide"}


def test_loo_comparison_matches_arviz_stats_per_token(runs) -> None:
    result = compare_runs(runs, estimate="loo")
    trees = {str(run): xr.open_datatree(run / "posterior.nc", engine="h5netcdf") for run in runs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = arviz_stats.compare(trees, round_to="none")
    n = result.observations
    assert [r.run for r in result.runs] == list(table.index)
    for row in result.runs:
        expected = table.loc[row.run]
        assert row.rank == expected["rank"]
        assert row.elpd_per_token == pytest.approx(expected["elpd"] / n)
        assert row.se_per_token == pytest.approx(expected["se"] / n)
        assert row.elpd_diff_per_token == pytest.approx(expected["elpd_diff"] / n)
        assert row.dse_per_token == pytest.approx(expected["dse"] / n)
        assert row.weight == pytest.approx(expected["weight"])
        assert row.p_loo == pytest.approx(expected["p"])
        # elpd_loo = lpd − p_loo: below the held-out density of the same draws
        assert row.elpd_per_token <= row.lpd_per_token + 1e-12
        assert row.elpd_per_token == pytest.approx(row.lpd_per_token - row.p_loo / n)
    for tree in trees.values():
        tree.close()


def test_loo_of_ties_uses_plain_importance_sampling_on_tied_tokens() -> None:
    """Hidden-only dropout on 2 units: the first target of each sequence (h₀ = 0) scores the
    same under every mask, which arviz_stats.loo refuses; the others keep arviz's PSIS."""
    model = LanguageModel(V, 3, 2, num_layers=1, prior=GaussianPrior(1.0))
    guide = GalDropoutGuide(model, hidden=0.5)
    tree = export_language_model(model, guide, STREAM, 50, batch_size=4, bptt=8)
    with pytest.raises(ValueError, match="tail values are the same"):
        arviz_stats.loo(tree, pointwise=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k̂ above the threshold for 50 draws
        loo = psis_loo(tree)
    assert loo_of is psis_loo  # compare's estimate="loo" is the same call
    ll = tree.log_likelihood.obs.to_numpy()[0]  # (draw, token)
    constant = np.ptp(ll, axis=0) == 0
    assert constant[[0, 29, 58, 87]].all()  # first targets of the 4 sequences of 30
    # a constant column: every leave-one-out weight is equal, so elpd_i is the value itself
    np.testing.assert_allclose(loo.elpd_i.to_numpy()[constant], ll[0, constant], rtol=1e-12)
    assert np.all(loo.pareto_k.to_numpy()[constant] == 0)
    # the rest as arviz_stats computes them on their own (where their tails do not tie)
    top = np.sort(-ll - (-ll).max(axis=0), axis=0)[-10:]
    free = np.flatnonzero(np.ptp(top, axis=0) > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        alone = arviz_stats.loo(tree.isel(token=free), pointwise=True)
    np.testing.assert_allclose(loo.elpd_i.to_numpy()[free], alone.elpd_i.to_numpy(), 1e-10)
    np.testing.assert_allclose(loo.pareto_k.to_numpy()[free], alone.pareto_k.to_numpy())
    assert math.isfinite(loo.elpd)


def test_compare_refuses_runs_scored_on_other_tokens(runs, tmp_path) -> None:
    shifted = write_run(tmp_path / "shifted", "mean_field", stream=STREAM.roll(1))
    other_batch = write_run(tmp_path / "batch", "mean_field", batch_size=3)
    for odd in (shifted, other_batch):
        with pytest.raises(JobError, match="different observations") as error:
            compare_runs([*runs, odd])
        assert str(odd) in str(error.value) and str(runs[0]) in str(error.value)


def test_compare_refuses_missing_exports_too_few_draws_and_repeats(runs, tmp_path) -> None:
    empty = tmp_path / "untrained"
    empty.mkdir()
    with pytest.raises(JobError, match=r"not a bayesrnn run directory \(no config\.toml\)"):
        compare_runs([runs[0], empty])
    write_config(resolve_config(flags={"guide": {"name": "mean_field"}}), empty / "config.toml")
    with pytest.raises(JobError, match=r"bayesrnn export --out"):
        compare_runs([runs[0], empty])
    # a deterministic network: no advice to export what export refuses
    plain = tmp_path / "plain"
    plain.mkdir()
    write_config(resolve_config(flags={"guide": {"name": "none"}}), plain / "config.toml")
    with pytest.raises(JobError, match="cannot be compared: a deterministic network has no poster"):
        compare_runs([runs[0], plain])
    with pytest.raises(JobError, match="no such run"):
        compare_runs([runs[0], tmp_path / "nowhere"])
    few = write_run(tmp_path / "few", "mean_field", draws=MIN_DRAWS - 1)
    with pytest.raises(JobError, match=f"at least {MIN_DRAWS}"):
        compare_runs([runs[0], few])
    with pytest.raises(JobError, match="same export"):
        compare_runs([runs[0], runs[0] / "posterior.nc"])
    with pytest.raises(JobError, match="at least two"):
        compare_runs([runs[0]])
    with pytest.raises(JobError, match="method"):
        compare_runs(runs, method="waic")
    with pytest.raises(JobError, match="estimate"):
        compare_runs(runs, estimate="waic")


def test_cli_prints_the_table_and_json(runs, capsys) -> None:
    assert main(["compare", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "held-out log predictive density" in lines[0] and "split test" in lines[0]
    assert lines[1].split() == ["rank", "run", "elpd", "se", "elpd_diff", "dse", "weight"]
    assert {line.split()[1] for line in lines[2:]} == {str(run) for run in runs}
    assert main(["compare", "--loo", *map(str, runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "PSIS-LOO" in lines[0] and lines[1].split()[-2:] == ["lpd", "note"]
    assert main(["compare", "--json", *map(str, runs)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["observations"] == 116 and len(data["runs"]) == 2
    assert data["estimate"] == "holdout"
    assert [r["rank"] for r in data["runs"]] == [0, 1]
    assert main(["compare", str(runs[0])]) == 2
    assert "at least two runs" in capsys.readouterr().err


def test_gal_runs_export_and_the_default_draws_satisfy_psis() -> None:
    gal = resolve_config(None, None, ["guide.name=gal", "model.prior=gaussian"], {})
    assert gal.guide.name == "gal" and no_export_reason(gal) is None
    samples = EvaluationConfig().export_samples
    assert samples >= 100  # a Pareto tail of S/5 >= 20 draws (arviz_stats needs >= 5)
    model = LanguageModel(V, 2, 2, num_layers=1)
    tree = export_language_model(model, MeanFieldGuide(model), STREAM[:30], samples, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loo = arviz_stats.loo(tree, pointwise=True)
    assert loo.n_samples == samples and math.isfinite(loo.elpd)
    assert loo.good_k == pytest.approx(min(1 - 1 / math.log10(samples), 0.7))


def test_cli_gal_run_exports_and_compares_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "gal"
    tiny = [
        "--quiet", "--set", "model.embedding_size=8", "--set", "model.hidden_size=8",
        "--set", "trainer.bptt=10", "--set", "trainer.max_windows=2",
        "--set", "trainer.eval_batch_size=5", "--samples", "2",
        "--set", "evaluation.max_tokens=200", "--set", f"evaluation.export_samples={DRAWS}",
        "--set", "evaluation.pruning=false", "--set", "evaluation.reversed_text=false",
        "--set", "guide.name=gal", "--set", "model.prior=gaussian",
        "--set", "guide.dropout_hidden=0.3",
    ]  # fmt: skip
    assert main(["run", "--out", str(out), *tiny]) == 0
    assert main(["export", "--out", str(out), "--quiet"]) == 0  # Gal was refused before
    capsys.readouterr()
    with xr.open_datatree(out / "posterior.nc", engine="h5netcdf") as tree:
        assert {"posterior", "log_likelihood", "posterior_predictive", "observed_data"} <= set(
            tree.children
        )
        assert tree.attrs["guide"] == "GalDropoutGuide" and tree.attrs["split"] == "test[:200]"
        assert tree.log_likelihood.obs.sizes["draw"] == DRAWS
        # recurrent dropout only: ArviZ's own loo refuses the export, the supported call works
        with pytest.raises(ValueError, match="tail values are the same"):
            arviz_stats.loo(tree, pointwise=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            loo = psis_loo(tree)
        assert math.isfinite(loo.elpd)
        assert loo.elpd_i.sizes["token"] == tree.log_likelihood.obs.sizes["token"]
    second = out / "posterior-2.nc"
    assert second.is_file()
    assert main(["compare", "--json", str(out), str(second)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["guide"] for r in data["runs"]} == {"GalDropoutGuide"}
