"""Cross-references by the names a user imports. Type hints and docstrings name objects where
they are defined (``bayesrnn.evaluation.calibration.reliability_bins``, or a bare
``SequenceClassifier`` from another module); the API reference documents them under their
public packages (``bayesrnn.evaluation.reliability_bins``). A reference Sphinx cannot find is
looked up among the public names and pointed there."""

from __future__ import annotations

import importlib
from typing import Any

from bayesrnn_docgen import API_PACKAGES


def public_names() -> dict[str, str]:
    """Defining path, and bare name, of every public object → its documented public path."""
    names: dict[str, str] = {}
    bare: dict[str, set[str]] = {}
    for package in API_PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            if name.startswith("__"):
                continue
            public = f"{package}.{name}"
            obj = getattr(module, name)
            defined = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
            if all(isinstance(part, str) for part in defined):
                names.setdefault(f"{defined[0]}.{defined[1]}", public)
            bare.setdefault(name, set()).add(public)
    for name, publics in bare.items():
        if len(publics) == 1:  # a bare name links only where it is unambiguous
            names.setdefault(name, next(iter(publics)))
    return names


def resolve(target: str, names: dict[str, str]) -> str | None:
    """The public path of ``target``, or of its longest known prefix with the rest appended."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        public = names.get(".".join(parts[:cut]))
        if public is not None:
            return ".".join([public, *parts[cut:]])
    return None


def _missing_reference(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    names = app.env.bayesrnn_public_names if hasattr(app.env, "bayesrnn_public_names") else None
    if names is None:
        names = app.env.bayesrnn_public_names = public_names()
    public = resolve(node["reftarget"], names)
    if public is None or public == node["reftarget"]:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
    )


def setup(app: Any) -> dict[str, Any]:
    app.connect("missing-reference", _missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
