"""Faults that used to give silently wrong results: a series or a vocabulary changed after
training, comparisons of runs on other data, a monitor no validation reports, and the truth of
a divergence message. Each refusal is exit 2, one line on stderr, and no file changed.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from bayesrnn.app.cli import main
from bayesrnn.data import Vocabulary, rescale_series, split_series, vocabulary_fingerprint
from tests.cli_helpers import TINY, cli, private_copy
from tests.test_faults import _sentences, assert_fault

FORECAST = [
    "--quiet", "--task", "forecast", "--set", "data.target=y", "--epochs", "2",
    "--samples", "4", "--set", "evaluation.export_samples=2", "--set", "model.hidden_size=8",
]  # fmt: skip


def _write_series(path: Path, change=lambda i, y: y) -> None:
    rows = ["t,y"] + [
        f"{i},{change(i, 10 + 5 * math.sin(i / 3) + 0.1 * i):.4f}" for i in range(120)
    ]
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def series_workspace(tmp_path_factory):
    """A 120-row CSV (84 train, 18 valid, 18 test rows) and a forecast run trained on it."""
    root = tmp_path_factory.mktemp("series")
    _write_series(root / "s.csv")
    argv = ["run", "--data", str(root / "s.csv"), "--out", str(root / "run"), *FORECAST]
    assert main(argv) == 0
    return root


@pytest.fixture
def series_area(tmp_path, series_workspace):
    return private_copy(series_workspace, tmp_path)


def _resume(area: Path) -> list[str]:
    (area / "run" / "metrics.json").unlink()  # as if killed before its evaluation
    return ["run", "--data", str(area / "s.csv"), "--out", str(area / "run"), *FORECAST]


# --- 1. a series changed after training ---------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [lambda i, y: 2 * y, lambda i, y: y + 1000],
    ids=["doubled", "plus 1000"],
)
@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_a_rescaled_target_is_refused(change, command, series_area, capsys):
    """Doubled or shifted, the target standardises to the same values with its own new
    statistics: only the run's statistics show the change."""
    _write_series(series_area / "s.csv", change)
    if command == "resume":
        argv = _resume(series_area)
    else:
        argv = ["evaluate", "--out", str(series_area / "run"), "--quiet"]
    line = assert_fault(capsys, series_area, argv, "train split")
    assert "vocab.json" in line and "the same 84 items, other content" in line


def test_unchanged_series_evaluates_to_the_runs_own_scores(series_area, capsys):
    run = series_area / "run"
    code, _, err = cli(capsys, "evaluate", "--out", str(run), "--quiet")
    assert code == 0, err
    first = json.loads((run / "metrics.json").read_text())["test"]["crps"]
    again = json.loads((run / "eval-2" / "metrics.json").read_text())["test"]["crps"]
    assert again == pytest.approx(first, rel=1e-12)


def test_changed_test_rows_are_a_note_when_only_valid_is_read(series_area, capsys):
    run = series_area / "run"
    _write_series(series_area / "s.csv", lambda i, y: y + 1000 if i >= 110 else y)
    argv = ["evaluate", "--out", str(run), "--set", "evaluation.split=valid"]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert "note: the test split(s) changed since training" in err
    argv = ["evaluate", "--out", str(run), "--quiet"]
    assert_fault(capsys, series_area, argv, "test split")


def test_a_target_stretched_about_its_mean_stops_the_forecast_command(series_area, capsys):
    """The same training mean, twice the spread: the run's scale must be compared too."""
    mean = json.loads((series_area / "run" / "vocab.json").read_text())["series"]["mean"][0]
    _write_series(series_area / "s.csv", lambda i, y: 2 * (y - mean) + mean)
    argv = ["forecast", "--out", str(series_area / "run"), "--horizon", "2", "--samples", "5"]
    argv += ["--output", str(series_area / "f.csv")]
    assert_fault(capsys, series_area, argv, "training statistics")


