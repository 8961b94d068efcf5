"""The forecaster schedule benchmark's bookkeeping: the commands it runs and its table."""

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("forecast_schedule")


def test_each_schedule_reaches_the_command_as_its_two_settings(bench, tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(bench, "bayesrnn_main", lambda command: commands.append(command))
    run = bench.train(tmp_path, 3, "decay-300-fast")
    (command,) = commands
    sets = [command[i + 1] for i, part in enumerate(command) if part == "--set"]
    assert "trainer.constant_epochs=300" in sets and "trainer.lr_decay=1.0155" in sets
    assert command[:6] == ["run", "--preset", "forecast", "--seed", "3", "--out"]
    assert run == tmp_path / "decay-300-fast-seed3"


def test_a_failed_training_stops_the_study(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "bayesrnn_main", lambda command: 2)
    with pytest.raises(SystemExit, match="constant seed 0 failed with exit code 2"):
        bench.train(tmp_path, 0, "constant")


def test_the_table_gives_the_mean_over_seeds_then_each_seed(bench):
    def seed(elbo, crps):
        scores = {"crps": crps, "coverage_90": 0.9}
        return {"train": {"elbo": elbo, "kl": 0.1}, "valid": scores, "test": scores}

    results = {"decay-200": {"0": seed(-0.7, 9.0), "1": seed(-0.8, 10.0)}, "constant": {}}
    table = bench.table(results)
    (row,) = [line for line in table.splitlines() if line.startswith("| decay-200")]
    assert "| decay-200 (200, 1.01) | 0, 1 | -0.7500 (-0.7000 / -0.8000) |" in row
    assert "9.50 (9.00 / 10.00)" in row
    assert "| constant (" not in table  # a schedule with no finished seed has no row
