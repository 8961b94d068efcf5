"""The command writes the library's log records to stderr (INFO, or WARNING with --quiet); the
library alone writes nothing and adds no handler but a NullHandler."""

import logging
import os

import pytest

import bayesrnn
from bayesrnn.app.cli import main
from bayesrnn.app.logs import cli_logging
from bayesrnn.app.setup import stderr_log


def _train(tmp_path, capsys, *extra: str) -> tuple[int, str]:
    text = tmp_path / "notes.txt"
    words = [f"w{i % 11}" for i in range(1200)]
    text.write_text("\n".join(" ".join(words[i : i + 12]) for i in range(0, 1200, 12)))
    code = main(
        [
            "train", "--data", str(text), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--set", "model.embedding_size=8", "--set", "model.hidden_size=8",
            "--set", "trainer.bptt=10", "--set", "trainer.batch_size=4", *extra,
        ]
    )  # fmt: skip
    return code, capsys.readouterr().err


def _handlers() -> list[logging.Handler]:
    return list(logging.getLogger("bayesrnn").handlers)


def test_the_command_logs_info_lines_to_stderr_and_cleans_up(tmp_path, capsys):
    before = _handlers()
    code, err = _train(tmp_path, capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert any(line.startswith("data: ") for line in lines)  # the app's bayesrnn.app.setup
    assert any(line.startswith("epoch 1/1: ") and "train NLL" in line for line in lines)
    assert any(line.startswith("epoch 1: valid perplexity") for line in lines)
    assert _handlers() == before  # main removes its handler when it returns


def test_quiet_prints_no_info_lines(tmp_path, capsys):
    code, err = _train(tmp_path, capsys, "--quiet")
    assert code == 0, err
    assert err == ""


def test_the_library_has_only_a_null_handler(capsys):
    assert [type(h) for h in logging.getLogger("bayesrnn").handlers] == [logging.NullHandler]
    assert bayesrnn.__version__
    stderr_log("a progress line")  # the app's Log callables stay callable
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("quiet", "shown"), [(False, ["step", "warning: careful"]), (True, ["warning: careful"])]
)
def test_cli_logging_levels_and_warning_prefix(capsys, quiet, shown):
    with cli_logging(quiet=quiet):
        logging.getLogger("bayesrnn.inference.training.trainer").info("step")
        logging.getLogger("bayesrnn.app.pipeline").warning("careful")
        logging.getLogger("elsewhere").warning("not ours")
    assert capsys.readouterr().err.splitlines() == shown


def test_torchs_cuda_home_notice_is_dropped_on_a_cpu_machine(tmp_path):
    # torch logs "No CUDA runtime is found" when it finds CUDA files (CUDA_HOME) but no GPU:
    # seen with the package's compiled kernels on CPU-only machines. Importing the package
    # drops that notice and nothing else.
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "if sys.argv[1] == 'package': import bayesrnn\n"
        "import torch.utils.cpp_extension\n"
        "logging.getLogger('torch.utils.cpp_extension').warning('another notice')\n"
    )
    env = {**os.environ, "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    runs = {
        who: subprocess.run(
            [sys.executable, "-c", script, who], env=env, capture_output=True, text=True
        )
        for who in ("torch", "package")
    }
    assert "No CUDA runtime is found" in runs["torch"].stderr  # the notice the test is about
    assert "No CUDA runtime is found" not in runs["package"].stderr
    assert "another notice" in runs["package"].stderr
