"""``guide.name=ensemble`` through ``bayesrnn run``, ``load_run``, the export and ``compare``."""

import json
import math
from pathlib import Path

import pytest
import xarray as xr

from bayesrnn import load_run
from bayesrnn.app.cli import main
from bayesrnn.inference import EnsembleGuide
from tests.cli_helpers import cli

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

ENSEMBLE = ["--set", "guide.name=ensemble", "--set", "model.deterministic=[]"]
TINY_LM = [
    "--quiet",
    "--set", "model.embedding_size=8",
    "--set", "model.hidden_size=8",
    "--set", "trainer.bptt=10",
    "--set", "trainer.max_windows=3",
    "--set", "trainer.eval_batch_size=5",
    "--set", "evaluation.max_tokens=300",
    "--set", "evaluation.reversed_text=false",
]  # fmt: skip


def _posterior_draws(run: Path) -> tuple[int, set[str]]:
    tree = xr.open_datatree(run / "posterior.nc", engine="h5netcdf")
    try:
        obs = tree["log_likelihood"]["obs"]
        return obs.sizes["chain"] * obs.sizes["draw"], set(tree.children)
    finally:
        tree.close()


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble") / "lm"
    argv = ["run", "--out", str(out), *TINY_LM, *ENSEMBLE, "--set", "guide.members=3"]
    assert main([*argv, "--samples", "3"]) == 0
    return out


@pytest.mark.parametrize("members", ["0", "-1", "1.5", "true"])
def test_a_bad_number_of_members_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, members):
    out = tmp_path / "run"
    code, _, err = cli(
        capsys, "run", "--out", str(out), *ENSEMBLE, "--set", f"guide.members={members}"
    )
    assert code == 2
    assert "guide.members must be an integer" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "guide.members=3", "--samples", "4"], "must be a multiple of guide.members (3)"),
        (["--set", "model.deterministic=['decoder.bias']"], "all members would share"),
    ],
)
def test_draws_that_weigh_members_unequally_and_shared_weights_are_refused(
    tmp_path, capsys, extra, message
):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "run", "--out", str(out), *TINY_LM, *ENSEMBLE, *extra)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_language_model_ensemble_runs_exports_its_members_and_loads(lm_run):
    metrics = json.loads((lm_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["mc_samples"] == 3 and test["mc"]["num_samples"] == 3
    assert math.isfinite(test["perplexity_mc"]) and math.isfinite(test["perplexity_mean"])
    assert test["mc"]["mutual_information"] > 0  # the members disagree
    draws, groups = _posterior_draws(lm_run)
    assert draws == 3  # the members, not evaluation.export_samples
    assert "sample_stats" not in groups  # a point mass has no density
    run = load_run(lm_run)
    assert isinstance(run.guide, EnsembleGuide) and run.guide.members == 3
    score = run.score_text("the the the of of and", num_samples=3)
    assert math.isfinite(score.perplexity) and score.num_samples == 3
    with pytest.raises(ValueError, match="multiple of 3"):
        run.score_text("the the the of of and", num_samples=2)


def test_compare_refuses_an_ensemble_of_fewer_than_25_members(lm_run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "posterior.nc").write_bytes((lm_run / "posterior.nc").read_bytes())
    code, _, err = cli(capsys, "compare", str(lm_run), str(other))
    assert code == 2
    assert "is an ensemble of 3 members" in err and "guide.members >= 25" in err


def test_a_forecaster_ensemble_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")
    out = tmp_path / "sun"
    code, _, err = cli(
        capsys,
        "run", "--task", "forecast", "--data", "sunspots", "--out", str(out), "--quiet",
        "--epochs", "1", "--samples", "2", *ENSEMBLE, "--set", "guide.members=2",
        "--set", "model.hidden_size=8",
    )  # fmt: skip
    assert code == 0, err
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["mc_samples"] == 2
    assert all(math.isfinite(test[k]) for k in ("crps", "nll", "rmse"))
    assert _posterior_draws(out)[0] == 2


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no shared data folder at {SHARED_DATA}")
def test_a_classifier_ensemble_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "classify"
    code, _, err = cli(
        capsys,
        "run", "--task", "classify", "--data", "polarity", "--data-dir", str(SHARED_DATA),
        "--out", str(out), "--quiet", "--epochs", "1", "--samples", "2", *ENSEMBLE,
        "--set", "guide.members=2",
        "--set", "data.max_examples=48",
        "--set", "trainer.batch_size=16",
        "--set", "model.embedding_size=8",
        "--set", "model.hidden_size=8",
    )  # fmt: skip
    assert code == 0, err
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["mc"]["num_samples"] == 2 and 0.0 <= test["accuracy_mc"] <= 1.0
    assert _posterior_draws(out)[0] == 2
    probs = load_run(out).classify_text("a fine film\na dull film", num_samples=2)
    assert probs.shape == (2, 2)
    assert float((probs.sum(-1) - 1).abs().max()) < 1e-5
