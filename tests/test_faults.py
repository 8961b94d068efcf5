"""The fault table: every mistake a user can make ends in exit 2, one line on stderr, and no
earlier file changed; a start that fails leaves nothing that blocks a corrected rerun.

A 1×16 LSTM on a few hundred lines of text keeps each case cheap.
"""

import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bayesrnn.app.cli import main
from bayesrnn.app.run_lock import lock_run_dir
from tests.cli_helpers import cli, private_copy

REPO = Path(__file__).resolve().parents[1]

SMALL = [
    "--quiet",
    "--set", "model.embedding_size=16",
    "--set", "model.hidden_size=16",
    "--set", "trainer.batch_size=4",
    "--set", "trainer.eval_batch_size=4",
    "--set", "trainer.bptt=10",
    "--set", "trainer.max_windows=4",
    "--samples", "2",
    "--set", "evaluation.export_samples=2",
    "--set", "evaluation.pruning_fractions=0,0.5",
]  # fmt: skip


def _sentences(seed: int, lines: int = 400) -> str:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(50)]
    return "".join(
        " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + "\n" for _ in range(lines)
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_fault(capsys, root: Path, argv: list[str], fragment: str) -> str:
    """Exit 2, one stderr line that names the fault, and no file under ``root`` changed."""
    before = snapshot(root)
    code, _, err = cli(capsys, *argv)
    line = err.strip()
    assert code == 2, err
    assert len(line.splitlines()) == 1, err
    assert line.startswith(f"bayesrnn {argv[0]}: error: "), line
    assert fragment.lower() in line.lower(), line
    assert snapshot(root) == before
    return line


def trained_workspace(root: Path) -> Path:
    """``root`` with a text file and one trained run on it (read-only for the tests: copy
    before changing)."""
    (root / "notes.txt").write_text(_sentences(0))
    code = main(["run", "--out", str(root / "run"), "--data", str(root / "notes.txt"), *SMALL])
    assert code == 0
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return trained_workspace(tmp_path_factory.mktemp("faults"))


@pytest.fixture
def area(tmp_path, workspace):
    """A private copy of the workspace for a test that changes files (its run reads the copy's
    notes.txt)."""
    return private_copy(workspace, tmp_path)


def _run(area: Path, *extra: str, out: str = "new") -> list[str]:
    return ["run", "--out", str(area / out), "--data", str(area / "notes.txt"), *SMALL, *extra]


# --- settings and data refused before anything is written ---------------------------------------


def _write_bad_inputs(area: Path) -> None:
    (area / "empty.txt").write_text("")
    (area / "blank.txt").write_text("\n  \n\n")
    (area / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (area / "latin1.txt").write_bytes(_sentences(1).replace("w1 ", "caf\xe9 ").encode("latin-1"))
    (area / "one-word.txt").write_text("hello\n")
    (area / "folder-config").mkdir()
    (area / "binary.toml").write_bytes(b"\xff\xfe\x00[model]\x00")
    (area / "a-file").write_text("not a folder")
    split = area / "no-valid"
    split.mkdir()
    (split / "train.txt").write_text(_sentences(2))
    (split / "valid.txt").write_text("")
    (split / "test.txt").write_text(_sentences(3, lines=40))


START_FAULTS = {
    "negative seed": (["--seed", "-1"], "trainer.seed"),
    "seed too large": (["--seed", str(2**40)], "trainer.seed"),
    "unknown device": (["--device", "bogus"], "trainer.device"),
    "empty data file": (["--data", "{area}/empty.txt"], "non-blank lines"),
    "blank data file": (["--data", "{area}/blank.txt"], "non-blank lines"),
    "binary data file": (["--data", "{area}/binary.bin"], "not utf-8 text"),
    "latin-1 data file": (["--data", "{area}/latin1.txt"], "not utf-8 text"),
    "one-word data file": (["--data", "{area}/one-word.txt"], "too few"),
    "missing data file": (["--data", "{area}/nowhere.txt"], "not found"),
    "config is a folder": (["--config", "{area}/folder-config"], "is a folder"),
    "config is binary": (["--config", "{area}/binary.toml"], "not valid toml"),
    "config is missing": (["--config", "{area}/nowhere.toml"], "not found"),
    "vocabulary of one id": (["--set", "data.max_vocab=1"], "max_size=1"),
    "model too large": (["--set", "model.hidden_size=200000"], "does not fit in memory"),
    "hidden size of 2**62": (["--set", f"model.hidden_size={2**62}"], "model.hidden_size must lie"),
    "embedding size 1e23": (["--set", "model.embedding_size=1e23"], "model.embedding_size"),
    "a hundred thousand layers": (["--set", "model.num_layers=100000"], "model.num_layers"),
    "infinite init range": (["--set", "model.init_range=inf"], "model.init_range must lie"),
    "learning rate 1e39": (["--set", "trainer.lr=1e39"], "trainer.lr must lie"),
    "a hundred thousand particles": (
        ["--set", "trainer.num_particles=100000"],
        "trainer.num_particles must lie",
    ),
    "a million MC samples": (["--samples", "1000000"], "evaluation.mc_samples must lie"),
    "1e8 calibration bins": (["--set", "evaluation.n_bins=100000000"], "evaluation.n_bins"),
    "quadrature of 100000 nodes": (
        ["--set", "guide.quadrature_order=100000"],
        "guide.quadrature_order must lie",
    ),
    "no pruning fractions": (["--set", "evaluation.pruning_fractions=[]"], "pruning_fractions"),
    "batch larger than data": (["--set", "trainer.batch_size=100000"], "trainer.batch_size"),
    "window longer than data": (["--set", "trainer.bptt=100000"], "trainer.bptt"),
    "eval batch larger than data": (["--set", "trainer.eval_batch_size=100000"], "eval_batch_size"),
    "empty validation split": (["--data", "{area}/no-valid"], "valid split of the data is empty"),
    "out below a file": (["--out", "{area}/a-file/run"], "not a directory"),
    "out in an unwritable place": (["--out", "/proc/bayesrnn-run"], "/proc/bayesrnn-run"),
    "zero epochs": (["--epochs", "0"], "epochs"),
    "bad override": (["--set", "model.hidden_size"], "section.key=value"),
    "unknown key": (["--set", "model.hidden=3"], "unknown"),
}


if not torch.backends.mps.is_available():
    START_FAULTS["mps on a machine without it"] = (["--device", "mps"], "no Apple GPU (MPS)")


@pytest.mark.parametrize("case", sorted(START_FAULTS))
def test_a_bad_start_is_one_line_and_writes_nothing(case, area, capsys):
    _write_bad_inputs(area)
    extra, fragment = START_FAULTS[case]
    argv = _run(area, *(a.replace("{area}", str(area)) for a in extra))
    if case == "out in an unwritable place" and os.access("/proc", os.W_OK) is False:
        pytest.fail("expected /proc to exist on Linux")
    assert_fault(capsys, area, argv, fragment)
    assert not (area / "new").exists()


def test_a_corrected_rerun_after_a_failed_start_runs(area, capsys):
    assert_fault(capsys, area, _run(area, "--set", "trainer.bptt=100000"), "trainer.bptt")
    code, _, err = cli(capsys, *_run(area, "--set", "evaluation.export=false"))
    assert code == 0, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(area, capsys):
    assert_fault(capsys, area, _run(area, "--device", "cuda"), "no CUDA device")


# --- a run directory with damaged files ----------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign(path: Path) -> None:
    torch.save({"weights": torch.ones(3)}, path)


def _not_a_dict(path: Path) -> None:
    torch.save([torch.ones(3)], path)


def _wrong_shapes(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    payload["model"] = {k: torch.zeros(2, 2) for k in payload["model"]}
    torch.save(payload, path)


def _missing_history(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    del payload["history"]
    torch.save(payload, path)


def _nan_guide(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["guide"].items() if v.is_floating_point())
    payload["guide"][name] = torch.full_like(payload["guide"][name], float("nan"))
    torch.save(payload, path)


def _malicious(path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))

    torch.save({"model": Boom()}, path)


def _edit(change):
    """A checkpoint fault made by ``change(payload)``: it unpickles safely, with wrong contents."""

    def damage(path: Path) -> None:
        payload = torch.load(path, weights_only=True)
        change(payload)
        torch.save(payload, path)

    return damage


def _set(field, value):
    return _edit(lambda payload: payload.__setitem__(field, value))


def _drop(field):
    return _edit(lambda payload: payload.pop(field))


CHECKPOINT_FIELD_FAULTS = {
    "no optimizer": (_drop("optimizer"), "'optimizer' is missing"),
    "position a string": (_set("position", "3,4"), "'position'"),
    "position of length 1": (_set("position", [3]), "'position'"),
    "garbage plan": (_set("plan", "windows"), "'plan'"),
    "rng of the wrong size": (_set("torch_rng", torch.zeros(7, dtype=torch.uint8)), "torch_rng"),
    "history empty": (_set("history", {}), "'history'"),
    "history a string": (_set("history", "elbo"), "'history'"),
    "no window_rng": (_drop("window_rng"), "'window_rng' is missing"),
    "state of the wrong rank": (_set("state", [torch.zeros(3)]), "'state'"),
}


CHECKPOINT_FAULTS = {
    "truncated": (_truncate, "not a readable checkpoint"),
    "foreign": (_foreign, "not a bayesrnn checkpoint"),
    "not a dict": (_not_a_dict, "not a bayesrnn checkpoint"),
    "wrong shapes": (_wrong_shapes, "does not fit"),
    "missing history": (_missing_history, "'history'"),
    "NaN guide parameters": (_nan_guide, "non-finite"),
    "malicious pickle": (_malicious, "not a readable checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_FIELD_FAULTS))
@pytest.mark.parametrize("command", ["evaluate", "export", "resume"])
def test_a_checkpoint_with_wrong_contents_names_the_field(case, command, area, capsys):
    run = area / "run"
    damage, fragment = CHECKPOINT_FIELD_FAULTS[case]
    damage(run / "checkpoint.pt")
    if command == "resume":  # an unfinished run reads everything a resume needs
        (run / "metrics.json").unlink()
    argv = {
        "evaluate": ["evaluate", "--out", str(run), "--quiet"],
        "export": ["export", "--out", str(run), "--quiet"],
        "resume": _run(area, out="run"),
    }[command]
    line = assert_fault(capsys, area, argv, fragment)
    assert "checkpoint.pt is damaged" in line and "delete it" in line


@pytest.mark.parametrize("case", sorted(CHECKPOINT_FAULTS))
@pytest.mark.parametrize("command", ["evaluate", "export", "resume", "score"])
def test_a_damaged_checkpoint_is_named_with_what_to_do(case, command, area, capsys):
    damage, fragment = CHECKPOINT_FAULTS[case]
    run = area / "run"
    (run / "metrics.json").unlink()  # so that `run` resumes instead of reporting it finished
    damage(run / "checkpoint.pt")
    argv = {
        "evaluate": ["evaluate", "--out", str(run), "--quiet"],
        "export": ["export", "--out", str(run), "--quiet"],
        "resume": _run(area, out="run"),
        "score": ["score", "--out", str(run), str(area / "notes.txt")],
    }[command]
    line = assert_fault(capsys, area, argv, fragment)
    assert "checkpoint.pt" in line
    assert not Path("PWNED").exists() and not (area / "PWNED").exists()


DEEP_JSON = b"[" * 200_000 + b"]" * 200_000  # the parser recurses per level


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b'{"format": 1}', b'{"format": 99}', DEEP_JSON],
    ids=lambda content: str(content[:16]),
)
def test_a_damaged_vocabulary_file_is_named(content, area, capsys):
    (area / "run" / "vocab.json").write_bytes(content)
    line = assert_fault(
        capsys, area, ["evaluate", "--out", str(area / "run"), "--quiet"], "vocab.json"
    )
    assert "vocab.json" in line


@pytest.mark.parametrize(
    "content, fragment",
    [
        ([1, 2], "holds a list"),
        ("results", "holds a str"),
        ({"training": None}, "'training'"),
        ({"training": {}, "test": {"accuracy_mean": 0.5}}, "no 'mc'"),
    ],
    ids=["list", "string", "training null", "no mc"],
)
def test_a_damaged_metrics_file_of_a_finished_run_is_named(content, fragment, area, capsys):
    (area / "run" / "metrics.json").write_text(json.dumps(content))
    line = assert_fault(capsys, area, _run(area, out="run"), fragment)
    assert "metrics.json is damaged" in line


@pytest.mark.parametrize(
    "field, value", [("vocabulary", None), ("vocabulary", 5)], ids=["null", "a number"]
)
def test_a_vocabulary_file_without_its_table_is_named(field, value, area, capsys):
    path = area / "run" / "vocab.json"
    payload = json.loads(path.read_text())
    payload[field] = value
    path.write_text(json.dumps(payload))
    line = assert_fault(
        capsys, area, ["score", "--out", str(area / "run"), str(area / "notes.txt")], "vocab.json"
    )
    assert "not a table" in line


def test_a_forecast_runs_series_record_is_checked(tmp_path):
    from bayesrnn.app.run_data import read_run_data
    from bayesrnn.app.run_dir import JobError, RunDir

    good = {"columns": ["y", "x"], "targets": 1, "mean": [0.0, 1.0], "scale": [1.0, 2.0]}
    base = {
        "format": 1, "label_names": None, "vocabulary": None, "tokenizer": "whitespace",
        "task": "forecast", "data": "s.csv", "splits": {},
    }  # fmt: skip
    for series, fragment in [
        (5, "series is 5"),
        ({**good, "targets": 3}, "series.targets"),
        ({**good, "scale": [1.0, 0.0]}, "not positive"),
        ({**good, "mean": [0.0]}, "series.mean"),
    ]:
        (tmp_path / "vocab.json").write_text(json.dumps({**base, "series": series}))
        with pytest.raises(JobError, match=fragment):
            read_run_data(RunDir(tmp_path))
    (tmp_path / "vocab.json").write_text(json.dumps({**base, "series": good}))
    assert read_run_data(RunDir(tmp_path)).series == good


def test_deeply_nested_metrics_and_config_files_are_one_line(area, capsys):
    (area / "run" / "metrics.json").write_bytes(DEEP_JSON)
    assert_fault(capsys, area, _run(area, out="run"), "nested too deeply")
    deep = area / "deep.toml"
    deep.write_text("[trainer]\nepochs = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert_fault(capsys, area, [*_run(area), "--config", str(deep)], "nested too deeply")
    assert_fault(capsys, area, [*_run(area), "--set", "trainer.epochs=" + "[" * 100_000], "nested")


def test_an_export_that_reads_another_file_is_refused(area, capsys, tmp_path):
    import h5py

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(8, dtype="<f8").tobytes())
    nc = area / "outside.nc"
    with h5py.File(nc, "w") as handle:
        group = handle.create_group("log_likelihood")
        group.create_dataset("obs", shape=(8,), dtype="<f8", external=[(str(secret), 0, 64)])
    other = area / "other.nc"
    shutil.copy(nc, other)
    line = assert_fault(capsys, area, ["compare", str(nc), str(other)], "external storage")
    assert "log_likelihood/obs" in line


def test_evaluate_without_a_checkpoint(area, capsys):
    (area / "run" / "checkpoint.pt").unlink()
    assert_fault(capsys, area, ["evaluate", "--out", str(area / "run")], "train it first")


def test_evaluate_a_folder_that_is_no_run(area, capsys):
    assert_fault(capsys, area, ["evaluate", "--out", str(area)], "no config.toml")


def test_a_rerun_with_other_settings_is_refused(area, capsys):
    line = assert_fault(capsys, area, _run(area, "--seed", "3", out="run"), "different config")
    assert "trainer.seed" in line


# --- the data changed after training ------------------------------------------------------------


def _replace_training_words(area: Path, new: str) -> None:
    """Change words in the first lines only: the held-out lines (the file's end) stay."""
    lines = (area / "notes.txt").read_text().splitlines(keepends=True)
    lines[:20] = [line.replace("w7 ", f"{new} ") for line in lines[:20]]
    (area / "notes.txt").write_text("".join(lines))


def test_changed_training_data_stops_a_resume_but_not_an_evaluation(area, capsys):
    run = area / "run"
    reference = json.loads((run / "metrics.json").read_text())["test"]["perplexity_mean"]
    _replace_training_words(area, "brandnew")  # new words and other counts: ids would re-rank
    (run / "metrics.json").rename(run / "metrics.first.json")
    line = assert_fault(capsys, area, _run(area, out="run"), "train split")
    assert "vocab.json" in line
    # evaluation reads only test, which is unchanged: it proceeds with the saved vocabulary
    code, _, err = cli(capsys, "evaluate", "--out", str(run))
    assert code == 0, err
    again = json.loads((run / "metrics.json").read_text())["test"]["perplexity_mean"]
    assert again == pytest.approx(reference, rel=1e-9)
    assert "changed since training" in err


def test_changed_test_data_stops_an_evaluation(area, capsys):
    lines = (area / "notes.txt").read_text().splitlines(keepends=True)
    lines[-3:] = [line.replace("w3 ", "w4 ") for line in lines[-3:]]  # same size, other ids
    (area / "notes.txt").write_text("".join(lines))
    argv = ["evaluate", "--out", str(area / "run"), "--quiet"]
    line = assert_fault(capsys, area, argv, "test split")
    assert "vocab.json" in line and "other content" in line


def test_shuffled_lines_stop_a_resume(area, capsys):
    lines = (area / "notes.txt").read_text().splitlines(keepends=True)
    head = lines[:300]
    random.Random(1).shuffle(head)
    (area / "notes.txt").write_text("".join(head + lines[300:]))
    (area / "run" / "metrics.json").unlink()
    assert_fault(capsys, area, _run(area, out="run"), "train split")


# --- one process per run directory --------------------------------------------------------------


def test_a_second_process_on_a_busy_run_directory_is_refused(area, capsys):
    run = area / "run"
    with lock_run_dir(run, "the test's holder"):
        before = snapshot(area)
        for argv in (
            _run(area, out="run"),
            ["evaluate", "--out", str(run), "--quiet"],
            ["export", "--out", str(run), "--quiet"],
        ):
            (run / "metrics.json").rename(run / "m.json")  # or `run` would just report it
            code, _, err = cli(capsys, *argv)
            (run / "m.json").rename(run / "metrics.json")
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"pid {os.getpid()}" in err and "the test's holder" in err
        after = snapshot(area)
    assert {k: v for k, v in after.items() if k != "run/.lock"} == {
        k: v for k, v in before.items() if k != "run/.lock"
    }
    assert not (run / ".lock").exists()  # released and removed on the way out


def test_two_runs_started_together_on_one_directory(area):
    """Different seeds on one --out: one trains, the other is refused; never a mixed run."""
    out = area / "shared-out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    commands = [
        [sys.executable, "-m", "bayesrnn.app.cli", *_run(area, "--seed", str(seed), out=out.name)]
        for seed in (1, 2)
    ]
    processes = [
        subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    for p in processes:
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert len(refused.strip().splitlines()) == 1
    assert "in use by" in refused or "different config" in refused
    seed = int(next(line for line in (out / "config.toml").read_text().splitlines()
                    if line.startswith("seed")).split("=")[1])  # fmt: skip
    winner = commands[[code for code, _ in results].index(0)]
    assert winner[winner.index("--seed") + 1] == str(seed)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["seed"] == seed


# --- leftovers of killed writers ----------------------------------------------------------------


def test_temporaries_of_a_killed_write_do_not_block_the_directory(area, capsys):
    out = area / "new"
    out.mkdir()
    (out / f".config.toml.1234.{'d' * 32}.tmp").write_text("half a conf")  # killed first write
    code, _, err = cli(capsys, *_run(area, "--set", "evaluation.export=false"))
    assert code == 0, err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


# --- nothing in a run directory can be turned against its user ----------------------------------


def test_a_users_own_temporary_looking_files_are_kept(area, capsys):
    run = area / "run"
    mine = {".notes.tmp": "my notes", ".metrics.json.tmp": "draft", ".a.12.cafe.tmp": "x"}
    for name, text in mine.items():
        (run / name).write_text(text)
    stale = run / f".metrics.json.99.{'0' * 32}.tmp"  # what a killed writer of the package leaves
    stale.write_text("half")
    code, _, err = cli(capsys, "evaluate", "--out", str(run), "--quiet")
    assert code == 0, err
    assert {name: (run / name).read_text() for name in mine} == mine
    assert not stale.exists()


@pytest.mark.parametrize("command", ["evaluate", "run"])
def test_a_symlinked_lock_is_refused_and_its_target_untouched(command, area, capsys):
    run = area / ("run" if command == "evaluate" else "new")  # a run, and a fresh start
    run.mkdir(exist_ok=True)
    victim = area / "victim.txt"
    victim.write_text("precious")
    (run / ".lock").symlink_to(victim)
    argv = ["evaluate", "--out", str(run), "--quiet"] if command == "evaluate" else _run(area)
    assert_fault(capsys, area, argv, "symbolic link")
    assert victim.read_text() == "precious" and (run / ".lock").is_symlink()


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(area, capsys, monkeypatch):
    import bayesrnn.inference.training.checkpoint as checkpoint_module

    run = area / "run"
    (run / "metrics.json").unlink()
    (run / "history.json").unlink()
    shutil.copy(run / "config.toml", area / "config.toml")
    good = (run / "checkpoint.pt").read_bytes()

    def full(payload, handle):
        handle.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    argv = _run(area, "--set", "trainer.max_windows=6", "--set", "trainer.checkpoint_every=1")
    argv = [a if a != "trainer.max_windows=4" else "trainer.max_windows=6" for a in argv]
    code, _, err = cli(capsys, *[a for a in argv])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "disk full" in err and "checkpoint.pt" in err
    assert (run / "checkpoint.pt").read_bytes() == good
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


# --- divergence and overflow --------------------------------------------------------------------


def test_divergence_stops_with_the_last_good_checkpoint(area, capsys):
    argv = _run(
        area,
        "--set", "trainer.optimizer=adam", "--set", "trainer.lr=1e6",
        "--set", "trainer.checkpoint_every=1", "--set", "trainer.max_windows=40",
        "--set", "trainer.clip_norm=none",
    )  # fmt: skip
    code, _, err = cli(capsys, *argv)
    line = err.strip()
    assert code == 2 and len(line.splitlines()) == 1, err
    assert "epoch 1, window" in line and "checkpoint" in line
    out = area / "new"
    if (out / "checkpoint.pt").exists():  # the last good one loads and is finite
        payload = torch.load(out / "checkpoint.pt", weights_only=True)
        assert all(bool(torch.isfinite(v).all()) for v in payload["guide"].values())
        assert all(math.isfinite(v) for v in payload["history"]["nll"])


def test_an_overflowing_perplexity_is_inf_not_a_crash(area, capsys):
    run = area / "run"
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    for name, value in payload["guide"].items():  # a confident, wrong decoder: huge finite NLL
        if "decoder" in name and "loc" in name and value.dim() == 2:
            payload["guide"][name] = torch.randn_like(value) * 1e5
    torch.save(payload, run / "checkpoint.pt")
    code, out, err = cli(
        capsys, "evaluate", "--out", str(run), "--quiet", "--set", "evaluation.pruning=false"
    )
    assert code == 0, err
    metrics = json.loads((run / "eval-2" / "metrics.json").read_text())
    assert metrics["test"]["perplexity_mean"] is None  # inf, written as null
    assert metrics["test"]["posterior_mean"]["nll"] > 1000
    assert "inf" in out


# --- reruns and interrupts ----------------------------------------------------------------------


def test_rerunning_a_finished_run_changes_nothing(area, capsys):
    before = snapshot(area)
    code, out, err = cli(capsys, *[a for a in _run(area, out="run") if a != "--quiet"])
    assert code == 0, err
    assert "finished run" in err and "test perplexity" in out
    assert snapshot(area) == before


@pytest.fixture(scope="module")
def startup_seconds() -> float:
    """How long the interpreter takes to import the command here and now: a Ctrl-C before that
    lands in Python's own start-up, which no program can catch, so the delays count from it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import bayesrnn.app.cli"], env=env, check=True)
    return time.perf_counter() - start


@pytest.mark.parametrize("delay", [0.2, 0.8, 1.5, 2.5, 4.0])
def test_ctrl_c_at_any_stage_is_one_line_and_130(delay, area, startup_seconds):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = _run(area, "--set", "trainer.max_windows=100000", "--epochs", "50")
    process = subprocess.Popen(
        [sys.executable, "-m", "bayesrnn.app.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background (`&`) ignores SIGINT, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(startup_seconds + delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err, err
    out = area / "new"
    if out.exists():  # a rerun resumes (or starts) without complaint
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_ctrl_c_once_a_command_is_done_is_no_traceback():
    # the interrupt arrives after the command returned, as the interpreter exits
    script = (
        "import os, signal, sys\n"
        "from bayesrnn.app.cli import main\n"
        "sys.argv = ['bayesrnn', 'presets']\n"
        "status = main()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        timeout=120,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "zaremba-small" in done.stdout


def test_a_refused_write_during_evaluation_leaves_no_half_folder(area, capsys, monkeypatch):
    import bayesrnn.app.pipeline as job_module

    def refuse(path, payload):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(job_module, "write_json", refuse)
    line = assert_fault(
        capsys, area, ["evaluate", "--out", str(area / "run"), "--quiet"], "permission denied"
    )
    assert "metrics.json" in line
    assert not (area / "run" / "eval-2").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders regardless")
def test_a_read_only_run_directory(area, capsys):
    run = area / "run"
    run.chmod(0o555)
    try:
        assert_fault(capsys, area, ["evaluate", "--out", str(run), "--quiet"], "permission")
    finally:
        run.chmod(0o755)
