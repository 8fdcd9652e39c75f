"""The one place that chooses which kernels asyncws runs on.

This module holds the selection between the compiled backend (the Cython extension
``_speedups`` with the per-message pump compiled from ``_pump.py`` as ``_pump_c``) and the
pure-Python one (``_purepython`` with ``_pump.py`` run as it is), and re-exports the chosen set
under one interface (``apply_mask``, ``apply_mask_inplace``, ``Utf8Validator``,
``FrameReader``, ``build_frame``, ``build_header``, ``build_message``, and ``MessagePump``, the
per-message path ``connection.Websocket`` builds on, with its constants). The choice is made
once, at import time: the compiled one when it imports, unless the environment sets
``ASYNCWS_NO_SPEEDUPS=1``. Nothing else in the package may import either backend directly or
know that two exist; ``HAS_SPEEDUPS`` tells which one is active.
"""

from __future__ import annotations

import os
import warnings

__all__ = [
    "HAS_SPEEDUPS",
    "BACKEND",
    "apply_mask",
    "apply_mask_inplace",
    "Utf8Validator",
    "FrameReader",
    "build_frame",
    "build_header",
    "build_message",
    "MessagePump",
    "DIRECT_READ_MIN",
    "LARGE_PAYLOAD",
    "PAUSE_QUEUE",
    "PAUSE_WRITE",
    "PAUSE_FAILURE",
]

HAS_SPEEDUPS = False
_FORCED_OFF = os.environ.get("ASYNCWS_NO_SPEEDUPS", "") in ("1", "true", "yes")
if not _FORCED_OFF:
    try:
        from ._pump_c import (
            DIRECT_READ_MIN,
            LARGE_PAYLOAD,
            PAUSE_FAILURE,
            PAUSE_QUEUE,
            PAUSE_WRITE,
            MessagePump,
        )
        from ._speedups import (
            FrameReader,
            Utf8Validator,
            apply_mask,
            apply_mask_inplace,
            build_frame,
            build_header,
            build_message,
        )

        HAS_SPEEDUPS = True
    except ImportError as exc:
        # Not compiled (pip hides the build's own warning unless -v): say so once, visibly.
        warnings.warn(
            f"asyncws: the compiled kernels are not available ({exc}); running on the "
            "pure-Python fallback, which is slower. Reinstall with a C compiler to build them.",
            RuntimeWarning,
            stacklevel=2,
        )

if not HAS_SPEEDUPS:
    from ._pump import (
        DIRECT_READ_MIN,
        LARGE_PAYLOAD,
        PAUSE_FAILURE,
        PAUSE_QUEUE,
        PAUSE_WRITE,
        MessagePump,
    )
    from ._purepython import (  # type: ignore[assignment]
        FrameReader,
        Utf8Validator,
        apply_mask,
        apply_mask_inplace,
        build_frame,
        build_header,
        build_message,
    )

BACKEND = "speedups" if HAS_SPEEDUPS else "purepython"
