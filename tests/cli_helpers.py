"""What the command-line tests share: calling ``bayesrnn`` in-process, and a tiny LM setting."""

import shutil
from pathlib import Path

from bayesrnn.app.cli import main

# A language model small and short enough for a test to train, evaluate and export in seconds.
TINY = [
    "--quiet",
    "--set", "model.embedding_size=8",
    "--set", "model.hidden_size=8",
    "--set", "trainer.bptt=10",
    "--set", "trainer.max_windows=3",
    "--set", "trainer.eval_batch_size=5",
    "--samples", "2",
    "--set", "evaluation.max_tokens=300",
    "--set", "evaluation.export_samples=2",
    "--set", "evaluation.pruning_fractions=0,0.5",
]  # fmt: skip


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``bayesrnn ARGV`` in this process: its exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def private_copy(workspace: Path, tmp_path: Path) -> Path:
    """A copy of a trained ``workspace`` (a data file and ``run/``) for a test that changes
    files: the copy's run reads the copy's data, not the original's."""
    copy = tmp_path / "w"
    shutil.copytree(workspace, copy)
    config = copy / "run" / "config.toml"
    config.write_text(config.read_text().replace(str(workspace), str(copy)))
    return copy
