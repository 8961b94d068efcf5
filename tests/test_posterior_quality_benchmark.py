"""The posterior-quality benchmark's bookkeeping: command lines, tables and plot (no training)."""

import argparse
import json
import math

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("posterior_quality")


def options(tmp_path, **changes) -> argparse.Namespace:
    values = {
        "out": tmp_path,
        "quick": True,
        "samples": 5,
        "seed": 0,
        "nuts_seed": None,
        "nuts_chains": 2,
        "nuts_samples": 10,
        "nuts_warmup": 10,
        "nuts_set": ["guide.max_tree_depth=6"],
        "forecast_set": ["model.hidden_size=2"],
        "classify_set": [],
        "symbols_set": [],
        "symbols_small_set": [],
        "data_dir": tmp_path,
    }
    return argparse.Namespace(**(values | changes))


def settings_of(command: list[str]) -> list[str]:
    return [command[i + 1] for i, part in enumerate(command) if part == "--set"]


def test_each_method_runs_with_its_guide_and_the_users_settings_last(bench, tmp_path):
    args = options(tmp_path)
    nuts = settings_of(bench.run_command("forecast", "nuts", tmp_path / "n", args))
    assert "guide.name=nuts" in nuts and "guide.num_chains=2" in nuts
    assert nuts[-2:] == ["guide.max_tree_depth=6", "model.hidden_size=2"]
    assert nuts.index("model.hidden_size=2") > nuts.index("model.hidden_size=4")
    sample = settings_of(bench.run_command("classify", "mean_field_sample", tmp_path / "m", args))
    assert {"guide.name=mean_field", "guide.kl=sample"} <= set(sample)
    assert not any(s.startswith("guide.num_") for s in sample)
    assert "model.hidden_size=2" not in sample  # a forecast setting stays with the forecasts
    none = settings_of(bench.run_command("forecast", "none", tmp_path / "p", args))
    assert {"guide.name=none", "model.prior=none"} <= set(none)


def test_other_methods_take_other_seeds_against_one_nuts_reference(bench, tmp_path):
    args = options(tmp_path, seed=2, nuts_seed=0)
    nuts = settings_of(bench.run_command("forecast", "nuts", tmp_path / "n", args))
    gal = settings_of(bench.run_command("forecast", "gal", tmp_path / "g", args))
    assert "trainer.seed=0" in nuts and "trainer.seed=2" not in nuts
    assert "trainer.seed=2" in gal and "trainer.seed=0" not in gal
    # without --nuts-seed the reference takes --seed like every other method
    same = settings_of(bench.run_command("forecast", "nuts", tmp_path / "n", options(tmp_path)))
    assert "trainer.seed=0" in same
    seeded = options(tmp_path, seed=3, nuts_seed=None)
    assert "trainer.seed=3" in settings_of(bench.run_command("forecast", "nuts", tmp_path, seeded))


