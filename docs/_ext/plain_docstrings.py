"""Docstrings here are written to read well as plain text (``help()``, an editor's hover): a
``|x|`` is an absolute value, ``(*draws, T, B)`` a shape. reStructuredText would take the first
for a substitution and the second for the start of emphasis; this extension escapes both before
autodoc parses a docstring, leaving inline literals, roles and paired ``*emphasis*`` alone. A
role wrapped at a dotted name's dot is joined back onto one line. And since no docstring here
uses Google or NumPy sections, napoleon does not read an attribute's first line ("Expected
calibration error: ...") as "type: description"."""

from __future__ import annotations

import re
from typing import Any

_LITERAL = re.compile(r"(``.+?``|:\w+:`[^`]+`|`[^`]+`_?)")
_STAR = re.compile(r"(?<![\w*\\])\*(?=[\w(])")


def _escape_plain(text: str) -> str:
    text = text.replace("|", "\\|")
    out, pos = [], 0
    for match in _STAR.finditer(text):
        after = text.find("*", match.end())  # emphasis closes at the very next star
        closing = after > 0 and re.match(r"[\w)]\*(?![\w*])", text[after - 1 : after + 2])
        out.append(text[pos : match.start()])
        out.append("*" if closing else "\\*")
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def escape_line(line: str) -> str:
    """One docstring line with plain-text ``|`` and unpaired ``*`` escaped outside literals."""
    parts = _LITERAL.split(line)
    return "".join(part if i % 2 else _escape_plain(part) for i, part in enumerate(parts))


_OPEN_ROLE = re.compile(r":\w+:`[^`]*\.$")


def join_wrapped_roles(lines: list[str]) -> list[str]:
    """Lines with a role cut at a dot (``:class:`a.b.`` / ``C``) joined back together."""
    out: list[str] = []
    for line in lines:
        if out and _OPEN_ROLE.search(out[-1]):
            out[-1] += line.lstrip()
        else:
            out.append(line)
    return out


def _process(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    lines[:] = [escape_line(line) for line in join_wrapped_roles(lines)]


def _prose_attribute(self: Any) -> list[str]:
    return self._format_field("", "", self._consume_to_end())


def setup(app: Any) -> dict[str, Any]:
    from sphinx.ext.napoleon import docstring as napoleon

    napoleon.GoogleDocstring._parse_attribute_docstring = _prose_attribute
    app.connect("autodoc-process-docstring", _process, priority=400)  # before napoleon (500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
