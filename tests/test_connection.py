"""End to end over 127.0.0.1: asyncws client against asyncws server through the public API
(recv/send/close, handler lifecycle, close codes, limits, flow control, handshake failures)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import asyncws

from .conftest import Server, run

SIZES = [0, 1, 125, 126, 65535, 65536, 2**20]


@pytest.mark.parametrize("size", SIZES)
def test_echo_text_and_binary(size: int) -> None:
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            text = ("é" * size)[: max(0, size // 2)]
            data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            await ws.send(text)
            await ws.send(data)
            await ws.send(bytearray(data[:10]))
            await ws.send(memoryview(data)[:20])
            assert await ws.recv() == text
            assert await ws.recv() == data
            assert await ws.recv() == data[:10]
            assert await ws.recv() == data[:20]
            await ws.close()

    run(main())


def test_request_response_and_writer() -> None:
    seen = {}

    async def handler(ws: asyncws.Websocket) -> None:
        seen["path"] = ws.request.path
        seen["host"] = ws.request.headers["Host"]
        seen["response"] = ws.response
        seen["peer"] = ws.writer.get_extra_info("peername")
        await ws.send("ready")

    async def main() -> None:
        async with Server(handler) as server:
            ws = await asyncws.connect(server.url("/chat?room=1"))
            assert ws.request is None
            assert ws.response.status == 101
            assert ws.response.headers["upgrade"].lower() == "websocket"
            assert await ws.recv() == "ready"
            assert await ws.recv() is None
            assert ws.close_code == 1000

    run(main())
    assert seen["path"] == "/chat?room=1"
    assert seen["host"] == f"127.0.0.1:{seen['host'].split(':')[1]}"
    assert seen["response"] is None
    assert seen["peer"][0] == "127.0.0.1"


def test_recv_keeps_returning_none_and_send_raises_after_close() -> None:
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            await ws.close(4001, "done here")
            await ws.close()  # idempotent
            assert ws.close_code == 4001 and ws.close_reason == "done here"
            assert await ws.recv() is None
            assert await ws.recv() is None
            with pytest.raises(asyncws.ConnectionClosed) as info:
                await ws.send("x")
            assert isinstance(info.value, ConnectionError)
            assert info.value.code == 4001
            assert ws.closed.done() and not ws.open

    run(main())


def test_handler_exception_closes_with_1011_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(ws: asyncws.Websocket) -> None:
        await ws.recv()
        raise RuntimeError("boom")

    async def main() -> None:
        async with Server(handler) as server:
            ws = await asyncws.connect(server.url())
            await ws.send("trigger")
            assert await ws.recv() is None
            assert ws.close_code == 1011

    with caplog.at_level(logging.ERROR, logger="asyncws"):
        run(main())
    assert any("handler failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_peer_close_during_recv_returns_none() -> None:
    results = []

    async def handler(ws: asyncws.Websocket) -> None:
        results.append(await ws.recv())
        results.append(ws.close_code)

    async def main() -> None:
        async with Server(handler) as server:
            ws = await asyncws.connect(server.url())
            await ws.close(1001, "bye")
            await asyncio.sleep(0.05)

    run(main())
    assert results == [None, 1001]


def test_writer_close_drops_without_handshake() -> None:
    results: list = []

    async def handler(ws: asyncws.Websocket) -> None:
        results.append(await ws.recv())
        results.append(ws.close_code)

    async def main() -> None:
        async with Server(handler) as server:
            ws = await asyncws.connect(server.url())
            ws.writer.close()
            assert await ws.recv() is None
            assert ws.close_code == 1006
            for _ in range(100):
                if len(results) == 2:
                    break
                await asyncio.sleep(0.01)

    run(main())
    assert results == [None, 1006]


def test_max_size_closes_with_1009() -> None:
    async def main() -> None:
        async with Server(max_size=1000) as server:
            ws = await asyncws.connect(server.url())
            await ws.send(b"x" * 1000)
            assert await ws.recv() == b"x" * 1000
            await ws.send(b"x" * 1001)
            assert await ws.recv() is None
            assert ws.close_code == 1009
        async with Server() as server:
            ws = await asyncws.connect(server.url(), max_size=10)
            await ws.send("0123456789")
            assert await ws.recv() == "0123456789"
            await ws.send("0123456789a")
            # Our client refuses the 11-byte echo: it fails the connection with 1009.
            assert await ws.recv() is None
            assert ws.close_code == 1009

    run(main())


def test_max_queue_pauses_reading_without_losing_messages() -> None:
    async def main() -> None:
        release = asyncio.Event()
        got: list = []

        async def handler(ws: asyncws.Websocket) -> None:
            await release.wait()
            while (msg := await ws.recv()) is not None:
                got.append(msg)

        async with Server(handler, max_queue=4) as server:
            ws = await asyncws.connect(server.url())
            for i in range(200):
                await ws.send(f"m{i}")
            await asyncio.sleep(0.05)
            release.set()
            await ws.close()
        assert got == [f"m{i}" for i in range(200)]

    run(main())


def test_flush_and_send_after_peer_vanished() -> None:
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            await ws.send(b"x" * 100000, flush=True)
            assert await ws.recv() == b"x" * 100000
            ws.writer.close()
            await ws.closed
            with pytest.raises(asyncws.ConnectionClosed):
                await ws.send(b"y", flush=True)

    run(main())


def test_ping_pong_and_async_iteration() -> None:
    async def handler(ws: asyncws.Websocket) -> None:
        rtt = await (await ws.ping(b"hello"))
        assert rtt >= 0
        for i in range(3):
            await ws.send(str(i))

    async def main() -> None:
        async with Server(handler) as server:
            ws = await asyncws.connect(server.url())
            assert [m async for m in ws] == ["0", "1", "2"]

    run(main())


def test_async_iteration_ends_when_the_peer_closes_while_it_waits() -> None:
    async def handler(ws: asyncws.Websocket) -> None:
        await ws.send("first")
        await asyncio.sleep(0.05)  # the client's loop is waiting by now
        await ws.close(1001, "bye")

    async def main() -> None:
        async with Server(handler) as server:
            ws = await asyncws.connect(server.url())
            got = [m async for m in ws]
            assert got == ["first"]
            assert ws.close_code == 1001
            assert [m async for m in ws] == []  # and stays ended
            assert await ws.recv() is None

    run(main())


def test_concurrent_recv_is_an_error() -> None:
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            first = asyncio.ensure_future(ws.recv())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError):
                await ws.recv()
            await ws.send("x")
            assert await first == "x"
            await ws.close()

    run(main())


def test_recv_and_send_work_with_asyncio_task_helpers() -> None:
    # recv() and send() return light awaitables, not coroutines: asyncio's helpers must still
    # take them, both when the message is already queued and when recv() has to wait.
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            await asyncio.create_task(ws.send("a"))
            await asyncio.gather(ws.send("b"), ws.send(b"c"))
            await asyncio.wait_for(ws.send("d"), 5)
            assert await asyncio.create_task(ws.recv()) == "a"  # waits for the echo
            while len(ws._queue) < 3:  # let "b", "c" and "d" arrive and queue
                await asyncio.sleep(0.01)
            assert await asyncio.create_task(ws.recv()) == "b"  # already queued
            assert await asyncio.wait_for(ws.recv(), 5) == b"c"
            assert await asyncio.gather(ws.recv()) == ["d"]
            waiting = asyncio.create_task(ws.recv())
            await asyncio.sleep(0)
            assert not waiting.done()
            await ws.send("e")
            assert await waiting == "e"
            await ws.close()
            assert await asyncio.create_task(ws.recv()) is None
            assert await ws.recv() is None

    run(main())


def test_send_writes_at_the_call() -> None:
    # The frame is in the transport when send() returns, even before the await.
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            sent = ws.send("now")
            assert await asyncio.wait_for(ws.recv(), 5) == "now"
            await sent
            await ws.close()

    run(main())


def test_cancelled_recv_loses_no_message() -> None:
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.05)
            await ws.send("after")
            assert await ws.recv() == "after"
            await ws.close()

    run(main())


def test_message_for_a_cancelled_recv_is_queued() -> None:
    # The message arrives while the cancelled recv()'s waiter is still the pump's: it must be
    # queued for the next recv(), not lost in the cancelled future.
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            waiting = asyncio.ensure_future(ws.recv())
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await ws.send("after")
            for _ in range(500):  # until the echo is queued (bounded)
                if ws._queue:
                    break
                await asyncio.sleep(0.01)
            assert list(ws._queue) == ["after"]
            assert await ws.recv() == "after"
            await ws.close()

    run(main())


def test_recv_called_while_its_loop_is_not_running() -> None:
    # recv() makes its waiter at the call. Called from outside the running loop, the waiter
    # must still belong to the connection's loop, which then runs it.
    loop = asyncio.new_event_loop()
    try:
        server = Server()
        loop.run_until_complete(asyncio.wait_for(server.__aenter__(), 10))
        ws = loop.run_until_complete(asyncio.wait_for(asyncws.connect(server.url()), 10))
        receiving = ws.recv()  # no loop is running here

        async def wait_then_send() -> Any:
            waiting = asyncio.ensure_future(receiving)
            await asyncio.sleep(0)  # waiting now waits on the waiter recv() made
            await ws.send("echoed")
            return await waiting

        assert loop.run_until_complete(asyncio.wait_for(wait_then_send(), 10)) == "echoed"
        loop.run_until_complete(asyncio.wait_for(ws.close(), 10))
        loop.run_until_complete(asyncio.wait_for(server.__aexit__(None, None, None), 10))
    finally:
        loop.close()


def test_connect_refused_by_http_server() -> None:
    async def http_403(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(http_403, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(asyncws.InvalidHandshake) as info:
            await asyncws.connect(f"ws://127.0.0.1:{port}/")
        assert info.value.status == 403
        server.close()

    run(main())


def test_connect_open_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Read the request and never answer (returning would close the connection on 3.13+).
        while await reader.read(1 << 20):
            pass

    async def main() -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(asyncio.TimeoutError):
            await asyncws.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2)
        server.close()

    run(main())


def test_close_timeout_when_peer_never_answers_close() -> None:
    async def main() -> None:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Accept the handshake properly, then ignore everything (never answer the Close).
            from asyncws.handshake import build_response, check_request, parse_request

            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(build_response(check_request(parse_request(head))))
            await reader.read()

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ws = await asyncws.connect(f"ws://127.0.0.1:{port}/", close_timeout=0.2)
        await ws.close()
        assert ws.closed.done() and ws.close_code == 1006
        server.close()

    run(main())


@pytest.mark.parametrize(
    "url", ["http://x/", "ws://", "ws://host/#frag", "ws://host:notaport/", "wss//x"]
)
def test_invalid_uris(url: str) -> None:
    with pytest.raises(asyncws.InvalidURI):
        run(asyncws.connect(url))


def test_parse_uri() -> None:
    from asyncws.client import parse_uri

    assert parse_uri("ws://h/p?q=1") == (False, "h", 80, "/p?q=1", "h")
    assert parse_uri("wss://h:8443") == (True, "h", 8443, "/", "h:8443")
    assert parse_uri("ws://[::1]:81/") == (False, "::1", 81, "/", "[::1]:81")


def test_message_before_a_protocol_violation_is_read_and_answered_first() -> None:
    """Autobahn 3.x/4.x/5.15: a message complete before a bad frame reaches recv() and its echo
    goes out before the connection is failed with 1002."""
    from asyncws._kernels import FrameReader, build_frame
    from asyncws.handshake import accept_key, build_request, generate_key

    async def main() -> None:
        async with Server() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            key = generate_key()
            writer.write(build_request(f"127.0.0.1:{server.port}", "/", key))
            head = await reader.readuntil(b"\r\n\r\n")
            assert accept_key(key).encode() in head
            # Two good messages and a frame with a reserved opcode, in one write.
            writer.write(
                build_frame(1, "first", True) + build_frame(2, b"second", True)
                + b"\x83\x80\x00\x00\x00\x00"
            )
            frames = FrameReader(False, None)
            got: list = []
            while not frames.closed:
                data = await reader.read(65536)
                if not data:
                    break
                got.extend(frames.feed(data))
            assert got[:2] == ["first", b"second"]
            assert got[2][0] == 8 and got[2][1][:2] == (1002).to_bytes(2, "big")
            writer.close()

    run(main())


def test_fragmented_send_from_iterables() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for part in (b"async ", b"", b"chunks"):
            await asyncio.sleep(0)
            yield part

    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            await ws.send(["one ", "two ", "three"])
            assert await ws.recv() == "one two three"
            await ws.send(chunks())
            assert await ws.recv() == b"async chunks"
            await ws.send([b"single"])
            assert await ws.recv() == b"single"
            with pytest.raises(TypeError):
                await ws.send(["text", b"bytes"])  # mixed kinds: the connection is failed
            assert await ws.recv() is None
            assert ws.close_code == 1011
            with pytest.raises(TypeError):
                await (await asyncws.connect(server.url())).send(12345)  # type: ignore[arg-type]

    run(main())


def test_keepalive_pings_and_timeout() -> None:
    async def main() -> None:
        async with Server(ping_interval=0.05, ping_timeout=1) as server:
            # A responsive peer: pings come and are answered; the connection stays up.
            ws = await asyncws.connect(server.url(), ping_interval=None)
            await asyncio.sleep(0.3)
            await ws.send("still here")
            assert await ws.recv() == "still here"
            await ws.close()
            assert ws.close_code == 1000

        # A peer that never answers pings: the server fails the connection with 1011.
        from asyncws.handshake import accept_key, build_request, generate_key

        async with Server(ping_interval=0.05, ping_timeout=0.1) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            key = generate_key()
            writer.write(build_request(f"127.0.0.1:{server.port}", "/", key))
            assert accept_key(key).encode() in await reader.readuntil(b"\r\n\r\n")
            received = b""
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                received += data
            from asyncws._kernels import FrameReader

            frames = FrameReader(False, None).feed(received)
            assert frames[0][0] == 9 and len(frames[0][1]) == 4  # a 4-byte keepalive ping
            assert frames[-1][0] == 8 and frames[-1][1][:2] == (1011).to_bytes(2, "big")
            writer.close()

    run(main())


def test_recv_streaming_yields_fragments_as_they_arrive() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def handler(ws: asyncws.Websocket) -> None:
            async def pieces():  # type: ignore[no-untyped-def]
                yield "frag"
                yield "mé"
                # The rest comes only once the client has seen the first piece: it must get
                # pieces before the message is complete. (send() holds one piece back, to mark
                # the last one with FIN, so "mé" goes out with "nted".)
                await release.wait()
                yield "nted"

            await ws.send(pieces())
            await ws.send([b"\x00", b"\x01"])
            await ws.send("whole")
            await ws.recv()

        async with Server(handler) as server:
            ws = await asyncws.connect(server.url())
            got = []
            async for piece in ws.recv_streaming():
                got.append(piece)
                release.set()
            assert got == ["frag", "mé", "nted"]
            # This one may have arrived in full before the call: then it comes as one piece.
            assert b"".join([p async for p in ws.recv_streaming()]) == b"\x00\x01"
            assert [p async for p in ws.recv_streaming()] == ["whole"]
            await ws.send("bye")
            assert await ws.recv() is None
            assert [p async for p in ws.recv_streaming()] == []

    run(main())


def test_recv_streaming_splits_text_only_between_characters() -> None:
    from asyncws.handshake import accept_key, build_request, generate_key

    async def main() -> None:
        results: list = []

        async def handler(ws: asyncws.Websocket) -> None:
            results.append([p async for p in ws.recv_streaming()])
            results.append(await ws.recv())

        async with Server(handler, max_size=8) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            key = generate_key()
            writer.write(build_request(f"127.0.0.1:{server.port}", "/", key))
            assert accept_key(key).encode() in await reader.readuntil(b"\r\n\r\n")
            from asyncws._kernels import build_frame

            data = "é☃".encode()  # 2 + 3 bytes, cut inside both characters
            writer.write(
                build_frame(1, data[:1], True, False)
                + build_frame(0, data[1:3], True, False)
                + build_frame(0, data[3:], True, True)
                + build_frame(2, b"123", True, False)
                + build_frame(0, b"456789", True, True)  # 9 bytes > max_size 8
            )
            await reader.read()  # until the server closes
            writer.close()
        assert results[0] == ["", "é", "☃"]
        assert results[1] is None  # the second message broke max_size across its fragments

    run(main())


class RecordingTransport(asyncio.Transport):
    """A transport that keeps every write, for asserting how frames were written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def server_side_websocket(transport: RecordingTransport) -> asyncws.Websocket:
    from asyncws.connection import Settings, websocket_class
    from asyncws.protocol import Protocol

    cls = websocket_class(asyncio.get_running_loop())
    return cls(transport, Protocol(is_client=False), Settings(ping_interval=None))


