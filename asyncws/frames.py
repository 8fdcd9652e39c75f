"""Frame-level constants and rules of RFC 6455 that are not on the per-byte hot path.

This module holds the opcodes, the close codes, and the rules for close frames (section 5.5.1 and
7.4): which codes may be sent and received, and how a close payload is parsed and built. It is pure
data and small functions: no I/O, no asyncio, and nothing that runs per byte (that is the kernels'
job, in ``_kernels``).
"""

from __future__ import annotations

__all__ = [
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "CLOSE_NORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED_DATA",
    "CLOSE_NO_STATUS",
    "CLOSE_ABNORMAL",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_TOO_BIG",
    "CLOSE_MANDATORY_EXTENSION",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_TLS_HANDSHAKE",
    "CloseFrameError",
    "is_valid_close_code",
    "parse_close_payload",
    "build_close_payload",
]

# RFC 6455 section 5.2 / 11.8: opcodes.
OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# RFC 6455 section 7.4.1: defined status codes.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005  # never on the wire: "no status code was present"
CLOSE_ABNORMAL = 1006  # never on the wire: "closed without a Close frame"
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_MANDATORY_EXTENSION = 1010
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TLS_HANDSHAKE = 1015  # never on the wire

# 1012-1014 were registered with IANA after RFC 6455 (service restart, try again later, bad
# gateway); peers send them, so they are accepted like the RFC's own codes.
_VALID_WIRE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015))


class CloseFrameError(Exception):
    """A close frame's payload breaks section 5.5.1; ``code`` is the close code to fail with."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame on the wire (section 7.4.1 and 7.4.2).

    1005, 1006 and 1015 are reserved for local use and never sent; 1016-2999 are reserved for
    future RFCs; 3000-3999 (registered) and 4000-4999 (private) are free for applications.
    """
    return code in _VALID_WIRE_CODES or 3000 <= code <= 4999


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Parse a received Close payload into ``(code, reason)``.

    Section 5.5.1: an empty payload means no status (1005); otherwise the first two bytes are the
    code, and the rest is a UTF-8 reason. A one-byte payload or an invalid code is a protocol error
    (1002); a reason that is not UTF-8 is invalid data (1007).
    """
    n = len(payload)
    if n == 0:
        return CLOSE_NO_STATUS, ""
    if n == 1:
        raise CloseFrameError(CLOSE_PROTOCOL_ERROR, "close frame with a one-byte payload")
    code = (payload[0] << 8) | payload[1]
    if not is_valid_close_code(code):
        raise CloseFrameError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise CloseFrameError(CLOSE_INVALID_DATA, "close reason is not valid UTF-8") from None
    return code, reason


def build_close_payload(code: int, reason: str = "") -> bytes:
    """Build the payload of a Close frame to send; raises ValueError if it breaks section 5.5."""
    if code == CLOSE_NO_STATUS and not reason:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent (RFC 6455 section 7.4)")
    data = code.to_bytes(2, "big") + reason.encode("utf-8")
    if len(data) > 125:
        raise ValueError("close reason too long: a control frame payload is at most 125 bytes")
    return data
