"""Shared fixtures for the asyncws micro benchmarks (pytest-benchmark).

The ``kernels`` fixture runs each benchmark against both framing backends, imported directly
(not through ``asyncws._kernels``), so one run compares them side by side:

* ``speedups``   -> ``asyncws._speedups`` (Cython; skipped if it was not compiled)
* ``purepython`` -> ``asyncws._purepython``

Peer libraries (websockets, aiohttp) are imported where installed and skipped otherwise.
No timing assertions anywhere: these produce numbers, they do not judge them.
"""

from __future__ import annotations

import importlib

import pytest

BACKENDS = {
    "speedups": "asyncws._speedups",
    "purepython": "asyncws._purepython",
}


@pytest.fixture(params=list(BACKENDS), scope="session")
def kernels(request):
    modname = BACKENDS[request.param]
    try:
        return importlib.import_module(modname)
    except ImportError as exc:  # e.g. the Cython extension was not built
        pytest.skip(f"{modname} not importable: {exc}")


@pytest.fixture(scope="session")
def pure_kernels():
    """The pure-Python kernels, used to *prepare* inputs (never timed)."""
    return pytest.importorskip("asyncws._purepython")