def test_rescaling_uses_the_runs_statistics():
    """Hand-computed: rows 0..11 of y = 2i (train 0..6: mean 6, population sd 4) rescaled with
    a recorded mean 1 and scale 2 give (2i − 1)/2; the covariate x = i, (i − 3)/2."""
    values = torch.tensor([[2.0 * i, float(i)] for i in range(12)], dtype=torch.float64)
    corpus = split_series(values, ["y", "x"], fractions=(0.6, 0.2, 0.2))
    assert corpus.mean.tolist() == pytest.approx([6.0, 3.0])
    assert corpus.scale.tolist() == pytest.approx([4.0, 2.0])
    saved = {"columns": ["y", "x"], "targets": 1, "mean": [1.0, 3.0], "scale": [2.0, 2.0]}
    again = rescale_series(corpus, saved)
    expected_y = torch.tensor([(2.0 * i - 1) / 2 for i in range(12)])
    expected_x = torch.tensor([(i - 3.0) / 2 for i in range(12)])
    assert torch.allclose(again.full()[:, 0], expected_y, atol=1e-6)
    assert torch.allclose(again.full()[:, 1], expected_x, atol=1e-6)
    assert again.sizes() == corpus.sizes() and again.mean.tolist() == [1.0, 3.0]
    same = {**saved, "mean": corpus.mean.tolist(), "scale": corpus.scale.tolist()}
    assert rescale_series(corpus, same) is corpus
    with pytest.raises(ValueError, match=r"trained on \['y', 'z'\]"):
        rescale_series(corpus, {**saved, "columns": ["y", "z"]})


# --- 2. a vocabulary edited after training ------------------------------------------------------


@pytest.fixture(scope="module")
def text_workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    (root / "notes.txt").write_text(_sentences(0))
    (root / "score.txt").write_text(_sentences(5, lines=30))
    argv = ["run", "--out", str(root / "run"), "--data", str(root / "notes.txt"), *TINY]
    assert main(argv) == 0
    return root


@pytest.fixture
def text_area(tmp_path, text_workspace):
    return private_copy(text_workspace, tmp_path)


def _edit_vocabulary(area: Path, change) -> None:
    path = area / "run" / "vocab.json"
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def _swap(payload: dict) -> None:
    itos = payload["vocabulary"]["itos"]
    itos[5], itos[6] = itos[6], itos[5]


def test_the_vocabulary_fingerprint_is_of_the_table():
    table = Vocabulary(["<unk>", "a", "b"], unk_token="<unk>", eos_token=None)
    assert vocabulary_fingerprint(table) == vocabulary_fingerprint(
        Vocabulary.from_dict(table.to_dict())
    )
    for other in (
        Vocabulary(["<unk>", "b", "a"], unk_token="<unk>", eos_token=None),  # two tokens swapped
        Vocabulary(["<unk>", "a", "c"], unk_token="<unk>", eos_token=None),  # one renamed
        Vocabulary(["<unk>", "a", "b"], unk_token=None, eos_token=None),  # <unk> not special
    ):
        assert vocabulary_fingerprint(other) != vocabulary_fingerprint(table)


@pytest.mark.parametrize("command", ["score", "evaluate", "export"])
def test_a_vocabulary_with_two_tokens_swapped_is_refused(command, text_area, capsys):
    _edit_vocabulary(text_area, _swap)
    run = str(text_area / "run")
    argv = {
        "score": ["score", "--out", run, str(text_area / "score.txt")],
        "evaluate": ["evaluate", "--out", run, "--quiet"],
        "export": ["export", "--out", run, "--quiet"],
    }[command]
    line = assert_fault(capsys, text_area, argv, "vocab.json no longer holds the vocabulary")
    assert "restore the file from a backup" in line


