"""--early-stopping N sets trainer.early_stopping_patience; a run records its best epoch."""

import json

from bayesrnn.app.cli import main


def test_the_flag_is_the_trainer_setting(capsys):
    assert main(["run", "--print-config", "--early-stopping", "3"]) == 0
    assert "early_stopping_patience = 3" in capsys.readouterr().out
    assert main(["run", "--print-config", "--early-stopping", "0"]) == 2
    assert "early_stopping_patience must be None or a positive integer" in capsys.readouterr().err


def test_a_run_with_early_stopping_notes_its_best_epoch(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    words = [f"w{i % 11}" for i in range(1200)]
    text.write_text("\n".join(" ".join(words[i : i + 12]) for i in range(0, 1200, 12)))
    out = tmp_path / "run"
    code = main(
        [
            "train", "--data", str(text), "--out", str(out), "--epochs", "2",
            "--early-stopping", "1", "--quiet",
            "--set", "model.embedding_size=8", "--set", "model.hidden_size=8",
            "--set", "trainer.bptt=10", "--set", "trainer.batch_size=4",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    history = json.loads((out / "history.json").read_text())
    assert history["best_epoch"] in (1, 2)
    assert history["best_valid"] == min(history["valid_perplexity"])
    assert (out / "checkpoint.best.pt").is_file()
