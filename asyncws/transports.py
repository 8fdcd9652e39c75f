"""Which transports asyncws' connections run on: the event loop's own, or aiofastnet's.

This module holds the ``transport`` option (``"auto"``, ``"asyncio"``, ``"aiofastnet"``): how
``"auto"`` is resolved (the ``ASYNCWS_TRANSPORT`` environment variable, else aiofastnet when
it is installed, but for plain connections on uvloop), the four calls that open connections
and listen on the chosen transports (``create_connection``, ``create_unix_connection``,
``create_server``, ``create_unix_server``, each the loop's method of that name or
aiofastnet's), and ``adopt``, which the handshake protocols call on every new transport to
work around a bug of aiofastnet's TLS transport (see the comment above it). aiofastnet (``pip
install 'asyncws[fast]'``) is C transports for TCP and TLS over any asyncio loop; it is
imported only when chosen. This module must not read, write or parse bytes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any, Callable

from .options import TRANSPORT

__all__ = [
    "TRANSPORTS",
    "ENVIRONMENT_VARIABLE",
    "HAS_AIOFASTNET",
    "check_transport",
    "resolve",
    "create_connection",
    "create_unix_connection",
    "create_server",
    "create_unix_server",
    "adopt",
]

#: The values of the ``transport`` keyword.
TRANSPORTS = ("auto", "asyncio", "aiofastnet")
#: Sets what ``transport="auto"`` means for the whole process: ``asyncio`` or ``aiofastnet``.
ENVIRONMENT_VARIABLE = "ASYNCWS_TRANSPORT"
HAS_AIOFASTNET = importlib.util.find_spec("aiofastnet") is not None

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def check_transport(transport: str) -> None:
    """Fail at the call, not at the first connection: ValueError for an unknown value,
    ImportError for "aiofastnet" without aiofastnet."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
    if transport == "aiofastnet" and not HAS_AIOFASTNET:
        raise ImportError("transport='aiofastnet' needs aiofastnet: pip install 'asyncws[fast]'")


def resolve(transport: str, loop: asyncio.AbstractEventLoop, tls: bool) -> str:
    """``"asyncio"`` or ``"aiofastnet"``: what ``transport`` means for a connection (or a
    server) on ``loop``, with TLS or not. An explicit choice is kept (``"aiofastnet"`` without
    aiofastnet installed raises ImportError). ``"auto"`` takes ``ASYNCWS_TRANSPORT`` when it is
    set, else aiofastnet where it pays, when it is installed: for TLS on any loop, and without
    TLS on the asyncio loop, but not on uvloop, whose own plain transports cost fewer
    instructions (benchmarks/README.md has the measurements)."""
    check_transport(transport)
    if transport == "auto":
        transport = os.environ.get(ENVIRONMENT_VARIABLE, "") or TRANSPORT
        if transport not in TRANSPORTS:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}={transport!r}: use asyncio or aiofastnet")
        check_transport(transport)
    if transport == "auto":
        if not HAS_AIOFASTNET or (not tls and type(loop).__module__.startswith("uvloop")):
            return "asyncio"
        return "aiofastnet"
    return transport


def _aiofastnet() -> Any:
    import aiofastnet

    return aiofastnet


async def create_connection(
    transport: str, factory: ProtocolFactory, host: str, port: int, **kwds: Any
) -> asyncio.BaseTransport:
    """``loop.create_connection(factory, host, port, **kwds)`` on the chosen transports."""
    loop = asyncio.get_running_loop()
    if resolve(transport, loop, bool(kwds.get("ssl"))) == "aiofastnet":
        made, _ = await _aiofastnet().create_connection(loop, factory, host, port, **kwds)
    else:
        made, _ = await loop.create_connection(factory, host, port, **kwds)
    return made  # type: ignore[no-any-return]


async def create_unix_connection(
    transport: str, factory: ProtocolFactory, path: str, **kwds: Any
) -> asyncio.BaseTransport:
    """``loop.create_unix_connection(factory, path, **kwds)`` on the chosen transports."""
    loop = asyncio.get_running_loop()
    if resolve(transport, loop, bool(kwds.get("ssl"))) == "aiofastnet":
        made, _ = await _aiofastnet().create_unix_connection(loop, factory, path, **kwds)
    else:
        made, _ = await loop.create_unix_connection(factory, path, **kwds)
    return made  # type: ignore[no-any-return]


async def create_server(
    transport: str, factory: ProtocolFactory, host: Any, port: int | None, **kwds: Any
) -> asyncio.AbstractServer:
    """``loop.create_server(factory, host, port, **kwds)`` on the chosen transports."""
    loop = asyncio.get_running_loop()
    if resolve(transport, loop, bool(kwds.get("ssl"))) == "aiofastnet":
        return await _aiofastnet().create_server(  # type: ignore[no-any-return]
            loop, factory, host, port, **kwds
        )
    return await loop.create_server(factory, host, port, **kwds)


async def create_unix_server(
    transport: str, factory: ProtocolFactory, path: str | None, **kwds: Any
) -> asyncio.AbstractServer:
    """``loop.create_unix_server(factory, path, **kwds)`` on the chosen transports."""
    loop = asyncio.get_running_loop()
    if resolve(transport, loop, bool(kwds.get("ssl"))) == "aiofastnet":
        return await _aiofastnet().create_unix_server(  # type: ignore[no-any-return]
            loop, factory, path, **kwds
        )
    return await loop.create_unix_server(factory, path, **kwds)


# aiofastnet's TLS transport over a socket (SSLTransport_Socket, 1.2.0) decrypts records from
# its memory BIO into the protocol's buffer until the buffer is full or the BIO is empty. When
# the protocol pauses reading from inside buffer_updated (asyncws does, at max_queue) just as
# the buffer is full, what is left in the BIO and in OpenSSL stays there; resume_reading()
# then only polls the socket again, and if the peer has sent everything and waits for an
# answer, nothing ever wakes the transport: the connection hangs (tests/test_transports.py
# pins it). Until aiofastnet delivers that data itself, every resume_reading() of such a
# transport is followed, on the loop's next pass, by _retry_ssl_read(), which decrypts what the
# BIO holds (and, if the protocol paused again meanwhile, does nothing).
_TLS_SOCKET_TRANSPORT = "SSLTransport_Socket"


def adopt(transport: asyncio.BaseTransport) -> None:
    """Called by the handshake protocols with each new transport: applies the workaround above
    to an aiofastnet TLS transport; leaves any other transport alone."""
    kind = type(transport)
    if kind.__name__ != _TLS_SOCKET_TRANSPORT or not kind.__module__.startswith("aiofastnet"):
        return
    retry = getattr(transport, "_retry_ssl_read", None)
    if retry is None:  # a later aiofastnet without the private method: nothing to patch
        return
    resume = transport.resume_reading  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()

    def resume_reading() -> None:
        was_paused = not transport.is_reading()  # type: ignore[attr-defined]
        resume()
        if was_paused and transport.is_reading():  # type: ignore[attr-defined]
            loop.call_soon(retry)

    # An instance attribute: aiofastnet's transports keep a __dict__ for such hooks, and it
    # takes precedence over the class's method for every caller (the pump calls
    # transport.resume_reading() like anyone else).
    transport.resume_reading = resume_reading  # type: ignore[attr-defined]
