"""Faults at the edges of the inputs: a range for every setting, a model too large for memory,
inputs that are not regular files, series values at the edge of float, and faults at a
command's edges (a full disk under the export, torchrun without a GPU, a killed evaluation,
library warnings). Each ends in exit 2, one stderr line naming the fault, and no file changed.
"""

import collections
import dataclasses
import json
import os
import threading
import typing
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bayesrnn.app import memory_check
from bayesrnn.app.cli import main
from bayesrnn.app.cli_faults import warnings_held
from bayesrnn.app.config import ConfigError
from bayesrnn.app.config_files import _SECTION_CLASSES, resolve_config
from bayesrnn.app.config_limits import LIMITS, Bound, describe_limits
from bayesrnn.app.export import export_size
from bayesrnn.data.atomic import is_temporary, temporary_path
from bayesrnn.data.checksums import DataError
from bayesrnn.data.input_files import DEFAULT_MAX_INPUT_BYTES, input_limit
from bayesrnn.data.series import MAX_MAGNITUDE, split_series
from tests.cli_helpers import cli, private_copy
from tests.test_faults import _run, assert_fault, snapshot, trained_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return trained_workspace(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def area(tmp_path, workspace):
    return private_copy(workspace, tmp_path)


# --- a range for every numeric setting ----------------------------------------------------------


def _types(section: str, name: str) -> set:
    """The types a setting's hint names (int | None → {int, None}; tuple[float, ...] → float)."""
    hint = typing.get_type_hints(_SECTION_CLASSES[section])[name]
    parts = set(typing.get_args(hint)) | {hint}
    return parts | {a for p in parts for a in typing.get_args(p)}


def _numeric_keys() -> list[str]:
    return [
        f"{section}.{field.name}"
        for section, cls in _SECTION_CLASSES.items()
        for field in dataclasses.fields(cls)
        if _types(section, field.name) & {int, float}
    ]


def test_every_numeric_setting_has_a_range_and_every_range_a_setting():
    numeric = _numeric_keys()
    assert len(numeric) > 50  # the sections' numbers were found at all
    assert sorted(set(numeric) - set(LIMITS)) == []
    assert sorted(set(LIMITS) - set(numeric)) == []
    assert describe_limits().count("\n") == len(LIMITS) - 1


def test_a_bound_is_open_or_closed_as_written():
    rate = Bound(0.0, 1.0, high_open=True)
    assert 0.0 in rate and 0.999 in rate and 1.0 not in rate and -0.0 in rate
    assert float("nan") not in rate and float("inf") not in Bound(0, float("inf"))
    assert True not in Bound(0, 5) and "1" not in Bound(0, 5)
    assert str(rate) == "[0, 1)" and str(Bound(0, 1e6, low_open=True)) == "(0, 1e+06]"


def _beyond(key: str) -> str:
    """A value just outside the key's range, as --set writes it."""
    bound = LIMITS[key]
    if key == "evaluation.pruning_fractions":
        return "[0.5, 1.5]"
    if bound.high_open:
        return repr(float(bound.high))
    if float not in _types(*key.split(".")):
        return str(int(bound.high) + 1)
    return repr(float(bound.high) * 2)


# A key whose value beyond its range another check refuses first, and that check's words.
REFUSED_FIRST = {
    # warm-up epochs must stay below trainer.epochs, whose own bound is lower
    "trainer.kl_warmup_epochs": "kl_warmup_epochs",
    # needs mc_decoder=local first, and may not exceed evaluation.mc_samples (same bound)
    "evaluation.mc_recurrent_draws": "evaluation.mc_recurrent_draws needs",
}


@pytest.mark.parametrize("key", sorted(LIMITS))
def test_a_value_beyond_each_range_is_one_line_naming_the_range(key, area, capsys):
    value = _beyond(key)
    fragment = REFUSED_FIRST.get(key, f"{key}")
    line = assert_fault(capsys, area, _run(area, "--set", f"{key}={value}"), fragment)
    if key not in REFUSED_FIRST:
        assert str(LIMITS[key]) in line, line
    assert not (area / "new").exists()


BRIEF_CASES = {
    "hidden size 2**62": ("model.hidden_size=4611686018427387904", "must lie in [1, 1048576]"),
    "embedding 1e23": ("model.embedding_size=1e23", "embedding_size must be an integer in [1, "),
    "n_bins 1e8": ("evaluation.n_bins=1e8", "evaluation.n_bins must be an integer in [1, 10000]"),
    "infinite init range": ("model.init_range=inf", "model.init_range must lie in [0, 10]"),
    "NaN prior scale": ("model.prior_sigma1=nan", "model.prior_sigma1 must lie in (0, 1e+06]"),
    "dropout of one": ("model.locked_hidden=1", "model.locked_hidden must lie in [0, 1)"),
    "negative split seed": ("data.split_seed=-1", "data.split_seed must lie in [0, 4294967295]"),
    "ten thousand fractions": (
        "evaluation.pruning_fractions=[" + ",".join(["0.5"] * 1001) + "]",
        "at most 1000",
    ),
}


@pytest.mark.parametrize("case", sorted(BRIEF_CASES))
def test_named_out_of_range_values(case, area, capsys):
    setting, fragment = BRIEF_CASES[case]
    assert_fault(capsys, area, _run(area, "--set", setting), fragment)


def test_the_limits_command_prints_every_range(capsys, monkeypatch):
    monkeypatch.delenv("BAYESRNN_MAX_INPUT_BYTES", raising=False)
    code, out, _ = cli(capsys, "limits")
    assert code == 0
    for key, bound in LIMITS.items():
        assert f"  {key}: {bound}\n" in out
    assert f"at most {DEFAULT_MAX_INPUT_BYTES:,} bytes" in out


def test_every_preset_lies_within_the_ranges():
    from bayesrnn.app.presets import PRESETS

    for name in PRESETS:
        resolve_config(name)  # raises ConfigError otherwise


# --- a model too large for the memory -----------------------------------------------------------


def test_the_memory_rule_counts_the_built_models_values():
    from bayesrnn.app.setup import build_model

    config = resolve_config(overrides=["model.hidden_size=8", "model.embedding_size=6"])
    v, e, h = 30, 6, 8
    by_hand = v * e + 4 * h * (e + h) + 2 * 4 * h + h * v + v  # embedding, LSTM, decoder
    with torch.device("meta"):
        counted = memory_check.model_values(build_model(config, v, None))
    assert counted == by_hand == memory_check.model_values(build_model(config, v, None))


def test_the_memory_rule_in_numbers():
    def rule(*args, training=True):
        return memory_check.required_bytes(*args, training=training)

    assert rule(1000, "mean_field", 5, 1) == 4 * 1000 * (4 * 2 + 1)
    assert rule(1000, "ensemble", 5, 2) == 4 * 1000 * (4 * 5 + 2)
    assert rule(100, "auto_low_rank", 5, 1) == 4 * 100 * (4 * 12 + 1)  # g = 2 + √100
    assert rule(100, "gal", 5, 3) == 4 * 100 * (4 + 3)
    assert rule(1000, "mean_field", 5, 8, training=False) == 4 * 1000 * (2 + 1)


def test_a_model_beyond_the_free_memory_is_refused_with_its_estimate(area, capsys, monkeypatch):
    import bayesrnn

    vocabulary = len(bayesrnn.load_run(area / "run").vocabulary)
    weights = vocabulary * 16 + 4 * 16 * 32 + 8 * 16 + 16 * vocabulary + vocabulary
    needed = 4 * weights * (4 * 2 + 1)
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: needed - 1)
    line = assert_fault(capsys, area, _run(area), "does not fit in memory")
    assert f"{weights:,} weights need about {needed / 1024:,.1f} KiB" in line, line
    assert f"and {(needed - 1) / 1024:,.1f} KiB is available on cpu" in line, line
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: needed)
    code, _, err = cli(capsys, *_run(area, "--set", "evaluation.export=false"))
    assert code == 0, err  # the estimate itself fits
    evaluating = 4 * weights * (2 + 1)  # a trained run needs less: no gradients or moments
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: evaluating)
    code, _, err = cli(capsys, "evaluate", "--out", str(area / "run"), "--quiet")
    assert code == 0, err
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: evaluating - 1)
    argv = ["evaluate", "--out", str(area / "run"), "--quiet"]
    line = assert_fault(capsys, area, argv, "to evaluate")
    assert "(4 bytes × weights × (2 + 1 drawn network))" in line


