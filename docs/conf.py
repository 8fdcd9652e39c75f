"""Sphinx configuration for the asyncws documentation.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

# Document the source tree this file belongs to, whether or not it is installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import asyncws  # noqa: E402

project = "asyncws"
author = "The asyncws developers"
copyright = "asyncws developers"
release = asyncws.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]

# Docstrings are plain reST prose (no Google/NumPy sections): autodoc alone, with the type
# hints moved from the signatures into the descriptions.
autodoc_typehints = "description"
autodoc_member_order = "bysource"
# asyncws.Server subclasses asyncio.AbstractServer, whose docstrings (e.g. "close(): Stop
# serving. This leaves existing connections open.") are wrong for it: never inherit them.
autodoc_inherit_docstrings = False
add_module_names = False

# Markdown pages (docs/conformance.md, docs/hostile.md) refer to files of the repository
# (compliance/run.py, tests/...), which are not documents: MyST may leave those links as they are.
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]

html_theme = "alabaster"
html_title = f"asyncws {release}"
html_static_path: list[str] = []

# Applications never construct these classes: their constructors' parameters (a transport, the
# protocol core, the server's internal configuration) are not part of the API, so the
# "Parameters" list autodoc_typehints="description" would add to them is left out.
_PRIVATE_CONSTRUCTORS = {"asyncws.Websocket", "asyncws.Server", "asyncws.Connect"}


def _hide_constructor_parameters(app, domain, objtype, contentnode):  # type: ignore[no-untyped-def]
    if domain != "py" or objtype != "class":
        return
    try:
        signature = contentnode.parent[0]
        fullname = f"{signature['module']}.{signature['fullname']}"
    except (IndexError, KeyError):
        return
    if fullname not in _PRIVATE_CONSTRUCTORS:
        return
    # Where autodoc keeps the recorded type hints: Sphinx >= 8.2, then older versions.
    document = getattr(app.env, "current_document", None)
    store = getattr(document, "autodoc_annotations", None)
    if store is None:
        store = getattr(app.env, "temp_data", {}).get("annotations", {})
    store.pop(fullname, None)


def setup(app):  # type: ignore[no-untyped-def]
    # Before autodoc's own handler (priority 500) turns the type hints into a field list.
    app.connect("object-description-transform", _hide_constructor_parameters, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