@pytest.mark.parametrize("command", ["score", "evaluate"])
def test_a_consistent_vocabulary_of_other_words_is_refused_by_the_checkpoint(
    command, text_area, capsys
):
    """A vocab.json whose table and fingerprint agree (another run's, or edited with care) but
    differ from what the checkpoint was trained with."""

    def swap_and_refingerprint(payload: dict) -> None:
        _swap(payload)
        table = Vocabulary.from_dict(payload["vocabulary"])
        payload["vocabulary_sha256"] = vocabulary_fingerprint(table)

    _edit_vocabulary(text_area, swap_and_refingerprint)
    payload = torch.load(text_area / "run" / "checkpoint.pt", weights_only=True)
    assert len(payload["vocabulary_sha256"]) == 64
    run = str(text_area / "run")
    argv = {
        "score": ["score", "--out", run, str(text_area / "score.txt")],
        "evaluate": ["evaluate", "--out", run, "--quiet"],
    }[command]
    line = assert_fault(capsys, text_area, argv, "is not the vocabulary")
    assert "vocab.json" in line and "checkpoint.pt was trained with" in line


def test_an_older_vocabulary_file_without_its_fingerprint_is_read_with_a_note(text_area, capsys):
    argv = ["score", "--out", str(text_area / "run"), str(text_area / "score.txt")]
    code, before, err = cli(capsys, *argv)
    assert code == 0, err
    _edit_vocabulary(text_area, lambda payload: payload.pop("vocabulary_sha256"))
    code, after, err = cli(capsys, *argv)
    assert code == 0, err
    assert after == before  # the same perplexity: the table is the one trained with
    code, _, err = cli(capsys, "evaluate", "--out", str(text_area / "run"))
    assert code == 0, err
    assert "has no fingerprint of its vocabulary" in err


# --- 4. trainer.monitor must name a metric of the task ------------------------------------------


@pytest.mark.parametrize(
    "task, monitor, valid",
    [
        ("lm", "valid_accuracy", "valid_perplexity"),
        ("lm", "valid_nll", "valid_perplexity"),
        ("forecast", "valid_perplexity", "valid_nll"),
        ("forecast", "valid_accuracy", "valid_nll"),
        ("classify", "valid_perplexity", "valid_accuracy, valid_nll"),
    ],
)
def test_a_monitor_the_task_does_not_report_is_refused_at_once(
    task, monitor, valid, tmp_path, capsys
):
    (tmp_path / "notes.txt").write_text(_sentences(0, lines=40))
    out = tmp_path / "out"
    argv = [
        "run", "--task", task, "--data", str(tmp_path / "notes.txt"), "--out", str(out),
        "--quiet", "--set", f"trainer.monitor={monitor}",
    ]  # fmt: skip
    line = assert_fault(capsys, tmp_path, argv, f"trainer.monitor={monitor}")
    assert line.endswith(f"use one of {valid}"), line
    assert not out.exists()


@pytest.mark.parametrize("task", ["lm", "forecast"])
def test_each_tasks_monitor_names_what_its_validation_reports(task, tmp_path, capsys):
    """The names the config accepts are the ones the trainer's validation records."""
    from bayesrnn.app.config import TASK_MONITORS

    if task == "lm":
        data = tmp_path / "data.txt"
        data.write_text(_sentences(0, lines=200))
        extra = [*TINY, "--set", "trainer.max_windows=none", "--epochs", "1"]
    else:
        data = tmp_path / "data.csv"
        _write_series(data)
        extra = FORECAST
    (name,) = TASK_MONITORS[task]
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(out), *extra]
    argv += ["--set", f"trainer.monitor={name}"]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    history = json.loads((out / "history.json").read_text())
    reported = {k for k, v in history.items() if k.startswith("valid_") and v}
    assert reported == {name}


# --- 5. a divergence message says what exists and what to do -----------------------------------