# --- inputs that are not regular files ----------------------------------------------------------


@pytest.fixture
def fifo(tmp_path):
    """A named pipe; a watchdog writer opens it after 30 s, so a reader that blocks on it ends
    (reading nothing) and the test fails instead of hanging."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    done = threading.Event()

    def release() -> None:
        if not done.wait(30):
            fd = os.open(path, os.O_WRONLY)  # unblocks a reader stuck in open()
            os.close(fd)

    threading.Thread(target=release, daemon=True).start()
    yield path
    done.set()


SPECIAL = {
    "--data FIFO": (["--data", "{fifo}"], "data file {fifo} is a FIFO"),
    "--data /dev/zero": (["--data", "/dev/zero"], "/dev/zero is a character device"),
    "--config FIFO": (["--config", "{fifo}"], "config file {fifo} is a FIFO"),
    "--config /dev/zero": (["--config", "/dev/zero"], "/dev/zero is a character device"),
    "forecast CSV FIFO": (
        ["--task", "forecast", "--data", "{fifo}", "--set", "data.target=y"],
        "data file {fifo} is a FIFO",
    ),
}


@pytest.mark.parametrize("case", sorted(SPECIAL))
def test_a_file_that_is_not_regular_is_refused_without_reading(case, area, fifo, capsys):
    extra, fragment = SPECIAL[case]
    argv = _run(area, *(a.replace("{fifo}", str(fifo)) for a in extra))
    assert_fault(capsys, area, argv, fragment.replace("{fifo}", str(fifo)))


@pytest.mark.parametrize("name", ["fifo", "/dev/zero"])
def test_score_refuses_a_file_that_is_not_regular(name, area, fifo, capsys):
    target = str(fifo) if name == "fifo" else name
    assert_fault(capsys, area, ["score", "--out", str(area / "run"), target], "not a regular file")


def test_compare_refuses_a_fifo(area, fifo, capsys):
    argv = ["compare", str(area / "run"), str(fifo)]
    assert_fault(capsys, area, argv, f"{fifo} is not a regular file")


def test_evaluate_refuses_an_ood_fifo(area, fifo, capsys):
    argv = ["evaluate", "--out", str(area / "run"), "--quiet", "--ood", str(fifo)]
    assert_fault(capsys, area, argv, "not a regular file")


def test_an_input_above_the_size_limit_names_the_limit_and_the_setting(area, capsys, monkeypatch):
    size = (area / "notes.txt").stat().st_size
    monkeypatch.setenv("BAYESRNN_MAX_INPUT_BYTES", "1K")
    line = assert_fault(capsys, area, _run(area), "above the 1.0 KiB an input file may hold")
    assert f"{size / 1024:,.1f} KiB" in line and "BAYESRNN_MAX_INPUT_BYTES" in line
    monkeypatch.setenv("BAYESRNN_MAX_INPUT_BYTES", "lots")
    assert_fault(capsys, area, _run(area), "BAYESRNN_MAX_INPUT_BYTES must be a positive number")


@pytest.mark.parametrize(
    ("text", "limit"),
    [(None, DEFAULT_MAX_INPUT_BYTES), ("1000", 1000), ("4G", 4 * 2**30), ("2 MiB", 2 * 2**20)],
)
def test_the_input_limit_reads_the_environment(text, limit, monkeypatch):
    if text is None:
        monkeypatch.delenv("BAYESRNN_MAX_INPUT_BYTES", raising=False)
    else:
        monkeypatch.setenv("BAYESRNN_MAX_INPUT_BYTES", text)
    assert input_limit() == limit


@pytest.mark.parametrize("text", ["0", "-5", "1T", "1.5G"])
def test_a_bad_input_limit_is_a_data_error(text, monkeypatch):
    monkeypatch.setenv("BAYESRNN_MAX_INPUT_BYTES", text)
    with pytest.raises(DataError, match="BAYESRNN_MAX_INPUT_BYTES"):
        input_limit()


# --- series values at the edge of float ---------------------------------------------------------


def _series(values: list[str], header: str = "t,y,x") -> str:
    rows = [f"{i},{v},{1 + (i % 5) / 10}" for i, v in enumerate(values)]
    return header + "\n" + "\n".join(rows) + "\n"


BASE = [str(10 + (i % 7)) for i in range(60)]


def _with(row: int, value: str) -> list[str]:
    return [*BASE[:row], value, *BASE[row + 1 :]]


CSV_FAULTS = {
    "1e308": (_series(_with(30, "1e308")), "column 'y' row 30: 1e+308 is beyond ±1e+150"),
    "-1e308": (_series(_with(30, "-1e308")), "column 'y' row 30: -1e+308 is beyond"),
    "1e201 (the deviation overflows)": (_series(_with(10, "1e201")), "column 'y' row 10: 1e+201"),
    "subnormal": (_series(_with(12, "1e-319")), "column 'y' row 12: 1e-319 is subnormal"),
    "10**30 integer": (
        _series(_with(11, str(10**30))),
        f"column 'y' row 11 (line 13) holds the integer {10**30}, beyond 2**53",
    ),
    "2**53 + 1 integer": (_series(_with(3, str(2**53 + 1))), "column 'y' row 3 (line 5)"),
    "constant target": (_series(["5"] * 60), "column 'y' is constant (5.0) over the 42 training"),
    "header only": ("t,y,x\n", "a header ['t', 'y', 'x'] and no rows"),
    "NUL in a value": (
        _series(_with(10, "1\x002")),
        "a NUL byte in row 10 (line 12), column 'y'",
    ),
    "NUL in a column not read": (
        _series(BASE).replace("\n5,", "\n5\x00,", 1),
        "a NUL byte in row 5 (line 7), column 't'",
    ),
    "NUL in the header": (_series(BASE, header="t,y\x00,x"), "a NUL byte in the header"),
    "target also a covariate": (_series(BASE), "a column is named twice"),
    "a far test value (beyond float32 once scaled)": (
        _series(_with(58, "1e140")),
        "column 'y' row 58: 1e+140 lies",
    ),
    "text in the target": (_series(_with(7, "n/a?")), "column 'y' is not numeric (row 7, line 9"),
}


@pytest.mark.parametrize("case", sorted(CSV_FAULTS))
def test_series_values_at_the_edge_of_float_are_one_line(case, tmp_path, capsys):
    text, fragment = CSV_FAULTS[case]
    (tmp_path / "series.csv").write_bytes(text.encode())
    argv = [
        "run", "--task", "forecast", "--data", str(tmp_path / "series.csv"),
        "--out", str(tmp_path / "run"), "--quiet", "--set", "data.target=y",
    ]  # fmt: skip
    if case == "target also a covariate":
        argv += ["--set", "data.covariates=[y]"]
    line = assert_fault(capsys, tmp_path, argv, fragment)
    assert "series.csv" in line, line


def test_values_at_the_magnitude_bound_scale_to_finite_float32():
    values = np.array([MAX_MAGNITUDE, -MAX_MAGNITUDE] * 30)
    corpus = split_series(values, ("y",))
    assert np.isfinite(corpus.scale.numpy()).all() and np.isfinite(corpus.mean.numpy()).all()
    assert bool(torch.isfinite(corpus.full()).all())
    assert corpus.full().abs().max().item() == pytest.approx(1.0)  # ±1 standard deviation


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory):
    """A forecaster that reads one covariate, trained for a few windows."""
    folder = tmp_path_factory.mktemp("covariates")
    rows = [f"{i},{10 + (i % 7)},{1 + (i % 5) / 10}" for i in range(80)]
    (folder / "sales.csv").write_text("week,units,price\n" + "\n".join(rows) + "\n")
    argv = [
        "train", "--task", "forecast", "--data", str(folder / "sales.csv"),
        "--out", str(folder / "run"), "--quiet", "--epochs", "1",
        "--set", "data.target=units", "--set", "data.covariates=[price]",
        "--set", "model.hidden_size=4", "--set", "trainer.max_windows=2",
    ]  # fmt: skip
    assert main(argv) == 0
    return folder / "run"


# the covariate's training rows (70% of 80), whose mean and population deviation scale it
TRAIN_PRICE = np.array([1 + (i % 5) / 10 for i in range(56)])
COVARIATE_FAULTS = {
    "FIFO": (None, "is a FIFO (named pipe), not a regular file"),
    "1e308": ("price\n1.0\n1e308\n", "cov.csv: column 'price' row 1: 1e+308 is beyond"),
    "NUL": ("price\n1.0\n1\x00\n", "a NUL byte in row 1 (line 3), column 'price'"),
    "10**30": (f"price\n1\n{10**30}\n", "column 'price' row 1 (line 3) holds the integer"),
    "1e39 (beyond float32 once scaled)": (
        "price\n1.0\n1e39\n",
        f"'price' row 1 lies {(1e39 - TRAIN_PRICE.mean()) / TRAIN_PRICE.std():.3g} training",
    ),
    "header only": ("price\n", "a header ['price'] and no rows"),
}


@pytest.mark.parametrize("case", sorted(COVARIATE_FAULTS))
def test_forecast_covariates_at_the_edges_are_one_line(case, covariate_run, fifo, capsys):
    text, fragment = COVARIATE_FAULTS[case]
    path = fifo if text is None else fifo.parent / "cov.csv"
    if text is not None:
        path.write_bytes(text.encode())
    argv = ["forecast", "--out", str(covariate_run), "--horizon", "2", "--covariates", str(path)]
    assert_fault(capsys, covariate_run.parent, argv, fragment)


# --- faults at a command's edges ----------------------------------------------------------------


def test_an_export_the_disk_has_no_room_for_is_refused_before_writing(area, capsys, monkeypatch):
    import bayesrnn.app.export as export_module

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(export_module.shutil, "disk_usage", lambda path: usage(10**6, 10**6, 5))
    line = assert_fault(capsys, area, ["export", "--out", str(area / "run"), "--quiet"], "free")
    assert "posterior-2.nc needs about" in line and "0.0 MiB free" in line, line


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (OSError(28, "Can't close file (file write failed: time = ..., errno = 28)"),
         "(No space left on device); nothing of it is left"),
        (RuntimeError("Can't write data (file write failed: errno = 28)"),
         "(Can't write data (file write failed: errno = 28)); nothing of it is left"),
    ],
)  # fmt: skip
def test_a_failing_netcdf_writer_is_one_line_and_leaves_nothing(
    error, shown, area, capsys, monkeypatch
):
    import xarray as xr

    def full_disk(self, path, **options):
        Path(path).write_bytes(b"\x89HDF\r\n partial")
        raise error

    monkeypatch.setattr(xr.DataTree, "to_netcdf", full_disk)
    argv = ["export", "--out", str(area / "run"), "--quiet"]
    line = assert_fault(capsys, area, argv, "posterior-2.nc was not written")
    assert line.endswith(shown), line


def test_the_export_size_estimate_covers_the_file(workspace):
    import xarray as xr

    path = workspace / "run" / "posterior.nc"
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        estimate = export_size(tree.load())
    assert path.stat().st_size <= estimate <= path.stat().st_size + 300 * 2**10


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("rank", ["0", "1"])
def test_cuda_under_torchrun_without_a_gpu_is_one_line_from_rank_zero(
    rank, area, capsys, monkeypatch
):
    for name, value in (("WORLD_SIZE", "2"), ("RANK", rank), ("LOCAL_RANK", rank)):
        monkeypatch.setenv(name, value)
    before = snapshot(area)
    code, _, err = cli(capsys, *_run(area, "--device", "cuda"))
    assert code == 2
    lines = err.strip().splitlines()
    if rank == "0":
        assert len(lines) == 1 and "no CUDA device" in lines[0], lines
    else:
        assert lines == []
    assert snapshot(area) == before and not (area / "new").exists()


def test_an_evaluation_is_built_under_a_temporary_name(area, capsys, monkeypatch):
    import bayesrnn.app.pipeline as pipeline

    seen = []
    evaluate = pipeline._evaluate

    def watched(s, history, run, *args, **kwargs):
        seen.append((run.root.name, (area / "run" / "eval-2").exists()))
        return evaluate(s, history, run, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_evaluate", watched)
    code, _, err = cli(capsys, "evaluate", "--out", str(area / "run"), "--quiet")
    assert code == 0, err
    [(name, eval_2_existed)] = seen
    assert is_temporary(Path(name)) and name.startswith(".eval-2.") and not eval_2_existed
    assert json.loads((area / "run" / "eval-2" / "metrics.json").read_text())["test"]
    assert not [p.name for p in (area / "run").iterdir() if is_temporary(p)]


def test_a_killed_evaluations_leftover_does_not_push_the_next_to_eval_3(area, capsys):
    leftover = temporary_path(area / "run" / "eval-2")  # what a SIGKILL mid-evaluation leaves
    leftover.mkdir()
    (leftover / "reliability.png").write_bytes(b"half")
    code, _, err = cli(capsys, "evaluate", "--out", str(area / "run"), "--quiet")
    assert code == 0, err
    assert (area / "run" / "eval-2" / "metrics.json").is_file() and not leftover.exists()
    assert not (area / "run" / "eval-3").exists()


def test_warnings_are_dropped_before_a_users_fault_and_kept_after_success():
    with warnings.catch_warnings(record=True) as shown:  # what reaches the user's stderr
        warnings.simplefilter("always")
        with pytest.raises(ConfigError), warnings_held():
            warnings.warn("overflow encountered in reduce", RuntimeWarning, stacklevel=1)
            raise ConfigError("the fault")
        assert shown == []
        with warnings_held():
            warnings.warn("a note worth keeping", RuntimeWarning, stacklevel=1)
            assert shown == []  # held until the command ends
        assert [str(w.message) for w in shown] == ["a note worth keeping"]


def test_compare_of_an_export_with_infinite_log_likelihoods_is_one_line(tmp_path, capsys):
    import xarray as xr

    from tests.test_compare import write_run

    torch.manual_seed(0)
    good = write_run(tmp_path / "good", "mean_field")
    bad = write_run(tmp_path / "bad", "gal")
    with xr.open_datatree(bad / "posterior.nc", engine="h5netcdf") as tree:
        tree = tree.load()
    tree["log_likelihood"]["obs"].values[..., :3] = -np.inf
    (bad / "posterior.nc").unlink()
    tree.to_netcdf(bad / "posterior.nc", engine="h5netcdf")
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "compare", str(good), str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("bayesrnn compare: error: ") and "RuntimeWarning" not in err
    assert snapshot(tmp_path) == before
