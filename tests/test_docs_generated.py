"""The documentation's generated pages say what the code says: every option of every
subcommand, every config key with its default and limit, every preset, every public name."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "_ext"))

import bayesrnn_docgen
import plain_docstrings
import public_names

from bayesrnn.app.cli_parser import build_parser
from bayesrnn.app.config import RunConfig
from bayesrnn.app.config_limits import LIMITS
from bayesrnn.app.presets import PRESETS


def test_cli_page_lists_every_option_of_every_subcommand():
    page = bayesrnn_docgen.cli_markdown()
    commands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    assert set(commands) >= {"run", "evaluate", "export", "forecast", "compare"}
    for name, parser in commands.items():
        section = page.split(f"## `bayesrnn {name}`")[1].split("\n## ")[0]
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in section, f"bayesrnn {name} {option}"


def test_config_page_lists_every_key_with_its_default_and_limit():
    page = bayesrnn_docgen.config_markdown()
    config = RunConfig()
    rows = {
        line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `")
    }
    for section in ("data", "model", "guide", "trainer", "evaluation"):
        for field in dataclasses.fields(getattr(config, section)):
            row = rows[f"`{section}.{field.name}`"]
            assert bayesrnn_docgen._code(getattr(getattr(config, section), field.name)) in row
    assert f"`{LIMITS['model.hidden_size']}`" in rows["`model.hidden_size`"]
    assert "`(0, 1)`" in rows["`guide.target_accept`"]  # open ends are shown as such
    assert "`128`" in rows["`model.hidden_size`"]  # the default, as RunConfig() has it


def test_presets_page_lists_every_preset_with_its_published_numbers():
    page = bayesrnn_docgen.presets_markdown()
    for preset in PRESETS.values():
        assert f"## `{preset.name}`" in page
        assert bayesrnn_docgen._cell(preset.published) in page
    assert "hidden_size = 650" in page.split("## `fortunato-medium`")[1]


@pytest.mark.parametrize("package", bayesrnn_docgen.API_PACKAGES)
def test_api_page_documents_every_public_name(package):
    page = bayesrnn_docgen.api_markdown(package)
    module = importlib.import_module(package)
    for name in module.__all__:
        if not name.startswith("__"):
            assert f":: {name}\n" in page, f"{package}.{name}"


def test_plain_text_docstrings_escape_only_what_rest_would_misread():
    escape = plain_docstrings.escape_line
    assert escape("the |μ|/σ ratio") == "the \\|μ\\|/σ ratio"
    assert escape("logits (*draws, T, B, V)") == "logits (\\*draws, T, B, V)"
    assert escape("a *paired* word") == "a *paired* word"
    assert escape("``model(*args, **kwargs)`` and :func:`a|b`") == (
        "``model(*args, **kwargs)`` and :func:`a|b`"
    )
    joined = plain_docstrings.join_wrapped_roles(["see :class:`a.b.", "    C` here"])
    assert joined == ["see :class:`a.b.C` here"]


def test_references_by_defining_module_resolve_to_public_names():
    names = public_names.public_names()
    assert public_names.resolve("bayesrnn.evaluation.calibration.reliability_bins", names) == (
        "bayesrnn.evaluation.reliability_bins"
    )
    assert public_names.resolve("SequenceClassifier", names) == "bayesrnn.models.SequenceClassifier"
    assert public_names.resolve("bayesrnn.inference.training.trainer.SVITrainer.fit", names) == (
        "bayesrnn.inference.SVITrainer.fit"
    )
    assert public_names.resolve("bayesrnn.inference.runtime.distributed.Ranks", names) is None