def client_frames(*payloads: bytes) -> bytes:
    from asyncws._kernels import build_frame

    return b"".join(build_frame(2, p, True) for p in payloads)


def server_frames(data: bytes) -> list[Any]:
    from asyncws._kernels import FrameReader

    return FrameReader(False, None).feed(data)


def test_replies_to_a_burst_go_out_in_one_write() -> None:
    async def main() -> None:
        transport = RecordingTransport()
        ws = server_side_websocket(transport)
        ws.data_received(client_frames(b"a", b"b", b"c"))  # three messages in one chunk
        for _ in range(3):
            await ws.send(await ws.recv())
        assert transport.writes == []  # held while working through the burst...
        waiting = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)
        # ... and written together once the application waits for more.
        assert len(transport.writes) == 1
        assert server_frames(transport.writes[0]) == [b"a", b"b", b"c"]
        waiting.cancel()

    run(main())


def test_held_frames_go_out_by_the_next_loop_pass_and_before_other_writes() -> None:
    async def main() -> None:
        transport = RecordingTransport()
        ws = server_side_websocket(transport)
        ws.data_received(client_frames(b"1", b"2"))
        await ws.send(await ws.recv())
        assert transport.writes == []
        await asyncio.sleep(0)  # the application does not call recv(): the callback writes
        assert [server_frames(w) for w in transport.writes] == [[b"1"]]
        # A ping (any write besides a small send) comes after what was held.
        await ws.send(await ws.recv())
        await ws.ping(b"p")
        assert [server_frames(w) for w in transport.writes[1:]] == [[b"2"], [(9, b"p")]]
        # writer hands out the transport with nothing held.
        ws.data_received(client_frames(b"3", b"4"))
        await ws.send(await ws.recv())
        ws.writer.close()
        assert server_frames(transport.writes[-1]) == [b"3"]

    run(main())


def test_a_message_that_arrives_alone_is_answered_at_once() -> None:
    async def main() -> None:
        transport = RecordingTransport()
        ws = server_side_websocket(transport)
        ws.data_received(client_frames(b"x", b"y"))  # a burst first
        await ws.send(await ws.recv())
        await ws.send(await ws.recv())
        await asyncio.sleep(0)
        transport.writes.clear()
        ws.data_received(client_frames(b"alone"))
        await ws.send(await ws.recv())
        assert [server_frames(w) for w in transport.writes] == [[b"alone"]]
        # flush=True writes at once even inside a burst.
        ws.data_received(client_frames(b"f1", b"f2"))
        await ws.send(await ws.recv(), flush=True)
        assert server_frames(transport.writes[-1]) == [b"f1"]

    run(main())
