"""Every code example of README.md, the getting-started page and the user guide runs as
written, each page in a temporary directory of its own; README stays a ten-minute read.

An example that cannot run here (it needs downloaded data, a GPU, several processes or
minutes of training) is marked in its page, on the line before the block, with
``<!-- example: NAME skip: REASON -->`` and listed below by name; the commands of a skipped
block are still parsed by the command's own parser, and a ``bayesrnn run``/``train`` command's
settings resolved (``--print-config``), so an option that goes away cannot stay documented.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pyro
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [
    README,
    ROOT / "docs" / "getting-started.md",
    *sorted((ROOT / "docs" / "guide").glob("*.md")),
]
LANGUAGES = {"python", "bash", "text", "toml"}
MAX_README_LINES = 300

# Every example that does not run in the tests, by name, with the reason its page gives.
SKIPPED = {
    "readme-quick-start": "builds .venv and trains for minutes; CI runs scripts/test",
    "readme-docs-build": "builds the whole site; CI runs it",
    "readme-command": "trains for minutes; PTB and polarity need downloaded data",
    "readme-development": "runs the whole test suite and the docs build",
    "readme-posterior-quality": "trains every method and runs NUTS for over an hour",
    "install": "creates a virtual environment and installs from the package registry",
    "quick-start-scripts": "builds .venv and trains for minutes; CI runs scripts/test",
    "first-run": "trains the default run for minutes",
    "polarity-runs": "needs the polarity data set and minutes of training",
    "command-overview": (
        "trains for minutes; PTB, polarity and CUDA runs need downloaded data or a GPU"
    ),
    "torchrun-launch": "launches several processes, GPUs or a second machine",
    "ensemble-run": "trains the default run for minutes",
    "ensemble-cost-benchmark": "a timing benchmark of minutes",
    "ood-command": "needs a reviews.txt of your own",
    "forecast-runs": "trains for minutes; sales.csv stands for a CSV of your own",
    "forecast-covariates": "sales.csv and plan.csv stand for files of your own",
    "forecast-command": "needs the trained runs sun and sales",
    "nuts-runs": "NUTS chains take minutes",
}

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARK = re.compile(r"^<!-- example: (?P<name>[\w-]+) skip: (?P<reason>.+?) -->$")


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    language: str
    code: str
    skip: tuple[str, str] | None  # (name, reason)


def examples(page: Path) -> list[Example]:
    """The fenced code blocks of a Markdown page (MyST directives such as ``{toctree}`` aside)."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        language = match.group(1)
        if not language.startswith("{"):
            previous = lines[i - 1] if i > 0 else ""
            mark = _MARK.match(previous)
            skip = (mark["name"], mark["reason"]) if mark else None
            found.append(Example(page, i + 1, language, "\n".join(lines[i + 1 : end]) + "\n", skip))
        i = end + 1
    return found


def _where(example: Example) -> str:
    return f"{example.page.relative_to(ROOT)}:{example.line}"


def _commands(code: str) -> list[list[str]]:
    """The ``bayesrnn`` command lines of a shell block, continuations joined, comments cut."""
    joined = code.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if "bayesrnn" in words:
            start = words.index("bayesrnn")
            if start == 0 or words[start - 1] == "-m":
                commands.append(words[start + 1 :])
    return commands


def test_readme_is_a_ten_minute_read():
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_every_example_names_its_language():
    for page in PAGES:
        for example in examples(page):
            assert example.language in LANGUAGES, f"{_where(example)}: fence {example.language!r}"


def test_skipped_examples_are_the_listed_ones():
    marked = {e.skip[0]: e.skip[1] for page in PAGES for e in examples(page) if e.skip}
    assert marked == SKIPPED
    names = [e.skip[0] for page in PAGES for e in examples(page) if e.skip]
    assert len(names) == len(set(names)), "two skipped examples share a name"


def test_the_parser_reads_commands_as_shells_split_them():
    code = (
        "bayesrnn run --set a=1 \\\n    --out x   # note\n"
        "torchrun --nproc-per-node 2 -m bayesrnn run\n"
    )
    assert _commands(code) == [["run", "--set", "a=1", "--out", "x"], ["run"]]
    assert _commands("python benchmarks/x.py --bayesrnn\n") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for example in examples(page):
        if example.skip:
            continue
        if example.language == "python":
            pyro.clear_param_store()  # as in a fresh interpreter
            exec(compile(example.code, _where(example), "exec"), {"__name__": "example"})
        elif example.language == "bash":
            env = {
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            }
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", example.code], env=env,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            assert done.returncode == 0, f"{_where(example)}: {done.stderr[-2000:]}"
        elif example.language == "toml":
            tomllib.loads(example.code)
        ran += 1
    runnable = [
        e for e in examples(page) if not e.skip and e.language in {"python", "bash", "toml"}
    ]
    assert ran == len(runnable)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_skipped_commands_still_parse(page, tmp_path, monkeypatch):
    """A skipped block's ``bayesrnn`` commands parse, and a run's settings resolve."""
    from bayesrnn.app.cli import main
    from bayesrnn.app.cli_parser import build_parser

    monkeypatch.chdir(tmp_path)
    for example in examples(page):
        if not example.skip or example.language != "bash":
            continue
        for argv in _commands(example.code):
            if argv and argv[0] in ("run", "train"):
                out = io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                    status = main([*argv, "--print-config"])
                assert status == 0, f"{_where(example)}: bayesrnn {shlex.join(argv)} fails"
                assert "[trainer]" in out.getvalue()
            else:
                try:
                    build_parser().parse_args(argv)
                except SystemExit as exit_:
                    assert exit_.code == 0, f"{_where(example)}: bayesrnn {shlex.join(argv)}"
