"""permessage-deflate (RFC 7692): negotiation on both sides, compression round trips, the
max_size bound on inflation, and interop with the websockets package's implementation."""

from __future__ import annotations

import zlib

import pytest

import asyncws
from asyncws.deflate import (
    Deflate,
    DeflateError,
    client_accept,
    client_offer,
    parse_extensions,
    server_accept,
)
from asyncws.exceptions import InvalidHandshake

from .conftest import Server, run


def test_parse_extensions() -> None:
    parsed = parse_extensions(
        ['permessage-deflate; client_max_window_bits; server_max_window_bits="10", x-foo']
    )
    assert parsed == [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        ),
        ("x-foo", []),
    ]
    with pytest.raises(ValueError):
        parse_extensions(["permessage-deflate; bad value"])


def test_offer_and_accept_defaults() -> None:
    offer = client_offer(Deflate())
    assert offer == "permessage-deflate; client_max_window_bits"
    accepted = server_accept([offer], Deflate(), 2**20)
    assert accepted is not None
    response, server_side = accepted
    assert response == "permessage-deflate"
    client_side = client_accept([response], Deflate(), 2**20)
    for msg in [b"", b"a", b"hello hello hello hello" * 100]:
        assert server_side.decompress(client_side.compress(msg)) == msg
        assert client_side.decompress(server_side.compress(msg)) == msg


def test_negotiated_parameters() -> None:
    asked = Deflate(
        server_no_context_takeover=True, server_max_window_bits=10, client_max_window_bits=12
    )
    accepted = server_accept([client_offer(asked)], Deflate(client_no_context_takeover=True), None)
    assert accepted is not None
    response, pmd = accepted
    params = dict(parse_extensions([response])[0][1])
    assert params == {
        "server_no_context_takeover": None,
        "client_no_context_takeover": None,
        "server_max_window_bits": "10",
        "client_max_window_bits": "12",
    }
    assert pmd.local_no_context_takeover and pmd.remote_no_context_takeover
    assert (pmd.local_max_window_bits, pmd.remote_max_window_bits) == (10, 12)


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot honour 8
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; unknown_param",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "x-other-extension",
    ],
)
def test_server_declines_bad_offers(offer: str) -> None:
    assert server_accept([offer], Deflate(), None) is None


def test_server_takes_the_first_acceptable_offer() -> None:
    accepted = server_accept(
        ["permessage-deflate; unknown, permessage-deflate; server_max_window_bits=11"],
        Deflate(),
        None,
    )
    assert accepted is not None and accepted[0] == "permessage-deflate; server_max_window_bits=11"


@pytest.mark.parametrize(
    "response",
    [
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; unknown",
        "x-other",
        "permessage-deflate, permessage-deflate",
    ],
)
def test_client_rejects_bad_responses(response: str) -> None:
    with pytest.raises(InvalidHandshake):
        client_accept([response], Deflate(), None)


def test_decompression_is_bounded_by_max_size() -> None:
    bomb_source = b"\x00" * (10 * 2**20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = (c.compress(bomb_source) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(bomb) < 20000
    _, pmd = server_accept([client_offer(Deflate())], Deflate(), 2**20)  # type: ignore[misc]
    with pytest.raises(DeflateError) as info:
        pmd.decompress(bomb)
    assert info.value.code == 1009
    with pytest.raises(DeflateError) as info:
        pmd.decompress(b"\xff\xff\xff garbage")
    assert info.value.code == 1007


@pytest.mark.parametrize(
    "server_opts,client_opts",
    [
        (Deflate(), Deflate()),
        (Deflate(server_no_context_takeover=True), Deflate(client_no_context_takeover=True)),
        (Deflate(), Deflate(server_max_window_bits=9, client_max_window_bits=9)),
    ],
)
def test_end_to_end_compression(server_opts: Deflate, client_opts: Deflate) -> None:
    async def main() -> None:
        async with Server(compression=server_opts) as server:
            ws = await asyncws.connect(server.url(), compression=client_opts)
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            for payload in ["text " * 1000, b"\x00" * 100000, "", b"", "é☃" * 500]:
                for _ in range(3):  # context takeover across messages
                    await ws.send(payload)
                    assert await ws.recv() == payload
            await ws.send(["frag", "mented"])
            assert await ws.recv() == "fragmented"
            await ws.close()

    run(main())


def test_compression_off_unless_both_sides_want_it() -> None:
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url(), compression="deflate")
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("plain")
            assert await ws.recv() == "plain"
            await ws.close()
        async with Server(compression="deflate") as server:
            ws = await asyncws.connect(server.url())
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.close()

    run(main())


def test_compressed_message_over_max_size_closes_with_1009() -> None:
    async def main() -> None:
        async with Server(compression="deflate", max_size=1000) as server:
            ws = await asyncws.connect(server.url(), compression="deflate", max_size=None)
            await ws.send(b"\x00" * 1000)
            assert await ws.recv() == b"\x00" * 1000
            await ws.send(b"\x00" * 100000)  # compresses to a few hundred bytes
            assert await ws.recv() is None
            assert ws.close_code == 1009

    run(main())


def test_interop_with_websockets_compression() -> None:
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect as ws_connect
    from websockets.asyncio.server import serve as ws_serve

    async def ws_echo(conn) -> None:  # type: ignore[no-untyped-def]
        async for msg in conn:
            await conn.send(msg)

    async def main() -> None:
        async with Server(compression="deflate") as server:
            async with ws_connect(server.url(), compression="deflate") as c:
                for payload in ["compressed text " * 100, b"\x01\x02" * 5000]:
                    await c.send(payload)
                    assert await c.recv() == payload
        async with ws_serve(ws_echo, "127.0.0.1", 0, compression="deflate") as s:
            port = list(s.sockets)[0].getsockname()[1]
            async with asyncws.connect(f"ws://127.0.0.1:{port}/", compression="deflate") as ws:
                assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
                for payload in ["compressed text " * 100, b"\x01\x02" * 5000]:
                    await ws.send(payload)
                    assert await ws.recv() == payload

    run(main())
