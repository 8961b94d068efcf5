"""The ``bayesrnn`` command end to end, on tiny budgets: what it writes and how it fails."""

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
import xarray as xr

from bayesrnn.app.cli import main
from bayesrnn.app.config_files import resolve_config
from bayesrnn.app.presets import PRESETS
from tests.cli_helpers import TINY, cli

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def numbers(value, path=""):
    """Every number in a JSON document, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


def digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One tiny end-to-end ``bayesrnn run`` on the embedded corpus (mean-field guide)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["run", "--out", str(out), *TINY])
    assert code == 0
    return out


def test_run_writes_metrics_plots_posterior_checkpoint_and_config(default_run):
    files = {p.name for p in default_run.iterdir()}
    expected = {"metrics.json", "config.toml", "checkpoint.pt", "history.json", "posterior.nc"}
    plots = {"reliability.png", "entropy.png", "elbo.png", "pruning.png"}
    assert expected | plots <= files
    for name in plots:
        data = (default_run / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000

    metrics = json.loads((default_run / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("perplexity_mean", "perplexity_mc", "mc_samples", "posterior_mean", "mc"):
        assert key in test
    for key in ("ece", "mce", "brier", "nll", "predictive_entropy", "mutual_information"):
        assert key in test["mc"]
    for key in ("entropy_gap_mean", "entropy_gap_mc", "auroc_entropy", "auroc_mutual_information"):
        assert key in test["reversed"]
    assert test["mc_samples"] == 2
    assert test["mc"]["tokens"] == 295  # 300 tokens cut into 5 sequences of 60: 59 targets each
    # perplexity is exp(NLL) and the reversed-text gap is the difference of the mean entropies
    assert test["perplexity_mean"] == pytest.approx(math.exp(test["posterior_mean"]["nll"]))
    rev = test["reversed"]
    assert rev["entropy_gap_mc"] == pytest.approx(
        rev["entropy_reversed_mc"] - rev["entropy_forward_mc"]
    )
    assert 0.0 <= test["mc"]["ece"] <= test["mc"]["mce"] <= 1.0
    assert 0.0 <= rev["auroc_entropy"] <= 1.0
    assert metrics["pruning"]["fractions"] == [0.0, 0.5]
    assert metrics["training"]["steps"] == 3
    assert set(metrics["files"]) == plots | {"posterior.nc"}
    found = dict(numbers(metrics))
    assert found and all(math.isfinite(v) for v in found.values()), found

    tree = xr.open_datatree(default_run / "posterior.nc", engine="h5netcdf")
    try:
        assert {"posterior", "log_likelihood", "sample_stats"} <= set(tree.children)
        assert tree["log_likelihood"]["obs"].sizes["draw"] == 2
    finally:
        tree.close()

    umask = os.umask(0)
    os.umask(umask)
    files = ("metrics.json", "config.toml", "history.json", "posterior.nc", "checkpoint.pt")
    for name in (*files, "vocab.json"):
        assert (default_run / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in default_run.iterdir() if p.name.startswith(".")]  # no temp files

    stored = tomllib.loads((default_run / "config.toml").read_text())
    assert stored["model"]["hidden_size"] == 8 and stored["trainer"]["max_windows"] == 3
    assert stored["guide"]["name"] == "mean_field"
    checkpoint = torch.load(default_run / "checkpoint.pt", weights_only=True)
    assert {"model", "guide", "history", "position"} <= set(checkpoint)
    history = json.loads((default_run / "history.json").read_text())
    assert len(history["elbo"]) == 3 and all(math.isfinite(v) for v in history["elbo"])


def test_evaluate_and_export_rebuild_the_run_from_its_directory(default_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(default_run, copy)
    first = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    before = json.loads((copy / "metrics.json").read_text())
    code, out, err = cli(
        capsys, "evaluate", "--out", str(copy), "--samples", "3", "--quiet",
        "--set", "evaluation.reversed_text=false", "--set", "evaluation.pruning=false",
    )  # fmt: skip
    assert code == 0, err
    # a second evaluation goes to eval-2/ and leaves every earlier file as it was
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == first
    after = json.loads((copy / "eval-2" / "metrics.json").read_text())
    assert after["test"]["mc_samples"] == 3
    assert (copy / "eval-2" / "reliability.png").read_bytes().startswith(PNG_MAGIC)
    # the posterior mean comes from the checkpoint, so its perplexity is unchanged
    assert after["test"]["perplexity_mean"] == pytest.approx(
        before["test"]["perplexity_mean"], rel=1e-9
    )
    assert "test perplexity" in out and "eval-2" in out
    code, _, err = cli(capsys, "evaluate", "--out", str(copy), "--samples", "3", "--quiet")
    assert code == 0 and (copy / "eval-3" / "metrics.json").is_file(), err
    code, _, err = cli(
        capsys, "evaluate", "--out", str(copy), "--samples", "3", "--quiet", "--force"
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((copy / "metrics.json").read_text())["test"]["mc_samples"] == 3
    assert not (copy / "eval-4").exists()

    code, out, err = cli(capsys, "export", "--out", str(copy), "--samples", "3", "--quiet")
    assert code == 0, err
    assert (copy / "posterior.nc").read_bytes() == first["posterior.nc"]
    assert "posterior-2.nc" in out
    tree = xr.open_datatree(copy / "posterior-2.nc", engine="h5netcdf")
    try:
        assert tree["posterior"].sizes["draw"] == 3
    finally:
        tree.close()
    code, _, err = cli(capsys, "export", "--out", str(copy), "--samples", "3", "--force")
    assert code == 0 and not (copy / "posterior-3.nc").exists(), err
    assert (copy / "posterior.nc").read_bytes() != first["posterior.nc"]
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]


def test_train_then_evaluate_equals_run(default_run, tmp_path, capsys):
    out = tmp_path / "two-steps"
    code, _, err = cli(capsys, "train", "--out", str(out), *TINY)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert {"config.toml", "checkpoint.pt", "history.json", "elbo.png"} <= names
    assert "metrics.json" not in names
    code, _, err = cli(capsys, "evaluate", "--out", str(out), "--quiet")
    assert code == 0, err
    ours = json.loads((out / "metrics.json").read_text())
    reference = json.loads((default_run / "metrics.json").read_text())
    assert ours["test"] == reference["test"]
    assert ours["pruning"] == reference["pruning"]


def test_own_text_file(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    words = [f"w{i % 37}" for i in range(6000)]
    text.write_text("\n".join(" ".join(words[i : i + 12]) for i in range(0, 6000, 12)))
    out = tmp_path / "own"
    code, _, err = cli(
        capsys, "train", "--data", str(text), "--out", str(out), "--epochs", "1",
        *TINY[:5], "--set", "trainer.bptt=10", "--set", "trainer.batch_size=4",
    )  # fmt: skip
    assert code == 0, err
    history = json.loads((out / "history.json").read_text())
    assert len(history["valid_perplexity"]) == 1  # a whole epoch, then validation
    assert history["valid_perplexity"][0] < 40  # 37 words + <eos>, better than uniform
    stored = tomllib.loads((out / "config.toml").read_text())
    assert stored["data"]["source"] == str(text)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    code, _, err = cli(capsys, "run", "--device", "cuda", "--out", str(tmp_path / "gpu"))
    assert_one_line_error(code, err)
    assert "no CUDA device" in err and not (tmp_path / "gpu").exists()


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bayesrnn") and "error:" in lines[0]


def test_missing_data_directory(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "run", "--data", "ptb", "--data-dir", str(tmp_path / "nope"), "--out", str(out)
    )
    assert_one_line_error(code, err)
    assert "not found" in err and not out.exists()
    code, _, err = cli(capsys, "run", "--data", "ptb", "--out", str(out))
    assert_one_line_error(code, err)
    assert "--data-dir" in err and not out.exists()


def test_checksum_mismatch(tmp_path, capsys):
    folder = tmp_path / "data" / "ptb"
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (folder / f"ptb.{split}.txt").write_text("not the penn treebank\n")
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "run", "--data", "ptb", "--data-dir", str(tmp_path / "data"), "--out", str(out)
    )
    assert_one_line_error(code, err)
    assert "sha256 mismatch" in err and not out.exists()


def test_unknown_preset_and_unknown_keys(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--preset", "zaremba-huge", "--out", str(out))
    assert_one_line_error(code, err)
    assert "unknown preset 'zaremba-huge'" in err
    code, _, err = cli(capsys, "run", "--set", "model.hiden_size=3", "--out", str(out))
    assert_one_line_error(code, err)
    assert "model.hiden_size" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[trainer]\nlearning_rate = 0.1\n")
    code, _, err = cli(capsys, "train", "--config", str(bad), "--out", str(out))
    assert_one_line_error(code, err)
    assert "trainer.learning_rate" in err
    code, _, err = cli(capsys, "run", "--task", "translate")
    assert_one_line_error(code, err)
    assert "invalid choice: 'translate'" in err
    code, _, err = cli(capsys, "presets", "zaremba-huge")
    assert_one_line_error(code, err)
    assert not out.exists()


def test_output_directory_with_a_different_run_is_left_alone(default_run, tmp_path, capsys):
    copy = tmp_path / "other"
    shutil.copytree(default_run, copy)
    before = digest(copy)
    code, _, err = cli(capsys, "run", "--out", str(copy), *TINY, "--seed", "7")
    assert_one_line_error(code, err)
    assert "different config" in err and "trainer.seed" in err
    assert digest(copy) == before

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "run", "--out", str(stranger), *TINY)
    assert_one_line_error(code, err)
    assert digest(stranger) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}
    code, _, err = cli(capsys, "evaluate", "--out", str(tmp_path / "nothing"))
    assert_one_line_error(code, err)


def test_presets_listing_and_help(capsys):
    code, out, _ = cli(capsys, "presets")
    assert code == 0
    for name, preset in PRESETS.items():
        assert name in out and preset.source[:30] in out
    assert "UNVERIFIED" in out and "82.7" in out and "75.5" in out
    assert ".md" not in out  # no file the user does not have is cited
    code, out, _ = cli(capsys, "presets", "fortunato-medium")
    assert code == 0
    toml = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    assert tomllib.loads(toml)["guide"]["name"] == "mean_field"
    assert resolve_config("fortunato-medium").trainer.epochs == 70

    code, top, _ = cli(capsys, "--help")
    assert code == 0
    assert "quick start" in top and "bayesrnn run" in top and "bayesrnn presets" in top
    code, run_help, _ = cli(capsys, "run", "--help")
    assert code == 0
    for flag in ("--preset", "--config", "--set", "--data", "--data-dir", "--device", "--seed"):
        assert flag in run_help
    assert all(name in run_help for name in PRESETS) and "source:" in run_help


def test_print_config_shows_layered_values(capsys):
    code, out, _ = cli(capsys, "run", "--preset", "zaremba-small", "--seed", "3", "--print-config")
    assert code == 0
    values = tomllib.loads(out)
    assert values["preset"] == "zaremba-small"
    assert values["trainer"]["seed"] == 3 and values["model"]["hidden_size"] == 200


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no shared data folder at {SHARED_DATA}")
def test_sentence_classification_on_a_polarity_slice(tmp_path, capsys):
    out = tmp_path / "classify"
    code, stdout, err = cli(
        capsys,
        "run", "--task", "classify", "--data", "polarity", "--data-dir", str(SHARED_DATA),
        "--out", str(out), "--quiet", "--epochs", "1", "--samples", "2",
        "--set", "data.max_examples=48",
        "--set", "trainer.batch_size=16",
        "--set", "model.embedding_size=8",
        "--set", "model.hidden_size=8",
        "--set", "evaluation.export_samples=2",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert test["mc"]["examples"] == 48
    for key in ("accuracy", "ece", "mce", "brier", "nll", "predictive_entropy"):
        assert key in test["mc"] and key in test["posterior_mean"]
    assert 0.0 <= test["accuracy_mc"] <= 1.0
    assert test["mc"]["mutual_information"] >= 0.0
    assert metrics["training"]["steps"] == 3  # 48 sentences in batches of 16
    assert len(metrics["training"]["valid_accuracy"]) == 1
    assert all(math.isfinite(v) for _, v in numbers(metrics))
    assert (out / "reliability.png").read_bytes().startswith(PNG_MAGIC)
    tree = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    try:
        assert tree["log_likelihood"]["obs"].sizes["sequence"] == 48
    finally:
        tree.close()
    assert "test accuracy" in stdout


def _arguments(out: Path, windows: int) -> list[str]:
    return [
        "run", "--out", str(out), *(a for a in TINY if a != "--quiet"),
        "--set", "trainer.progress=false",
        "--set", f"trainer.max_windows={windows}", "--set", "trainer.checkpoint_every=1",
        "--set", "evaluation.pruning=false", "--set", "evaluation.export=false",
    ]  # fmt: skip


def _command(out: Path, windows: int) -> list[str]:
    return [sys.executable, "-m", "bayesrnn.app.cli", *_arguments(out, windows)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path, capsys):
    windows = 40
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): same arithmetic
    code, _, err = cli(capsys, *_arguments(whole, windows))
    assert code == 0, err

    process = subprocess.Popen(
        _command(killed, windows), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (killed / "metrics.json").exists()  # it died mid-training
    steps_done = torch.load(killed / "checkpoint.pt", weights_only=True)["position"][1]
    assert steps_done < windows
    # the killed run evaluated and exported: both written apart, never taken for its result
    code, _, err = cli(capsys, "evaluate", "--out", str(killed), "--quiet")
    assert code == 0, err
    early = json.loads((killed / "eval-2" / "metrics.json").read_text())
    assert early["unfinished"].startswith("mid-training checkpoint (epoch 1, step ")
    assert not (killed / "metrics.json").exists()
    code, _, err = cli(capsys, "export", "--out", str(killed), "--quiet")
    assert code == 0, err
    assert (killed / "posterior-unfinished.nc").is_file() and not (killed / "posterior.nc").exists()

    again = subprocess.run(_command(killed, windows), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr

    first = json.loads((whole / "metrics.json").read_text())
    second = json.loads((killed / "metrics.json").read_text())
    first.pop("timing"), second.pop("timing")
    assert dict(numbers(second)) == pytest.approx(dict(numbers(first)), rel=1e-6, abs=1e-6)
    assert {k: v for k, v in first.items() if k not in ("training", "test", "pruning")} == {
        k: v for k, v in second.items() if k not in ("training", "test", "pruning")
    }
    history = [json.loads((d / "history.json").read_text()) for d in (whole, killed)]
    assert history[0]["elbo"] == pytest.approx(history[1]["elbo"], rel=1e-6)


def test_console_script_entry_point():
    script = Path(sys.executable).parent / "bayesrnn"
    if not script.exists():
        pytest.skip("the bayesrnn console script is not installed (pip install -e .)")
    result = subprocess.run([script, "presets"], capture_output=True, text=True, env=_env())
    assert result.returncode == 0 and "zaremba-small" in result.stdout


def test_dynamic_evaluation_and_the_row_wise_prior_through_the_cli(tmp_path, capsys):
    out = tmp_path / "dynamic"
    code, stdout, _ = cli(
        capsys, "run", "--out", str(out), *TINY, "--set", "model.prior_per=row",
        "--set", "guide.name=sharpened", "--dynamic-eval", "0.1",
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    assert metrics["dynamic_lr"] == 0.1
    assert math.isfinite(metrics["perplexity_dynamic"]) and metrics["perplexity_dynamic"] > 1
    assert "dynamic evaluation (lr 0.1)" in stdout
    low, high = metrics["perplexity_sharpened_bound_ci95"]  # the sharpened bound with its SE
    assert metrics["nll_sharpened_bound_se"] > 0 and metrics["sharpened_bound_samples"] >= 2
    assert low < metrics["perplexity_sharpened_bound"] < high
    assert "Monte Carlo SE" in stdout
    history = json.loads((out / "history.json").read_text())
    ratios = history["sharpening_step_ratio"]  # ‖η⊙g‖/‖σ‖ logged for every window
    assert len(ratios) == len(history["elbo"]) == 3 and all(0 < r < 1 for r in ratios)
    code, stdout, _ = cli(capsys, "evaluate", "--out", str(out), "--dynamic-eval", "0.5")
    assert code == 0 and "dynamic evaluation (lr 0.5)" in stdout


def test_the_local_mc_estimator_runs_from_the_config(default_run, tmp_path, capsys, monkeypatch):
    """evaluation.mc_decoder=local with shared recurrent draws reaches evaluate_stream: the
    posterior mean is the default run's, the MC pass takes the local path."""
    from bayesrnn.inference.prediction import predictive

    calls = []
    real = predictive._local_window
    monkeypatch.setattr(
        predictive, "_local_window", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    out = tmp_path / "local"
    local = ["--set", "evaluation.mc_decoder=local", "--set", "evaluation.mc_recurrent_draws=1"]
    code, _, err = cli(capsys, "run", "--out", str(out), *TINY, *local)
    assert code == 0, err
    assert calls  # the MC windows (and their reversed text) went through the local path
    ours = json.loads((out / "metrics.json").read_text())["test"]
    reference = json.loads((default_run / "metrics.json").read_text())["test"]
    assert ours["perplexity_mean"] == reference["perplexity_mean"]
    assert math.isfinite(ours["perplexity_mc"]) and ours["perplexity_mc"] > 1
    resolved = tomllib.loads((out / "config.toml").read_text())["evaluation"]
    assert (resolved["mc_decoder"], resolved["mc_recurrent_draws"]) == ("local", 1)
