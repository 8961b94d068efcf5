"""Sphinx configuration: MyST markdown pages, executed MyST notebooks, autodoc of the public
names, pages generated from the code (``_ext/bayesrnn_docgen.py``). Builds offline."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

import bayesrnn  # noqa: E402

project = "bayesrnn"
author = "the bayesrnn authors"
copyright = "the bayesrnn authors, Apache-2.0"
release = bayesrnn.__version__

extensions = [
    "myst_nb",  # MyST markdown pages and executed MyST notebooks (it loads myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",  # the browser loads MathJax; nothing is fetched at build time
    "bayesrnn_docgen",  # pages generated from the code
    "plain_docstrings",  # |x| and (*draws, ...) in docstrings stay plain text
    "public_names",  # references by defining module resolve to the public names
]
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_generated/api/*.md", "_generated/*.md"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Tutorials run at every build, so a broken example fails the build (-W).
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = True
autosummary_generate = False

html_theme = "alabaster"
html_title = f"bayesrnn {release}"
html_static_path: list[str] = []

# -n (nitpicky) without intersphinx: names from other libraries cannot be linked offline.
# References to bayesrnn's public names resolve (``_ext/public_names.py``); what stays
# unresolved under bayesrnn is internal (a module's helper types and constants), and those
# bare internal names are listed one by one, so a misspelt public name still fails the build.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(torch|nn|pyro|numpy|np|xarray|xr|arviz|arviz_stats|arviz_base|matplotlib"
        r"|scipy|pandas|collections|typing|pathlib|os|argparse|logging|dataclasses|enum|abc|io"
        r"|fractions|types)(\..*)?",
    ),
    (r"py:class", r"(Tensor|Path|Figure|Axes|DataTree|Module|Sequence|Mapping|Iterable|Callable)"),
    (r"py:.*", r"bayesrnn\.\w+\.\w+\..+"),  # inside a module: not part of the public API
    (r"py:mod", r"bayesrnn\.\w+\.\w+.*"),  # the modules inside the packages: not documented
    (
        r"py:.*",
        r"(PriorSpec|OptimizerSpec|SchedulerSpec|CheckpointError|ExpandedDistribution"
        r"|Setup|Validate|SeriesScaling|STAT_NAMES|KNOWN_SHA256|MIN_SPLIT_ROWS|uniform_ceiling"
        r"|default_sites|history)",
    ),
]
