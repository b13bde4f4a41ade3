"""Sphinx configuration: MyST Markdown pages, API pages from the docstrings (autodoc).

The build is offline and strict: ``make docs`` runs ``sphinx-build -W --keep-going -n``
(every warning is an error, and every cross-reference must resolve). References to
names outside trio-mesa (the standard library, Trio, Mesa, litellm) are not checked: no
inventory for them is bundled and the build fetches nothing.
"""

from __future__ import annotations

import builtins
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the source tree, not an installed copy

import trio_mesa  # noqa: E402

project = "trio-mesa"
author = "trio-mesa developers"
copyright = "trio-mesa developers"
release = version = trio_mesa.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "_ext.public_names",
]
sys.path.insert(0, str(Path(__file__).parent))

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Docstrings write `StepPolicy` for a cross-reference, as Trio's do.
default_role = "py:obj"
autodoc_member_order = "bysource"
# Defaults as written in the source (a sentinel would otherwise show as <object at 0x...>).
autodoc_preserve_defaults = True
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = False

# Strict about our own names; names from other projects have no bundled inventory.
nitpicky = True
_EXTERNAL = (
    r"(builtins|collections|contextlib|asyncio|concurrent|typing|types|enum|pathlib|os"
    r"|logging|json|datetime|threading|random|trio|trio_asyncio|outcome|mesa|mesa_llm"
    r"|litellm|openai|httpx|starlette|uvicorn|anyio|tenacity|rich|pandas|numpy|_io)(\..*)?"
)
_BUILTINS = "|".join(re.escape(name) for name in dir(builtins))
nitpick_ignore_regex = [
    (r"py:.*", _EXTERNAL),
    # Private modules and the type aliases they define (their pages would be private).
    (r"py:.*", r"(trio_mesa|fault_injection)(\..*)?\._.*"),
    (r"py:class", r"(Latency|SyncMode|RetryOn|T|Agent|Model|LLMAgent)"),
    (r"py:.*", rf"({_BUILTINS})"),
]
# Private names a docstring mentions (rendered as code, without a link).
nitpick_ignore = [
    ("py:obj", "SERVER_QUOTAS"),
    ("py:obj", "ABANDONED_STATUS"),
    ("py:obj", "ERROR_STATUS"),
    ("py:obj", "Path"),
    ("py:obj", "log"),
    ("py:obj", "rng"),
]

html_theme = "pydata_sphinx_theme"
html_title = "trio-mesa"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False
