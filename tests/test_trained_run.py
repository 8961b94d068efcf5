"""``bayesrnn.load_run`` and ``bayesrnn score``: a trained run reused without its data."""

import json
import math
import random
import shutil

import pyro
import pytest
import torch
from pyro import poutine

import bayesrnn
from bayesrnn.app.cli import main
from bayesrnn.app.run_dir import JobError
from bayesrnn.data import Vocabulary, embedded_split_text
from bayesrnn.inference import posterior_mean

SMALL = [
    "--quiet",
    "--set", "model.embedding_size=16",
    "--set", "model.hidden_size=16",
    "--set", "trainer.batch_size=4",
    "--set", "trainer.eval_batch_size=3",
    "--set", "trainer.bptt=7",
    "--set", "trainer.max_windows=6",
    "--samples", "2",
    "--set", "evaluation.export=false",
    "--set", "evaluation.pruning=false",
]  # fmt: skip


def _lines(seed: int, count: int) -> str:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    return "".join(
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "\n" for _ in range(count)
    )


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run on a folder with train/valid/test files (the test file is what we score)."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    data.mkdir()
    for name, seed, count in (("train", 0, 300), ("valid", 1, 30), ("test", 2, 40)):
        (data / f"{name}.txt").write_text(_lines(seed, count))
    out = root / "run"
    assert main(["run", "--out", str(out), "--data", str(data), *SMALL]) == 0
    return out, data


def test_the_runs_own_test_text_reproduces_its_metrics(folder_run, tmp_path):
    out, data = folder_run
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    # the data is gone: the run needs only its own files
    moved = tmp_path / "elsewhere"
    shutil.move(str(data), moved)
    try:
        run = bayesrnn.load_run(out)
        assert isinstance(run.vocabulary, Vocabulary) and run.config.task == "lm"
        assert isinstance(run.model, torch.nn.Module) and run.guide is not None
        score = run.score_text((moved / "test.txt").read_text())
    finally:
        shutil.move(str(moved), data)
    assert score.perplexity == pytest.approx(metrics["perplexity_mean"], rel=1e-9)
    assert score["perplexity"] == score.perplexity
    assert score.tokens == metrics["posterior_mean"]["tokens"]
    finite = score.token_entropy[~torch.isnan(score.token_entropy)]
    assert float(finite.mean()) == pytest.approx(
        metrics["posterior_mean"]["predictive_entropy"], rel=1e-9
    )
    assert run.metrics["test"]["perplexity_mean"] == metrics["perplexity_mean"]


def test_token_entropies_line_up_with_the_text(folder_run):
    """Against a materialised reference: each parallel sequence run whole, posterior mean."""
    out, data = folder_run
    run = bayesrnn.load_run(out)
    text = (data / "valid.txt").read_text()
    score = run.score_text(text)
    ids = score.token_ids
    batch = run.config.trainer.eval_batch_size
    steps = ids.numel() // batch
    mean = posterior_mean(run.guide, ids[:2].unsqueeze(1), ids[1:3].unsqueeze(1))
    expected = torch.full((ids.numel(),), math.nan, dtype=torch.float64)
    with torch.no_grad():
        for b in range(batch):
            column = ids[b * steps : (b + 1) * steps].unsqueeze(1)
            logits, _ = poutine.condition(run.model, data=mean)(column[:-1])
            log_p = torch.log_softmax(logits.double(), -1)[:, 0]
            expected[b * steps + 1 : (b + 1) * steps] = -(log_p.exp() * log_p).sum(-1)
    both = ~torch.isnan(expected)
    assert torch.equal(both, ~torch.isnan(score.token_entropy))
    assert torch.allclose(score.token_entropy[both], expected[both], atol=1e-5)


def test_monte_carlo_scores_and_short_texts(folder_run):
    out, _ = folder_run
    run = bayesrnn.load_run(out)
    text = "w1 w2 w3\nw4 w5 w6 w7\n"
    mean, mc = run.score_text(text), run.score_text(text, num_samples=4)
    assert mc.num_samples == 4 and mean.num_samples == 0
    assert math.isfinite(mc.perplexity) and mc.perplexity != mean.perplexity
    assert run.score_text("never seen words here\n").tokens > 0  # unknown words are <unk>
    with pytest.raises(ValueError, match="at least 2"):
        run.score_text("")
    with pytest.raises(ValueError, match="num_samples"):
        run.score_text(text, num_samples=-1)
    with pytest.raises(JobError, match="classify_text"):
        run.classify_text(text)


def test_score_on_the_command_line(folder_run, capsys):
    out, data = folder_run
    expected = bayesrnn.load_run(out).score_text((data / "test.txt").read_text())
    assert main(["score", "--out", str(out), str(data / "test.txt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["perplexity"] == pytest.approx(expected.perplexity, rel=1e-12)
    assert main(["score", "--out", str(out), str(data / "test.txt")]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["score", "--out", str(out), str(data / "nowhere.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere.txt" in err
    assert main(["score", "--out", str(data), str(data / "test.txt")]) == 2
    assert "no config.toml" in capsys.readouterr().err


def test_an_embedded_run_scores_its_test_paragraphs(tmp_path):
    out = tmp_path / "embedded"
    argv = ["run", "--out", str(out), *SMALL, "--set", "evaluation.reversed_text=false"]
    assert main(argv) == 0
    reference = json.loads((out / "metrics.json").read_text())["test"]["perplexity_mean"]
    pyro.clear_param_store()
    score = bayesrnn.load_run(out).score_text(embedded_split_text("test"))
    assert score.perplexity == pytest.approx(reference, rel=1e-9)


def test_a_run_without_vocab_json_rebuilds_its_vocabulary_from_the_data(folder_run, tmp_path):
    out, data = folder_run
    old = tmp_path / "old-run"
    shutil.copytree(out, old)
    (old / "vocab.json").unlink()  # as written by bayesrnn before vocab.json existed
    score = bayesrnn.load_run(old).score_text((data / "test.txt").read_text())
    reference = json.loads((out / "metrics.json").read_text())["test"]["perplexity_mean"]
    assert score.perplexity == pytest.approx(reference, rel=1e-9)


def test_load_run_of_something_else(tmp_path):
    with pytest.raises(JobError, match=r"no config\.toml"):
        bayesrnn.load_run(tmp_path)
    with pytest.raises(AttributeError, match="no attribute"):
        bayesrnn.load_runs  # noqa: B018 - the lazy module attribute names what is missing


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_load_run_on_a_missing_gpu_names_the_argument_not_a_cli_flag(folder_run):
    out, _ = folder_run
    with pytest.raises(Exception, match="load_run") as caught:
        bayesrnn.load_run(out, device="cuda")
    assert "no CUDA device" in str(caught.value) and "cpu" in str(caught.value)
