"""asyncws: a fast, RFC 6455 conformant WebSocket client and server for asyncio.

This module is the public API and nothing else: ``connect``, ``unix_connect``, ``start_server``,
``start_unix_server``, ``Server``, ``Websocket``, ``broadcast``, ``Deflate`` (permessage-deflate
options), the exceptions, ``HAS_SPEEDUPS`` (whether the Cython kernels are active),
``options`` (every option's default, defined once) and ``__version__``.
Implementation lives in the submodules: ``protocol`` (sans-I/O core), ``handshake``, ``frames``,
``_kernels`` (the Cython/pure-Python choice), ``connection``, ``client`` and ``server``.
"""

from . import options
from ._kernels import HAS_SPEEDUPS
from ._version import __version__
from .client import Connect, connect, unix_connect
from .connection import Websocket, broadcast
from .deflate import Deflate
from .exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidURI,
    OpenTimeout,
    ProxyError,
    WebSocketError,
)
from .handshake import Headers, Request, Response
from .server import Server, start_server, start_unix_server

__all__ = [
    "HAS_SPEEDUPS",
    "Connect",
    "ConnectionClosed",
    "Deflate",
    "Headers",
    "InvalidHandshake",
    "InvalidURI",
    "OpenTimeout",
    "ProxyError",
    "Request",
    "Response",
    "Server",
    "WebSocketError",
    "Websocket",
    "__version__",
    "broadcast",
    "options",
    "connect",
    "start_server",
    "start_unix_server",
    "unix_connect",
]
