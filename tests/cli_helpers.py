"""What the command-line tests share: calling ``bayesrnn`` in-process, and a tiny LM setting."""

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