def test_tables_and_plot_show_failures_and_undefined_values(bench, tmp_path):
    results = {
        "reference": "nuts",
        "quick": True,
        "tasks": {
            "classify": {
                "reference": "nuts",
                "methods": {
                    "nuts": {
                        "distances": {"total_variation": 0.0},
                        "scores": {"nll": 0.6},
                        "mcmc": {"rhat_lp": 1.02, "divergences": 0},
                    },
                    "gal": {
                        "distances": {"total_variation": 0.125, "mutual_information_ratio": None},
                        "scores": {"nll": 0.7, "accuracy": 0.5},
                        "draws": 5,
                        "train_seconds": 1.5,
                    },
                    "ensemble": {"error": "guide.name must be one of ...", "exit_code": 2},
                },
            }
        },
    }
    bench.write_results(results, options(tmp_path))
    table = (tmp_path / "results.md").read_text()
    assert "| gal | 0.125 | – | – | – | 0.7 | 0.5 | 5 | 1.5 | – |" in table
    assert "| ensemble | failed: guide.name must be one of ... |" in table
    assert "`nuts` sampler: rhat_lp 1.02, divergences 0" in table
    assert (tmp_path / "posterior_quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_symbol_classes_and_corpus_cut_at_whole_lines(bench, tmp_path):
    assert [bench.symbol_of(c) for c in "aeyz_N<.7"] == list("vvcc_oooo")
    text = "t h e _ c a t\n\n< u n k > _ N\nn o t _ r e a d\n"
    # 7 symbols + <eos> = 8 < 10: the second line is taken too (16 in all), not the third
    assert bench.symbol_lines(text, 10) == ["c c v _ c v c", "o v c c o _ o"]
    with pytest.raises(SystemExit, match="fewer than the 99 needed"):
        bench.symbol_lines(text, 99)
    data = tmp_path / "data"
    (data / "ptb_char").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (data / "ptb_char" / f"ptb.char.{split}.txt").write_text(text * 300)
    args = options(tmp_path / "out", data_dir=data)
    folder = bench.write_symbol_corpus(data, bench.symbol_corpus_dir(args))
    lines = (folder / "train.txt").read_text().splitlines()
    symbols = sum(len(line.split()) + 1 for line in lines)  # each line's <eos> counts
    assert set(" ".join(lines).split()) == {"c", "v", "_", "o"}
    assert 3000 <= symbols < 3000 + 9  # stops at the line that reaches 3,000
    command = bench.run_command("symbols", "nuts", tmp_path / "n", args)
    assert command[command.index("--data") + 1] == str(folder)
    assert "--task" in command and command[command.index("--task") + 1] == "lm"


def test_the_small_symbols_task_cuts_less_training_text_into_its_own_folder(bench, tmp_path):
    text = "t h e _ c a t\n\n< u n k > _ N\n"  # 8 symbols a line with its <eos>
    data = tmp_path / "data"
    (data / "ptb_char").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (data / "ptb_char" / f"ptb.char.{split}.txt").write_text(text * 300)
    args = options(tmp_path / "out", data_dir=data, symbols_small_set=["trainer.lr=0.02"])
    small = bench.write_symbol_corpus(
        data, bench.symbol_corpus_dir(args, "symbols-small"), bench.SYMBOL_TASKS["symbols-small"]
    )
    assert small == tmp_path / "out" / "data" / "ptb-symbols-small"
    counts = {
        split: sum(
            len(line.split()) + 1 for line in (small / f"{split}.txt").read_text().splitlines()
        )
        for split in ("train", "valid", "test")
    }
    assert counts == {"train": 600, "valid": 504, "test": 1000}  # whole 8-symbol lines
    command = bench.run_command("symbols-small", "nuts", tmp_path / "n", args)
    assert command[command.index("--data") + 1] == str(small)
    settings = settings_of(command)
    # a 1x2 LSTM; 600 symbols as 10 sequences of 60 steps: the 20-step windows fit
    assert settings.index("model.hidden_size=2") > settings.index("model.hidden_size=3")
    assert settings.index("trainer.batch_size=10") > settings.index("trainer.batch_size=50")
    assert settings[-1] == "trainer.lr=0.02"  # the task's own option, last
    symbols = settings_of(bench.run_command("symbols", "nuts", tmp_path / "m", args))
    assert "trainer.lr=0.02" not in symbols and "model.hidden_size=2" not in symbols


def test_nuts_run_takes_no_epochs_and_is_reused_from_an_older_record(bench, tmp_path):
    args = options(tmp_path, quick=False)
    nuts = bench.run_command("symbols", "nuts", tmp_path / "symbols" / "nuts", args)
    assert not any(s.startswith("trainer.epochs=") for s in settings_of(nuts))
    other = settings_of(bench.run_command("symbols", "gal", tmp_path / "g", args))
    assert "trainer.epochs=400" in other
    # a NUTS run recorded with the epoch setting it ignores is still this run
    settings = nuts[nuts.index("--quiet") :]
    older = [*settings, "--set", "trainer.epochs=100"]
    run = tmp_path / "symbols" / "nuts"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    (tmp_path / "symbols" / "nuts.command.json").write_text(json.dumps(older))
    assert bench.train("symbols", "nuts", args, {"wall_seconds": 9.0})["reused"] is True
    # another method's record with other epochs is another run: refused
    (tmp_path / "symbols" / "gal.command.json").write_text(json.dumps(older))
    with pytest.raises(SystemExit, match="other settings"):
        bench.train("symbols", "gal", args, {})


def test_bfmi_is_the_mean_squared_energy_change_over_the_energy_variance(bench):
    # alternating energies: squared changes 1+1+1 = 3, squared deviations 4 x 0.25 = 1
    assert bench.bfmi([0.0, 1.0, 0.0, 1.0]) == pytest.approx(3.0)
    # a steady drift: three changes of 1 against squared deviations 1.5² + 0.5² + 0.5² + 1.5² = 5
    assert bench.bfmi([0.0, 1.0, 2.0, 3.0]) == pytest.approx(3 / 5)
    assert math.isnan(bench.bfmi([2.0, 2.0, 2.0]))


def test_seed_summary_averages_each_distance_and_counts_the_closest(tmp_path):
    seeds = load_benchmark("posterior_quality_seeds")

    def result(folder, a_w1, b_w1, b_error=False):
        methods = {
            "nuts": {"distances": {"wasserstein1": 0.0}, "scores": {"crps": 8.0}},
            "a": {"distances": {"wasserstein1": a_w1}, "scores": {"crps": 9.0 + a_w1}},
            "b": {"error": "failed"} if b_error else {"distances": {"wasserstein1": b_w1}},
        }
        (tmp_path / folder).mkdir()
        payload = {"tasks": {"sunspots": {"reference": "nuts", "methods": methods}}}
        (tmp_path / folder / "results.json").write_text(json.dumps(payload))
        return tmp_path / folder

    folders = [result("s0", 3.0, 4.0), result("s1", 5.0, 2.0)]
    table = seeds.summarise(seeds.load(folders))["sunspots"]["methods"]
    assert table["a"]["distances"]["wasserstein1"] == (4.0, 3.0, 5.0)
    assert table["a"]["scores"]["crps"] == (13.0, 12.0, 14.0)
    assert table["b"]["distances"]["wasserstein1"] == (3.0, 2.0, 4.0)
    # a closest on seed 0, b on seed 1; the reference is never a candidate
    assert (table["a"]["closest"], table["b"]["closest"], table["nuts"]["closest"]) == (1, 1, 0)
    # a method that failed on any seed is left out rather than averaged over fewer seeds
    third = seeds.summarise(seeds.load([*folders, result("s2", 1.0, 1.0, b_error=True)]))
    assert set(third["sunspots"]["methods"]) == {"nuts", "a"}
    assert "4 [3, 5]" in seeds.markdown(seeds.summarise(seeds.load(folders)))
    with pytest.raises(SystemExit, match=r"no results\.json"):
        seeds.load([tmp_path / "missing"])
