"""``bayesrnn evaluate --ood FILE`` and ``TrainedRun.ood``: a named text scored sentence by
sentence against the run's test split (issue 15, point 7)."""

import json
import random
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

import bayesrnn
from bayesrnn.app.classifier_task import evaluate_classifier
from bayesrnn.app.cli import main
from bayesrnn.app.config_files import resolve_config
from bayesrnn.app.ood_task import encode_ood_text, read_ood_file
from bayesrnn.app.run_dir import JobError, RunDir
from bayesrnn.app.setup import Setup, build, quiet_log
from bayesrnn.data import ClassificationCorpus, ClassificationSplit, Vocabulary
from bayesrnn.evaluation.sentence_ood import (
    LM_SCORES,
    SentenceScores,
    oov_positions,
    sentence_ood_report,
    sentence_unk_rate,
    sentence_unk_shares,
    tokens_to_sentences,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = [
    "--quiet",
    "--set", "model.embedding_size=8",
    "--set", "model.hidden_size=8",
    "--set", "trainer.batch_size=4",
    "--set", "trainer.eval_batch_size=3",
    "--set", "trainer.bptt=7",
    "--set", "trainer.max_windows=4",
    "--samples", "2",
    "--set", "evaluation.export=false",
    "--set", "evaluation.pruning=false",
]  # fmt: skip


def _lines(seed: int, count: int, unknown: int = 0) -> str:
    """Lines of w0..w39; the first ``unknown`` lines also hold one word u<i> that train lacks."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    lines = []
    for i in range(count):
        line = [rng.choice(words) for _ in range(rng.randint(3, 9))]
        if i < unknown:
            line.insert(1, f"u{i}")
        lines.append(" ".join(line) + "\n")
    return "".join(lines)


def _pairwise_auroc(inside: torch.Tensor, outside: torch.Tensor) -> float:
    """P(out > in) + P(out == in) / 2, counted over every pair."""
    greater = (outside[:, None] > inside[None, :]).double().sum()
    ties = (outside[:, None] == inside[None, :]).double().sum()
    return float((greater + ties / 2) / (inside.numel() * outside.numel()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny word-level run on a folder; its test split holds 5 words unknown to train."""
    root = tmp_path_factory.mktemp("ood")
    data = root / "data"
    data.mkdir()
    (data / "train.txt").write_text(_lines(0, 200))
    (data / "valid.txt").write_text(_lines(1, 20))
    (data / "test.txt").write_text(_lines(2, 30, unknown=5))
    out = root / "run"
    argv = ["run", "--out", str(out), "--data", str(data), *SMALL]
    assert main(argv) == 0
    return out, data


# --- the per-sentence scores, against hand-made values -----------------------------------------


def test_token_values_are_credited_to_their_sentences():
    eos = 0
    # sentences: [5 6 eos] [7 eos] [8 9 10 eos] [11 12]   (the last one cut short)
    stream = torch.tensor([5, 6, eos, 7, eos, 8, 9, 10, eos, 11, 12])
    batch = 2  # columns of 5: positions 0-4 and 5-9; 10 is dropped; 0 and 5 are not predicted
    steps = 5
    predicted = [b * steps + r for r in range(1, steps) for b in range(batch)]  # row by row
    values = torch.tensor(predicted, dtype=torch.float64)  # each value is its own position
    scores = tokens_to_sentences(
        {"predictive_entropy": values, "mutual_information": 2 * values}, stream, batch, eos
    )
    # sentence 1 has one word: skipped; sentence 3 (positions 9, 10) has only 9 predicted
    assert scores.kept.tolist() == [0, 2, 3] and scores.sentences == 4
    assert scores.predicted.tolist() == [2, 3, 1]
    expected = torch.tensor([(1 + 2) / 2, (6 + 7 + 8) / 3, 9.0], dtype=torch.float64)
    assert torch.allclose(scores.predictive_entropy, expected)
    assert torch.allclose(scores.mutual_information, 2 * expected)
    with pytest.raises(ValueError, match="predictions"):
        tokens_to_sentences(
            {"predictive_entropy": values[:3], "mutual_information": values[:3]},
            stream,
            batch,
            eos,
        )


def test_oov_positions_read_or_predict_unk():
    unk = 1
    stream = torch.tensor([5, unk, 6, 0, unk, unk, 0, 7])
    expected = [False, True, True, False, True, True, True, False]
    assert oov_positions(stream, unk).tolist() == expected
    assert not oov_positions(stream, None).any()


def test_skipped_positions_leave_the_sentence_means():
    eos, unk = 0, 1
    # sentences: [5 unk 6 eos] [7 8 eos] [unk unk eos]; batch 1: positions 1..8 predicted
    stream = torch.tensor([5, unk, 6, eos, 7, 8, eos, unk, unk, eos])
    values = torch.arange(1, 10, dtype=torch.float64)  # value i belongs to position i
    both = {"predictive_entropy": values, "mutual_information": -values}
    skip = oov_positions(stream, unk)  # positions 1, 2, 7, 8, 9
    scores = tokens_to_sentences(both, stream, 1, eos, skip=skip)
    # sentence 0 keeps position 3 only; sentence 1 keeps 4, 5, 6; sentence 2 keeps nothing
    assert scores.kept.tolist() == [0, 1] and scores.predicted.tolist() == [1, 3]
    assert scores.predictive_entropy.tolist() == [3.0, 5.0]
    assert scores.mutual_information.tolist() == [-3.0, -5.0] and scores.excluded == 5
    shares = sentence_unk_shares(scores, unk, stream=stream, eos_id=eos)
    assert shares.tolist() == [1 / 3, 0.0]
    as_lists = sentence_unk_shares(
        scores, unk, sequences=[torch.tensor([5, unk, 6]), torch.tensor([7, 8])]
    )
    assert torch.equal(as_lists, shares)
    with pytest.raises(ValueError, match="skip has shape"):
        tokens_to_sentences(both, stream, 1, eos, skip=skip[:-1])
    with pytest.raises(ValueError, match="not both"):
        sentence_unk_shares(scores, unk)


def test_unk_rate_is_a_share_of_words():
    ids = torch.tensor([4, 1, 5, 2, 1, 1, 6, 2])  # unk = 1, eos = 2
    assert sentence_unk_rate(ids, unk_id=1, eos_id=2) == pytest.approx(3 / 6)
    assert sentence_unk_rate(ids, unk_id=None, eos_id=2) == 0.0
    with pytest.raises(ValueError, match="no words"):
        sentence_unk_rate(torch.tensor([2, 2]), unk_id=1, eos_id=2)


def test_report_auroc_equals_a_pairwise_count():
    generator = torch.Generator().manual_seed(3)
    inside = torch.rand(40, generator=generator, dtype=torch.float64).round(decimals=1)
    outside = (torch.rand(25, generator=generator, dtype=torch.float64) + 0.3).round(decimals=1)

    def scores(values):
        n = values.numel()
        ones = torch.ones(n, dtype=torch.long)
        return SentenceScores(values, values / 2, ones, torch.arange(n), n)

    report = sentence_ood_report(scores(inside), scores(outside))
    for name in ("predictive_entropy", "mutual_information"):
        assert report[name]["auroc"] == pytest.approx(_pairwise_auroc(inside, outside), abs=1e-12)
        assert 0.0 <= report[name]["fpr95"] <= 1.0 and 0.0 < report[name]["aupr"] <= 1.0
    assert report["predictive_entropy"]["mean_out"] == pytest.approx(float(outside.mean()))


# --- the command line ---------------------------------------------------------------------------


def test_evaluate_ood_writes_a_new_folder_with_the_comparison(trained, tmp_path, capsys):
    out, data = trained
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # 4 + 2 + 1 + 3 words; foo, bar, baz and qux are not in the vocabulary
    ood = tmp_path / "foreign.txt"
    ood.write_text("w1 w2 foo w3\nbar baz\nw5\n\nw6 qux w7\n")
    assert main(["evaluate", "--out", str(out), "--ood", str(ood), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "OOD foreign.txt" in printed and "eval-2" in printed
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    metrics = json.loads((out / "eval-2" / "metrics.json").read_text())
    report = metrics["ood_file"]
    assert report["path"] == str(ood.resolve()) and report["split"] == "test"
    assert report["unk_rate"]["out"] == pytest.approx(4 / 10)
    test_words = (data / "test.txt").read_text().split()
    assert report["unk_rate"]["in"] == pytest.approx(5 / len(test_words))
    # with <unk> positions left out (the default), "bar baz" has nothing left to score: its
    # words are unknown and its <eos> reads one; foo, w3 (reads foo), qux, w7 (reads qux) go too
    assert report["oov"] == "exclude" and report["positions_excluded"]["out"] == 7
    assert report["sentences"]["out"] == 2 and report["sentences_skipped"]["out"] == 2
    assert {"auroc", "aupr", "fpr95"} <= set(report["unk_share_baseline"])
    assert report["sentences"]["in"] + report["sentences_skipped"]["in"] == 30
    assert tuple(report["scores"]) == LM_SCORES
    for name in LM_SCORES:
        assert {"auroc", "aupr", "fpr95", "mean_in", "mean_out"} <= set(report["scores"][name])
    assert "reversed" in metrics["test"]  # the default OOD set is still reported beside FILE
    assert (out / "eval-2" / "ood_entropy.png").read_bytes().startswith(PNG_MAGIC)
    assert "ood_entropy.png" in metrics["files"]


def test_the_test_text_itself_is_not_out_of_distribution(trained, capsys):
    out, data = trained
    code = main(
        ["evaluate", "--out", str(out), "--ood", str(data / "test.txt"), "--quiet",
         "--set", "evaluation.reversed_text=false"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    written = Path(capsys.readouterr().out.split("results in ")[1].split("/\n")[0])
    report = json.loads((written / "metrics.json").read_text())["ood_file"]
    assert report["sentences"]["in"] == report["sentences"]["out"]
    assert report["unk_rate"]["in"] == report["unk_rate"]["out"]
    # the same sentences, other MC draws: no separation beyond the AUROC's own spread under
    # the null, sqrt((m + n + 1) / (12 m n)) (Hanley & McNeil 1982), taken at 4 SD
    m = n = report["sentences"]["in"]
    spread = ((m + n + 1) / (12 * m * n)) ** 0.5
    assert report["scores"]["predictive_entropy"]["auroc"] == pytest.approx(0.5, abs=4 * spread)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"  \n\n \t\n", "empty"),
        (b"w1 w2\x00\x01\x02", "binary"),
        (b"w1 \xff\xfe w2\n", "not UTF-8"),
        (b"w1\nw2\n", "no line has 2 or more tokens"),
    ],
)
def test_bad_ood_files_are_one_line_errors_and_write_nothing(
    trained, tmp_path, capsys, content, message
):
    out, _ = trained
    ood = tmp_path / "bad.txt"
    if content is not None:
        ood.write_bytes(content)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert main(["evaluate", "--out", str(out), "--ood", str(ood), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == folders


def test_a_folder_is_not_a_text_file(tmp_path):
    with pytest.raises(JobError, match="not a regular file"):
        read_ood_file(tmp_path)


def test_a_forecaster_has_no_sentences():
    with pytest.raises(JobError, match="forecast run"):
        encode_ood_text("a b c\n", "forecast", "whitespace", None)


# --- the Python API -----------------------------------------------------------------------------


def test_run_ood_returns_the_report_with_its_scores(trained, tmp_path):
    out, data = trained
    run = bayesrnn.load_run(out)
    ood = tmp_path / "foreign.txt"
    ood.write_text("".join(f"x{i} y{i} w{i} z{i}\n" for i in range(12)))
    report = run.ood(ood, oov="include")
    assert report["name"] == "foreign.txt" and report["sentences"]["out"] == 12
    assert report["oov"] == "include" and report["positions_excluded"] == {"in": 0, "out": 0}
    assert report["unk_rate"]["out"] == pytest.approx(36 / 48)
    assert tuple(report["scores"]) == LM_SCORES
    for name in LM_SCORES:
        inside, outside = report.inside.score(name), report.outside.score(name)
        assert report["scores"][name]["auroc"] == pytest.approx(
            _pairwise_auroc(inside, outside), abs=1e-12
        )
    figure = report.plot(tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes().startswith(PNG_MAGIC)
    assert len(figure.axes[0].get_legend().get_texts()) == 2  # both sides drawn
    # into the caller's axes, as every other plot of the package: nothing written, same figure
    own = Figure()
    ax = own.add_subplot()
    assert report.plot(ax=ax) is own and ax.get_legend() is not None
    # the test split scored the same way as the same text: identical scores, AUROC exactly 1/2
    same = run.ood(text=(data / "test.txt").read_text(), num_samples=2)
    for name in LM_SCORES:
        assert torch.equal(same.inside.score(name), same.outside.score(name))
        assert same["scores"][name]["auroc"] == 0.5
    # every prediction of that text reads or predicts an unknown word: nothing left to score
    with pytest.raises(JobError, match="no sentence could be scored"):
        run.ood(ood)
    with pytest.raises(ValueError, match="oov must be one of exclude, include"):
        run.ood(ood, oov="drop")
    with pytest.raises(ValueError, match="one of them"):
        run.ood()
    with pytest.raises(ValueError, match="num_samples"):
        run.ood(text="w1 w2\n", num_samples=0)
    with pytest.raises(JobError, match="no line has"):
        run.ood(text="w1\n", in_text="w1 w2 w3\n")


def test_a_classifier_compares_sentences_of_a_named_text(tmp_path):
    vocab = Vocabulary(
        ["<pad>", "<unk>", *(f"w{i}" for i in range(10))], eos_token=None, pad_token="<pad>"
    )
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(2, 12, (int(n),), generator=generator) for n in range(1, 17)]
    split = ClassificationSplit(sequences, torch.arange(16) % 2, torch.arange(16))
    corpus = ClassificationCorpus(split, split, split, vocab, "synthetic", ("even", "odd"))
    overrides = ["model.embedding_size=4", "model.hidden_size=4", "evaluation.mc_samples=3"]
    config = resolve_config(None, None, overrides, {"task": "classify"})
    s = Setup(config, corpus, *build(config, len(vocab), 2))
    text = encode_ood_text(
        "w1 w2 zz\nyy\nw3 w4 w5 w6\n", "classify", "whitespace", vocab, name="mine"
    )
    assert text.unk_rate == pytest.approx(2 / 8)
    result = evaluate_classifier(s, RunDir(tmp_path), quiet_log, text)
    report = result["ood_file"]
    assert report["sentences"] == {"in": 15, "out": 2}  # one-token sentences are not scored
    assert report["sentences_skipped"] == {"in": 1, "out": 1}
    assert report["unk_rate"]["in"] == 0.0
    assert "ood_entropy.png" in result["plots"]
    assert (tmp_path / "ood_entropy.png").read_bytes().startswith(PNG_MAGIC)
