"""The exceptions asyncws raises to applications.

This module holds only exception classes: no I/O, no parsing. ``ConnectionClosed`` is what a send on
a finished connection raises; ``InvalidHandshake`` is what ``connect()`` raises when the server
refuses or answers badly (``status`` carries the HTTP status when there was one), and its subclass
``ProxyError`` when a proxy refuses to open the way to the server; ``InvalidURI`` is
raised for a URL that is not ``ws://`` or ``wss://``; ``OpenTimeout`` (a ``TimeoutError`` on every
Python) when ``connect()`` runs past ``open_timeout``.
"""

from __future__ import annotations

import asyncio

__all__ = [
    "ConnectionClosed",
    "InvalidHandshake",
    "InvalidURI",
    "OpenTimeout",
    "ProxyError",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of every asyncws exception."""


class ConnectionClosed(WebSocketError, ConnectionError):
    """The connection is closed (or closing): nothing more can be sent on it.

    ``code`` and ``reason`` tell what ended it: the peer's close code, the code asyncws sent when
    it failed the connection, or 1006 when the TCP connection was lost without a closing handshake.
    """

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = "WebSocket connection is closed"
        if code is not None:
            text += f" (code {code}{': ' + reason if reason else ''})"
        super().__init__(text)


class InvalidHandshake(WebSocketError):
    """The opening handshake failed; ``status`` is the HTTP status when the server sent one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ProxyError(InvalidHandshake):
    """The proxy did not open the way to the server; the message says what it answered.

    ``status`` is the HTTP status an HTTP proxy answered its CONNECT with (407: authentication
    needed or wrong, 403: refused, 502: could not reach the server, ...). For a SOCKS proxy it is
    the HTTP status of the same meaning (407 authentication failed, 403 not allowed by its
    rules, 502 server unreachable or refused), the SOCKS reply being in the message; None when
    the proxy answered something that is not an answer (or closed the connection).
    """


class InvalidURI(WebSocketError, ValueError):
    """The URL given to ``connect()`` is not a valid ``ws://`` or ``wss://`` URL."""


if issubclass(asyncio.TimeoutError, TimeoutError):  # Python 3.11+: one and the same class

    class OpenTimeout(WebSocketError, TimeoutError):
        """``connect()`` did not finish within ``open_timeout``."""

else:  # Python 3.9 / 3.10: asyncio has its own TimeoutError; be both

    class OpenTimeout(WebSocketError, TimeoutError, asyncio.TimeoutError):  # type: ignore[no-redef,misc]
        """``connect()`` did not finish within ``open_timeout``."""
