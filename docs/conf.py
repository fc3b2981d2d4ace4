"""Sphinx configuration: the API reference from the docstrings, the guides in Markdown.

Build (warnings are errors, as in CI): ``python -m sphinx -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import trio_ws

project = "trio_ws"
author = "the trio_ws authors"
release = trio_ws.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style docstrings (STYLE.md)
    "myst_parser",  # the README, the wire protocol and the guides are Markdown
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "screenshots"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

html_theme = "alabaster"
html_title = f"trio_ws {release}"
