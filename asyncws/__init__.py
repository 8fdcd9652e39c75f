"""asyncws: a fast, RFC 6455 conformant WebSocket client and server for asyncio.

This module is the public API and nothing else: ``connect``, ``start_server``, ``Websocket``,
the exceptions, ``HAS_SPEEDUPS`` (whether the Cython kernels are active) and ``__version__``.
Implementation lives in the submodules: ``protocol`` (sans-I/O core), ``handshake``, ``frames``,
``_kernels`` (the Cython/pure-Python choice), ``connection``, ``client`` and ``server``.
"""

from ._kernels import HAS_SPEEDUPS
from ._version import __version__
from .client import connect
from .connection import Websocket
from .exceptions import ConnectionClosed, InvalidHandshake, InvalidURI, WebSocketError
from .handshake import Headers, Request, Response
from .server import start_server

__all__ = [
    "HAS_SPEEDUPS",
    "ConnectionClosed",
    "Headers",
    "InvalidHandshake",
    "InvalidURI",
    "Request",
    "Response",
    "WebSocketError",
    "Websocket",
    "__version__",
    "connect",
    "start_server",
]