DIVERGING = {
    "lm at lr 100 without clipping": (
        "notes.txt",
        ["--set", "trainer.lr=100", "--set", "trainer.clip_norm=none", "--epochs", "1",
         "--set", "model.embedding_size=8", "--set", "model.hidden_size=8",
         "--set", "trainer.bptt=10"],
    ),
    "forecast at SGD lr 1e4": (
        "s.csv",
        ["--task", "forecast", "--set", "data.target=y", "--set", "trainer.optimizer=sgd",
         "--set", "trainer.lr=1e4", "--set", "model.hidden_size=8"],
    ),
    # two epochs of one window each: no streak of 5, the validation NLL alone stops it
    "forecast at SGD lr 1e4, 2 epochs": (
        "s.csv",
        ["--task", "forecast", "--set", "data.target=y", "--set", "trainer.optimizer=sgd",
         "--set", "trainer.lr=1e4", "--set", "model.hidden_size=8", "--epochs", "2"],
    ),
}  # fmt: skip


def _diverging(tmp_path: Path, case: str, out: Path) -> list[str]:
    name, extra = DIVERGING[case]
    if name == "s.csv":
        _write_series(tmp_path / name)
    else:
        (tmp_path / name).write_text(_sentences(0))
    return ["run", "--data", str(tmp_path / name), "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize("case", sorted(DIVERGING))
def test_a_run_diverged_before_its_first_checkpoint_leaves_nothing(case, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _diverging(tmp_path, case, out)
    line = assert_fault(capsys, tmp_path, argv, "before any checkpoint was written")
    assert f"{out} held nothing of value and was removed" in line
    assert "run again with a lower trainer.lr" in line
    assert not out.exists()


def test_an_empty_out_directory_of_the_user_is_kept(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    argv = _diverging(tmp_path, "lm at lr 100 without clipping", out)
    line = assert_fault(capsys, tmp_path, argv, "before any checkpoint was written")
    assert "was emptied of the files this command wrote" in line
    assert out.is_dir() and not any(out.iterdir())


def test_files_of_an_earlier_start_are_kept_and_named(tmp_path, capsys):
    out = tmp_path / "run"
    argv = _diverging(tmp_path, "lm at lr 100 without clipping", out)
    code, config, err = cli(capsys, *argv, "--print-config")
    assert code == 0, err
    out.mkdir()
    (out / "config.toml").write_text(config)  # an earlier start, killed before its checkpoint
    line = assert_fault(capsys, tmp_path, argv, "before any checkpoint was written")
    assert f"{out} holds only config.toml from an earlier start" in line
    assert sorted(p.name for p in out.iterdir()) == ["config.toml"]


def test_a_kept_checkpoint_is_named_with_what_to_do(text_area, capsys, monkeypatch):
    """The trainer stops with its checkpoint on disk: nothing is removed, and the message says
    how to use it."""
    import bayesrnn.app.pipeline as pipeline
    from bayesrnn.inference.training.divergence import training_stopped

    run = text_area / "run"
    for name in ("metrics.json", "history.json"):
        (run / name).unlink()

    def diverge(s, run_dir, log):
        raise training_stopped("epoch 1, window 9", "non-finite loss (nan)", run_dir.checkpoint)

    monkeypatch.setattr(pipeline, "train_language_model", diverge)
    argv = ["run", "--data", str(text_area / "notes.txt"), "--out", str(run), *TINY]
    line = assert_fault(capsys, text_area, argv, "the last good checkpoint is left intact")
    assert f"bayesrnn evaluate --out {run}` scores it as it is" in line
    assert "use another --out" in line


def test_an_infinite_weight_decay_is_refused_before_any_file(tmp_path, capsys):
    out = tmp_path / "run"
    argv = _diverging(tmp_path, "lm at lr 100 without clipping", out)
    argv += ["--set", "trainer.weight_decay=inf"]
    assert_fault(capsys, tmp_path, argv, "trainer.weight_decay must lie in")
    assert not out.exists()


# --- 3. compare: the same words, and one float log-likelihood per observation and draw ---------


def _export(path: Path, words: list[str] | None, seed: int = 0) -> Path:
    """A 25-draw export of a 13-word language model on a fixed id stream; ``words`` names the
    ids (None: an export written without its vocabulary)."""
    from bayesrnn.app.compare import MIN_DRAWS
    from bayesrnn.evaluation.arviz_export import export_language_model
    from bayesrnn.inference import MeanFieldGuide
    from bayesrnn.models import GaussianPrior, LanguageModel

    torch.manual_seed(seed)
    model = LanguageModel(13, 8, 8, num_layers=1, prior=GaussianPrior(1.0))
    stream = (torch.arange(60) * 5 + torch.arange(60) // 7) % 13
    tree = export_language_model(
        model, MeanFieldGuide(model), stream, MIN_DRAWS, batch_size=3, bptt=8, split="test",
        vocabulary=words,
    )  # fmt: skip
    tree.to_netcdf(path, engine="h5netcdf")
    return path


WORDS = [f"w{i}" for i in range(13)]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Exports on one id stream: "a" and "b" name the ids w0…, "other" x0…, "older" not at all."""
    root = tmp_path_factory.mktemp("exports")
    return {
        "a": _export(root / "a.nc", WORDS),
        "b": _export(root / "b.nc", WORDS, seed=1),
        "other": _export(root / "c.nc", [f"x{i}" for i in range(13)], seed=1),
        "older": _export(root / "d.nc", None, seed=1),
    }


def _copies(tmp_path: Path, exports: dict[str, Path], *names: str) -> list[Path]:
    return [Path(shutil.copy(exports[name], tmp_path / exports[name].name)) for name in names]


def test_runs_on_other_words_with_the_same_ids_are_refused(exports, tmp_path, capsys):
    first, same, other, older = _copies(tmp_path, exports, "a", "b", "other", "older")
    code, _, err = cli(capsys, "compare", str(first), str(same))
    assert code == 0, err  # the control: the same words compare
    code, _, err = cli(capsys, "compare", str(first), str(older))
    assert code == 0, err  # an export without the words' fingerprint: ids alone
    line = assert_fault(capsys, tmp_path, ["compare", str(first), str(other)], "different words")
    assert "a.nc" in line and "c.nc" in line


def _edit_log_likelihood(path: Path, change) -> None:
    import xarray as xr

    with xr.open_datatree(path, engine="h5netcdf") as tree:
        tree.load()
    tree["log_likelihood"] = change(tree["log_likelihood"].to_dataset())
    tree.to_netcdf(path, engine="h5netcdf", mode="w")


LOG_LIKELIHOOD_FAULTS = {
    "strings": (lambda ds: ds.assign(obs=ds.obs.astype(str)), "holds <U"),
    "part of the tokens": (lambda ds: ds.isel(token=slice(0, -5)), "covers 52 of the 57"),
    "no chain": (lambda ds: ds.isel(chain=0), "without the (chain, draw)"),
    "other positions": (
        lambda ds: ds.assign_coords(token=ds.token.values + 1),
        "label the 'token' dim differently",
    ),
    "NaN": (lambda ds: ds.assign(obs=ds.obs.where(ds.token != ds.token[3])), "holds NaN"),
    "other dims": (lambda ds: ds.rename({"token": "word"}), "observation dims ('word',)"),
}


@pytest.mark.parametrize("case", sorted(LOG_LIKELIHOOD_FAULTS))
def test_a_log_likelihood_that_is_not_one_float_per_observation_is_refused(
    case, exports, tmp_path, capsys
):
    change, fragment = LOG_LIKELIHOOD_FAULTS[case]
    good, bad = _copies(tmp_path, exports, "a", "b")
    _edit_log_likelihood(bad, change)
    line = assert_fault(capsys, tmp_path, ["compare", str(good), str(bad)], fragment)
    assert "b.nc: log_likelihood['obs']" in line
