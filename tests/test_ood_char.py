"""A character-level run scoring a foreign text: spelled out as its data was (``_`` between
words), with the symbols it never saw left out or read as ``<unk>``, and reported."""

from pathlib import Path

import pytest

import bayesrnn
from bayesrnn.app.cli import main
from bayesrnn.app.ood_task import drop_unseen
from bayesrnn.app.summary import summarise
from bayesrnn.data import Vocabulary
from bayesrnn.data.tokenizers import ptb_char_tokens, tokenize_text

from .conftest import SHARED_DATA

TINY = [
    "--quiet",
    "--set", "model.embedding_size=4",
    "--set", "model.hidden_size=6",
    "--set", "trainer.batch_size=4",
    "--set", "trainer.eval_batch_size=3",
    "--set", "trainer.bptt=9",
    "--set", "trainer.max_windows=3",
    "--set", "trainer.epochs=1",
    "--set", "evaluation.mc_samples=2",
]  # fmt: skip


def test_plain_words_are_spelled_as_the_ptb_char_files_spell_them():
    # the first line of ptb.valid.txt and of ptb.char.valid.txt
    word = " consumers may want to move their telephones a little closer to the tv set "
    char = "c o n s u m e r s _ m a y _ w a n t _ t o _ m o v e _ t h e i r _ t e l e p h o n e s "
    char += "_ a _ l i t t l e _ c l o s e r _ t o _ t h e _ t v _ s e t"
    assert ptb_char_tokens(word) == char.split() == ptb_char_tokens(char)
    assert ptb_char_tokens("pierre <unk> n") == list("pierre_<unk>_n")
    # single-character words with no "_" among them are words to spell, not symbols
    assert ptb_char_tokens("i . e .") == ["i", "_", ".", "_", "e", "_", "."]
    assert ptb_char_tokens("a") == ["a"]
    assert tokenize_text("a b\n\nc _ d\n", "ptb-characters") == [["a", "_", "b"], list("c_d")]


def test_unseen_symbols_are_removed_with_the_boundaries_they_leave():
    vocab = Vocabulary(["<eos>", "_", "a", "b"], unk_token=None)
    lines = [list("a_,_b"), list(",_a"), [","], list("a_b")]
    kept, share = drop_unseen(lines, vocab)
    assert kept == [list("a_b"), ["a"], list("a_b")]
    assert share == pytest.approx(5 / 12)  # ",", "_", ",", "_", "," of 12 symbols
    assert drop_unseen([list("a_b")], vocab) == ([list("a_b")], 0.0)


def _train(argv: list[str], out: Path) -> bayesrnn.TrainedRun:
    assert main(["train", "--out", str(out), *argv, *TINY]) == 0
    return bayesrnn.load_run(out)


PTB_LINES = "the company said it will sell its stake\nshares fell in new york trading\n" * 3
REVIEWS = 'a gorgeous , witty film\nthe " best " movie of the year !\nits plot is thin\n'


def test_a_char_level_text_run_reads_unseen_characters_as_unk(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text(PTB_LINES)
    run = _train(["--data", str(data), "--set", "data.level=char"], tmp_path / "run")
    assert run.tokenizer == "characters" and run.vocabulary.unk_id is not None
    assert run.encode("ab c\n").tolist() == run.vocabulary.encode([*"ab_c", "<eos>"]).tolist()
    include = run.ood(text=REVIEWS, in_text=PTB_LINES, oov="include")
    exclude = run.ood(text=REVIEWS, in_text=PTB_LINES)
    # unseen: g , w ! b v " " ! ... counted by hand from the text against the training letters
    seen = set(PTB_LINES.replace(" ", "_").replace("\n", ""))
    spelled = [ch for line in REVIEWS.splitlines() for ch in "_".join(line.split())]
    unseen = sum(ch not in seen for ch in spelled)
    assert unseen > 0
    assert include["unk_rate"]["out"] == pytest.approx(unseen / len(spelled))
    assert include["unk_rate"]["in"] == 0.0 and "unseen_removed" not in include.metrics
    assert include["positions_excluded"] == {"in": 0, "out": 0}
    assert exclude["positions_excluded"]["out"] > unseen  # reading or predicting one


@pytest.mark.skipif(
    not (SHARED_DATA / "ptb_char" / "ptb.char.train.txt").is_file(),
    reason=f"PTB character level not in {SHARED_DATA / 'ptb_char'}",
)
def test_a_ptb_char_run_spells_plain_text_and_removes_what_it_never_saw(tmp_path):
    argv = ["--data", "ptb-char", "--data-dir", str(SHARED_DATA)]
    run = _train(argv, tmp_path / "run")
    assert run.tokenizer == "ptb-characters" and run.vocabulary.unk_id is None
    assert run.encode("n.v. <unk>\n").tolist() == run.encode("n . v . _ < u n k >\n").tolist()
    report = run.ood(text=REVIEWS, in_text=PTB_LINES)
    spelled = [ch for line in REVIEWS.splitlines() for ch in "_".join(line.split())]
    # PTB's characters lack , " ! : four symbols and the boundaries that go with them
    removed = 1 + 1 + 2 + 2 + 1 + 1  # ",", its "_"; the two '"' and theirs; "!" and its "_"
    assert report["unseen_removed"] == {"in": 0.0, "out": pytest.approx(removed / len(spelled))}
    assert report["positions_excluded"] == {"in": 0, "out": 0}
    line = summarise({"ood_file": report.metrics}, "run")
    assert f"symbols the run never saw, removed: {removed / len(spelled):.4g} vs 0" in line
