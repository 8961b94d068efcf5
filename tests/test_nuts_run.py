"""``bayesrnn run --set guide.name=nuts``: a NUTS run through the whole pipeline, and its faults."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bayesrnn.app.cli import main
from tests.cli_helpers import cli

pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")

TINY = [
    "--quiet",
    "--set",
    "guide.name=nuts",
    "--set",
    "model.hidden_size=2",
    "--set",
    "guide.num_chains=2",
    "--set",
    "guide.num_samples=4",
    "--set",
    "guide.warmup_steps=4",
    "--set",
    "guide.max_tree_depth=3",
    "--set",
    "evaluation.mc_samples=4",
    "--set",
    "evaluation.export_samples=4",
]
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def nuts_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nuts") / "sun"
    assert main(["run", "--preset", "forecast", "--out", str(out), *TINY]) == 0
    return out


def test_a_nuts_forecast_run_writes_mcmc_metrics(nuts_run):
    metrics = json.loads((nuts_run / "metrics.json").read_text())
    mcmc = metrics["mcmc"]
    # rows of the value and its 4 auto lags: LSTM 4·2·5 + 4·2·2 + 2·8, decoder 2·2 + 2, skip 5
    assert mcmc["draws"] == 8 and mcmc["num_chains"] == 2 and mcmc["weights"] == 83
    assert math.isfinite(mcmc["rhat_max_predictive"]) and mcmc["rhat_max_predictive"] > 0.9
    assert 0 < mcmc["ess_min_predictive"] <= 8 * 4  # at most a few times the draws
    shares = mcmc["rhat_share_predictive"]
    assert list(shares) == ["1.01", "1.05", "1.1"]
    assert all(0 <= v <= 1 for v in shares.values()) and shares["1.01"] <= shares["1.1"]
    assert mcmc["rhat_median_predictive"] <= mcmc["rhat_max_predictive"]
    assert isinstance(mcmc["divergences"], int) and mcmc["divergences"] >= 0
    # so few draws cannot pass r-hat < 1.01: the warning says so
    assert mcmc["warning"] is None or "r-hat" in mcmc["warning"] or "diverg" in mcmc["warning"]
    assert metrics["training"]["method"] == "nuts"
    assert math.isfinite(metrics["test"]["crps"])
    names = {p.name for p in nuts_run.iterdir()}
    assert {"posterior.nc", "checkpoint.pt", "forecast.png"} <= names
    assert "elbo.png" not in names  # nothing was optimised


def test_the_draws_load_with_weights_only(nuts_run):
    import torch

    payload = torch.load(nuts_run / "checkpoint.pt", weights_only=True)
    draws = payload["guide"]["draws__decoder__bias"]
    assert draws.shape == (2, 4, 2) and torch.isfinite(draws).all()
    assert payload["guide"]["stats__tree_depth"].shape == (2, 4)


def test_the_posterior_file_reads_in_arviz(nuts_run):
    xr = pytest.importorskip("xarray")
    azs = pytest.importorskip("arviz_stats")
    tree = xr.open_datatree(nuts_run / "posterior.nc", engine="h5netcdf")
    try:
        assert tree["posterior"].sizes["chain"] == 2
        assert {"diverging", "energy", "tree_depth", "lp"} <= set(tree["sample_stats"])
        assert {"prior", "log_likelihood", "observed_data"} <= set(tree.children)
        rhat = azs.rhat(tree)
        assert all(np.isfinite(v.values).all() for v in rhat.data_vars.values())
    finally:
        tree.close()


def test_a_nuts_run_loads_and_evaluates_like_any_run(nuts_run, capsys):
    import bayesrnn

    run = bayesrnn.load_run(nuts_run)
    assert type(run.guide).__name__ == "SampledPosterior" and run.guide.total == 8
    code, out, err = cli(capsys, "evaluate", "--out", str(nuts_run))
    assert code == 0, err
    assert "NUTS: 8 draws (2 chains)" in out
    shares = json.loads((nuts_run / "metrics.json").read_text())["mcmc"]["rhat_share_predictive"]
    assert f"r-hat ≤ 1.01 / 1.05 / 1.1 on {shares['1.01']:.0%} / " in out
    again = json.loads((nuts_run / "eval-2" / "metrics.json").read_text())
    assert again["mcmc"]["rhat_max_predictive"] == pytest.approx(
        json.loads((nuts_run / "metrics.json").read_text())["mcmc"]["rhat_max_predictive"]
    )


def test_rerunning_a_finished_nuts_run_samples_nothing(nuts_run, capsys):
    before = (nuts_run / "checkpoint.pt").stat().st_mtime_ns
    code, _, err = cli(capsys, "run", "--preset", "forecast", "--out", str(nuts_run), *TINY)
    assert code == 0, err
    assert (nuts_run / "checkpoint.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("model.hidden_size=64", "weights; NUTS is offered up to 150"),
        ("guide.num_chains=0", "guide.num_chains"),
        ("guide.target_accept=1.5", "guide.target_accept"),
        ("guide.max_tree_depth=0", "guide.max_tree_depth"),
        ("guide.warmup_steps=-1", "guide.warmup_steps"),
        ("guide.num_samples=none", "guide.num_samples"),
        ("guide.target_accept=0", "guide.target_accept"),
        ("guide.full_mass=2", "guide.full_mass must be true or false"),
        ("model.locked_hidden=0.2", "locked_hidden"),
    ],
)
def test_bad_nuts_settings_are_one_line_errors(setting, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--preset", "forecast", "--out", str(out), *TINY, "--set", setting]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert not out.exists()


@pytest.mark.skipif(not (DATA / "rt-polarity").is_dir(), reason="polarity data not in ../shared")
def test_a_nuts_classifier_run(tmp_path, capsys):
    out = tmp_path / "cls"
    argv = [
        "run",
        "--task",
        "classify",
        "--data",
        "polarity",
        "--data-dir",
        str(DATA),
        "--out",
        str(out),
        *TINY,
        "--set",
        "data.max_examples=24",
        "--set",
        "data.max_vocab=12",
        "--set",
        "model.embedding_size=2",
        "--set",
        "evaluation.reversed_text=false",
    ]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy_mc"] <= 1.0
    assert math.isfinite(metrics["mcmc"]["rhat_max_predictive"])
    assert (out / "posterior.nc").is_file()


def test_a_nuts_language_model_run(tmp_path, capsys):
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    text = tmp_path / "tiny.txt"
    text.write_text(
        "\n".join(" ".join(words[(i * 7 + j) % 10] for j in range(8)) for i in range(60))
    )
    out = tmp_path / "lm"
    settings = [
        "model.embedding_size=2",
        "data.max_vocab=12",
        "trainer.batch_size=4",
        "trainer.eval_batch_size=2",
        "trainer.bptt=10",
        "evaluation.reversed_text=false",
    ]
    argv = ["run", "--data", str(text), "--out", str(out), *TINY]
    for setting in settings:
        argv += ["--set", setting]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["perplexity_mc"])
    assert metrics["mcmc"]["num_chains"] == 2 and metrics["mcmc"]["draws"] == 8
    assert (out / "posterior.nc").is_file()


def test_guide_full_mass_reaches_the_sampler_and_the_metrics(tmp_path, capsys, monkeypatch):
    import bayesrnn.app.nuts_task as nuts_task

    seen = {}
    real = nuts_task.run_nuts

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(nuts_task, "run_nuts", recording)
    out = tmp_path / "dense"
    argv = [
        "run",
        "--preset",
        "forecast",
        "--out",
        str(out),
        *TINY,
        "--set",
        "guide.full_mass=true",
    ]
    argv += ["--set", "evaluation.export=false"]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert seen["full_mass"] is True
    assert json.loads((out / "metrics.json").read_text())["mcmc"]["full_mass"] is True
