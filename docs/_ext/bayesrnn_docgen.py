"""Pages generated from the code at build time: the command's options (from the argparse
parser), the run config's keys, defaults and limits (from the config dataclasses), the presets
(from their table in the package), the API listings (from each package's ``__all__``), and
the benchmark plots (copied from ``benchmarks/results/``). Generated, so they cannot drift
from the code; written under ``docs/_generated/`` (not committed)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shutil
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
OUT = DOCS / "_generated"
API_PACKAGES = (
    "bayesrnn",
    "bayesrnn.models",
    "bayesrnn.inference",
    "bayesrnn.evaluation",
    "bayesrnn.data",
)


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return "`" + text.replace("`", "'") + "`"


def _option_row(action: argparse.Action) -> str:
    names = ", ".join(f"`{name}`" for name in action.option_strings) or f"`{action.dest}`"
    if action.metavar and action.option_strings:
        names += f" `{action.metavar}`"
    default = action.default
    shown = "" if default in (None, False, argparse.SUPPRESS) or default == [] else _code(default)
    choices = ", ".join(f"`{c}`" for c in action.choices) if action.choices else ""
    text = action.help if action.help not in (None, argparse.SUPPRESS) else ""
    if choices:
        text = f"{text} (one of {choices})" if text else f"one of {choices}"
    return f"| {names} | {_cell(text)} | {shown} |"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _subcommand_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def cli_markdown() -> str:
    """Every subcommand of ``bayesrnn`` with its options, help texts and defaults."""
    from bayesrnn.app.cli_parser import build_parser

    parser = build_parser()
    helps = _subcommand_help(parser)
    lines = [
        "Generated from the command's own parser: what `bayesrnn COMMAND --help` prints, as "
        "tables.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    commands = _subcommands(parser)
    lines += [
        f"| [`bayesrnn {name}`](#cli-{name}) | {_cell(helps.get(name, ''))} |" for name in commands
    ]
    for name, sub in commands.items():
        lines += ["", f"(cli-{name})=", f"## `bayesrnn {name}`", ""]
        if sub.description:
            lines += [_cell(sub.description), ""]
        lines += ["```text", sub.format_usage().strip(), "```", ""]
        rows = [_option_row(a) for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            lines += ["| option | meaning | default |", "|---|---|---|", *rows]
    lines += ["", "## Examples (the command's epilog)", "", "```text", parser.epilog.strip(), "```"]
    return "\n".join(lines) + "\n"


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "")


def config_markdown() -> str:
    """Every key of a run's config: its section, type, default (the ``default`` preset's value)
    and allowed range (``bayesrnn.app.config_limits.LIMITS``)."""
    from bayesrnn.app.config import RunConfig
    from bayesrnn.app.config_limits import LIMITS

    config = RunConfig()
    lines = [
        "Generated from the config dataclasses: the defaults are those of a run with no preset "
        "(the offline language-model demo); a preset or `--task` changes some of them "
        "(`bayesrnn run ... --print-config` shows the resolved values). Set any key with "
        "`--set section.key=value` or in a TOML file given to `--config`. Numbers outside the "
        "range shown are refused before anything runs.",
        "",
        "| key | type | default |",
        "|---|---|---|",
    ]
    top = [
        f
        for f in dataclasses.fields(config)
        if not dataclasses.is_dataclass(getattr(config, f.name))
    ]
    lines += [
        f"| `{f.name}` | {_cell(_type_name(f.type))} | {_code(getattr(config, f.name))} |"
        for f in top
    ]
    for field in dataclasses.fields(config):
        section = getattr(config, field.name)
        if not dataclasses.is_dataclass(section):
            continue
        doc = (type(section).__doc__ or "").strip()
        lines += ["", f"## `[{field.name}]`", ""]
        if doc:
            lines += [" ".join(doc.split()), ""]
        lines += ["| key | type | default | allowed range |", "|---|---|---|---|"]
        for key in dataclasses.fields(section):
            limit = LIMITS.get(f"{field.name}.{key.name}")
            shown = f"`{limit}`" if limit else ""  # [a, b], ( for an open end
            value = getattr(section, key.name)
            lines.append(
                f"| `{field.name}.{key.name}` | {_cell(_type_name(key.type))} "
                f"| {_code(value)} | {shown} |"
            )
    return "\n".join(lines) + "\n"


def presets_markdown() -> str:
    """The presets with their sources, published numbers, notes and values."""
    from bayesrnn.app.presets import PRESETS

    lines = [
        "Generated from the package's preset table (what `bayesrnn presets` prints).",
        "",
        "| preset | configuration | source | published |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| [`{p.name}`](#preset-{p.name}) | {_cell(p.summary)} | {_cell(p.source)} "
        f"| {_cell(p.published)} |"
        for p in PRESETS.values()
    ]
    for preset in PRESETS.values():
        lines += [
            "",
            f"(preset-{preset.name})=",
            f"## `{preset.name}`",
            "",
            _cell(preset.summary),
            "",
        ]
        lines += [
            f"- **Source:** {_cell(preset.source)}",
            f"- **Published:** {_cell(preset.published)}",
        ]
        if preset.notes:
            lines.append(f"- **Notes:** {_cell(preset.notes)}")
        if preset.values:
            lines += ["", "```toml", _toml(preset.values), "```"]
    return "\n".join(lines) + "\n"


def _toml(values: Any) -> str:
    out = []
    for section, keys in values.items():
        if not isinstance(keys, dict):
            out.append(f"{section} = {_toml_value(keys)}")
    for section, keys in values.items():
        if isinstance(keys, dict):
            out += [f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in keys.items())]
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def api_markdown(package: str) -> str:
    """An autosummary table and the full entry of every name in ``package.__all__``."""
    module = importlib.import_module(package)
    names = sorted((n for n in module.__all__ if not n.startswith("__")), key=str.lower)
    lines = [
        f"# `{package}`",
        "",
        "```{eval-rst}",
        f".. automodule:: {package}",
        "   :no-members:",
        "",
    ]
    lines += [f".. currentmodule:: {package}", "", ".. autosummary::", "   :nosignatures:", ""]
    lines += [f"   {name}" for name in names if callable(getattr(module, name))]
    lines.append("")
    for name in names:
        obj = getattr(module, name)
        if isinstance(obj, type):
            lines += [f".. autoclass:: {name}", "   :members:", ""]
        elif callable(obj):
            lines += [f".. autofunction:: {name}", ""]
        else:  # a constant: its value's own docstring would be its type's (dict, tuple)
            lines += [
                f".. py:data:: {name}",
                f"   :type: {type(obj).__name__}",
                "",
                f"   {_value_summary(obj)}",
                "",
            ]
    lines.append("```")
    return "\n".join(lines) + "\n"


def _value_summary(value: Any) -> str:
    """A constant's value in one line: a mapping's keys, or its repr cut short."""
    if isinstance(value, dict):
        return "Keys: " + ", ".join(f"``{key}``" for key in value) + "."
    text = repr(value)
    return f"``{text if len(text) < 200 else text[:200] + ' ...'}``"


def copy_result_images() -> list[Path]:
    """The benchmark plots, copied (not committed twice) to ``_generated/images/``."""
    copied = []
    for image in sorted((ROOT / "benchmarks" / "results").rglob("*.png")):
        target = OUT / "images" / image.relative_to(ROOT / "benchmarks" / "results")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, target)
        copied.append(target)
    return copied


def _write(path: Path, text: str) -> None:
    """Writes only on change, so Sphinx does not rebuild pages that did not change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate() -> None:
    _write(OUT / "cli.md", cli_markdown())
    _write(OUT / "config.md", config_markdown())
    _write(OUT / "presets.md", presets_markdown())
    for package in API_PACKAGES:
        _write(OUT / "api" / f"{package.removeprefix('bayesrnn.')}.md", api_markdown(package))
    copy_result_images()


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", lambda app: generate())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
