"""The default value of every option of ``connect``, ``unix_connect``, ``start_server`` and
``start_unix_server``, each written once.

This module holds only constants: one per option whose default is not simply None, and
``DEFAULTS``, the documented table (keyword -> default) that every signature, the CLI and
docs/options.rst are checked against. The functions name these constants in their signatures, so
a default changes here and nowhere else, and a new option is added here first. It must not
import anything from asyncws but the version (every other module may import it), do I/O, or
hold behaviour.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULTS",
    "MAX_QUEUE",
    "MAX_REDIRECTS",
    "MAX_SIZE",
    "OPEN_TIMEOUT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "PROXY",
    "RECONNECT_DELAY",
    "RECONNECT_MAX_DELAY",
    "SERVER_HEADER",
    "TRANSPORT",
    "USER_AGENT_HEADER",
]

#: Largest message accepted, in bytes (1 MiB); None removes the limit.
MAX_SIZE: int | None = 2**20
#: Received messages buffered before asyncws stops reading from the socket.
MAX_QUEUE = 32
#: Seconds for the opening handshake (client: everything ``connect()`` does).
OPEN_TIMEOUT: float | None = 10.0
#: Seconds for the closing handshake.
CLOSE_TIMEOUT = 10.0
#: Keepalive: seconds between Pings, and seconds to wait for each Pong.
PING_INTERVAL: float | None = 20.0
PING_TIMEOUT: float | None = 20.0
#: 3xx answers a client follows during the opening handshake.
MAX_REDIRECTS = 10
#: The product token sent as ``User-Agent`` (client) and ``Server`` (server).
USER_AGENT_HEADER: str | None = f"asyncws/{__version__}"
SERVER_HEADER: str | None = USER_AGENT_HEADER
#: True: the proxy the environment names (``urllib.request.getproxies()``, ``no_proxy``).
PROXY: str | bool | None = True
#: Reconnection (``async for ws in connect(...)``): the first retry is immediate, the second
#: waits about RECONNECT_DELAY seconds, and each later one twice as long, at most
#: RECONNECT_MAX_DELAY (each delay is drawn at random between half and all of its value).
RECONNECT_DELAY = 1.0
RECONNECT_MAX_DELAY = 60.0
#: The transports connections run on: "auto" (aiofastnet's when it is installed, but uvloop's
#: own for plain connections on uvloop; or what the ASYNCWS_TRANSPORT environment variable
#: says), "asyncio" (the event loop's own) or "aiofastnet" (see asyncws.transports).
TRANSPORT = "auto"

#: keyword -> default, for every option of the four functions (the documented table).
DEFAULTS: dict[str, Any] = {
    "max_size": MAX_SIZE,
    "max_queue": MAX_QUEUE,
    "write_limit": None,
    "open_timeout": OPEN_TIMEOUT,
    "close_timeout": CLOSE_TIMEOUT,
    "ping_interval": PING_INTERVAL,
    "ping_timeout": PING_TIMEOUT,
    "compression": None,
    "subprotocols": None,
    "origin": None,
    "origins": None,
    "process_request": None,
    "extra_headers": None,
    "user_agent_header": USER_AGENT_HEADER,
    "server_header": SERVER_HEADER,
    "max_redirects": MAX_REDIRECTS,
    "proxy": PROXY,
    "proxy_ssl": None,
    "reconnect_delay": RECONNECT_DELAY,
    "reconnect_max_delay": RECONNECT_MAX_DELAY,
    "transport": TRANSPORT,
}
