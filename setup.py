"""Build script for the optional Cython extensions ``asyncws._speedups`` (the framing kernels)
and ``asyncws._pump_c`` (the per-message pump, compiled from ``asyncws/_pump.py``).

The extension is an accelerator, not a requirement: when it cannot be compiled
(no C compiler, no Cython), the install still succeeds and asyncws runs on its
pure-Python kernels, saying so in a warning.
"""

import os
import re
import sys
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Keep in step with [build-system] requires in pyproject.toml: 3.1 added free-threading support.
MIN_CYTHON = (3, 1)


class OptionalBuildExt(build_ext):
    """A build_ext whose failure degrades to the pure-Python backend."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no speedups"
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        if os.environ.get("ASYNCWS_REQUIRE_EXTENSION") == "1":
            # Wheel builds (cibuildwheel sets this) must not ship the fallback silently.
            raise RuntimeError(f"asyncws: the C extension is required but failed: {exc!r}")
        msg = (
            "asyncws: could not compile the C extensions "
            f"({exc!r}); installing the pure-Python fallback, which is slower."
        )
        warnings.warn(msg, stacklevel=1)
        print("WARNING: " + msg, file=sys.stderr)


def extensions() -> list:
    if os.environ.get("ASYNCWS_NO_EXTENSION") == "1":
        return []
    try:
        from Cython import __version__ as cython_version
        from Cython.Build import cythonize
    except ImportError:
        print("WARNING: asyncws: Cython is not installed; no C extension.", file=sys.stderr)
        return []
    if tuple(int(part) for part in re.findall(r"\d+", cython_version)[:2]) < MIN_CYTHON:
        # Older Cython ignores the freethreading_compatible directive (a free-threaded
        # interpreter would turn the GIL back on to import the extension) and cannot build for
        # free-threaded CPython at all.
        msg = (
            f"asyncws: Cython {cython_version} is too old, {'.'.join(map(str, MIN_CYTHON))} "
            "or newer is needed; no C extension."
        )
        if os.environ.get("ASYNCWS_REQUIRE_EXTENSION") == "1":
            raise RuntimeError(msg)
        print("WARNING: " + msg, file=sys.stderr)
        return []
    compile_args = [] if sys.platform == "win32" else ["-O3"]
    kernels = Extension(
        "asyncws._speedups", ["asyncws/_speedups.pyx"], extra_compile_args=compile_args
    )
    # The per-message pump is one Python source, run as it is by the pure-Python backend and
    # compiled here as a module of its own, typed and bound to the C kernels by _pump_c.pxd.
    pump = Extension("asyncws._pump_c", ["asyncws/_pump.py"], extra_compile_args=compile_args)
    return cythonize(
        [kernels, pump],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
