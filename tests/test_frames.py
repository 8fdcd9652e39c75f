"""Close-frame rules of RFC 6455 section 5.5.1 and 7.4: which codes are valid, how a close
payload is parsed and built."""

from __future__ import annotations

import pytest

from asyncws.frames import (
    CloseFrameError,
    build_close_payload,
    is_valid_close_code,
    parse_close_payload,
)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert is_valid_close_code(code)
    assert parse_close_payload(code.to_bytes(2, "big") + b"why") == (code, "why")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
                                  65535])
def test_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(CloseFrameError) as info:
        parse_close_payload(code.to_bytes(2, "big"))
    assert info.value.code == 1002


def test_close_payload_shapes() -> None:
    assert parse_close_payload(b"") == (1005, "")
    with pytest.raises(CloseFrameError) as info:
        parse_close_payload(b"\x03")
    assert info.value.code == 1002
    with pytest.raises(CloseFrameError) as info:
        parse_close_payload(b"\x03\xe8\xce")
    assert info.value.code == 1007
    assert parse_close_payload(b"\x03\xe8\xce\xba") == (1000, "κ")


def test_build_close_payload() -> None:
    assert build_close_payload(1000) == b"\x03\xe8"
    assert build_close_payload(4000, "é") == b"\x0f\xa0\xc3\xa9"
    assert build_close_payload(1005) == b""
    with pytest.raises(ValueError):
        build_close_payload(1006)
    with pytest.raises(ValueError):
        build_close_payload(1000, "x" * 124)
