"""``--set model.prior_scale=learned|hierarchical`` through the command, and its bad values."""

import json
import math
import tomllib
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import TINY, cli

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GAUSSIAN = ["--set", "model.prior=gaussian"]
TINY_LM = [*TINY, *GAUSSIAN]
QUICK_FORECAST = [
    "--quiet",
    "--epochs",
    "2",
    "--samples",
    "3",
    "--set",
    "evaluation.export_samples=3",
]


def stored_scale(out: Path):
    return tomllib.loads((out / "config.toml").read_text())["model"]["prior_scale"]


@pytest.mark.parametrize("scale", ["learned", "hierarchical"])
def test_a_forecast_run_with_a_fitted_scale(scale, tmp_path, capsys):
    pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")
    xr = pytest.importorskip("xarray")
    out = tmp_path / scale
    argv = ["run", "--task", "forecast", "--data", "sunspots", "--out", str(out)]
    code, _, err = cli(capsys, *argv, *QUICK_FORECAST, "--set", f"model.prior_scale={scale}")
    assert code == 0, err
    assert stored_scale(out) == scale
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert math.isfinite(test["crps"]) and 0.0 <= test["coverage_90"] <= 1.0
    scales = metrics["model"]["prior_scales"]
    # the LSTM's 4 sites, the decoder's 2 and the linear skip's weight
    assert len(scales) == 7 and all(0 < v < math.inf for v in scales.values())
    tree = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    try:
        names = set(tree["posterior"].data_vars)
        if scale == "hierarchical":
            variable = tree["posterior"]["rnn__weight_hh_l0_prior_scale"]
            assert variable.dims == ("chain", "draw") and bool((variable > 0).all())
        else:
            assert not any("prior_scale" in name for name in names)
    finally:
        tree.close()
    code, _, err = cli(capsys, "evaluate", "--out", str(out), "--quiet")  # reads config.toml back
    assert code == 0, err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    text = repr(state)
    assert ("prior_log_scale" in text) == (scale == "learned")


@pytest.mark.parametrize("scale", ["learned", "hierarchical"])
def test_a_language_model_run_with_a_fitted_scale(scale, tmp_path, capsys):
    out = tmp_path / scale
    code, _, err = cli(
        capsys, "run", "--out", str(out), *TINY_LM, "--set", f"model.prior_scale={scale}"
    )
    assert code == 0, err
    assert stored_scale(out) == scale
    assert math.isfinite(json.loads((out / "metrics.json").read_text())["test"]["perplexity_mc"])


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no shared data folder at {SHARED_DATA}")
def test_a_classifier_run_with_a_hierarchical_scale(tmp_path, capsys):
    out = tmp_path / "classify"
    code, _, err = cli(
        capsys,
        "run", "--task", "classify", "--data", "polarity", "--data-dir", str(SHARED_DATA),
        "--out", str(out), "--quiet", "--epochs", "1", "--samples", "2", *GAUSSIAN,
        "--set", "model.prior_scale=hierarchical",
        "--set", "data.max_examples=32",
        "--set", "trainer.batch_size=16",
        "--set", "model.embedding_size=8",
        "--set", "model.hidden_size=8",
        "--set", "evaluation.export_samples=2",
    )  # fmt: skip
    assert code == 0, err
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["test"]["accuracy_mc"] <= 1.0


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--set", "model.prior_scale=lerned"], "model.prior_scale must be a positive number"),
        (["--set", "model.prior_scale=-1"], "model.prior_scale must be a positive number"),
        (["--set", "model.prior_scale=0"], "model.prior_scale must be a positive number"),
        (["--set", "model.prior_scale=true"], "model.prior_scale"),
        (
            ["--set", "model.prior=scale_mixture", "--set", "model.prior_scale=learned"],
            "needs model.prior=gaussian",
        ),
        (["--set", "model.prior_hyper_shape=0"], "model.prior_hyper_shape must be a positive"),
        (["--set", "model.prior_hyper_rate=-2"], "model.prior_hyper_rate must be a positive"),
        (
            [*GAUSSIAN, "--set", "model.prior_scale=hierarchical", "--set", "guide.name=gal"],
            "does not work with guide.name=gal",
        ),
    ],
)
def test_bad_prior_scales_are_one_line_errors(extra, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "run", "--out", str(out), "--quiet", *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert not out.exists()
