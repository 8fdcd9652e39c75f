"""``wss://``: TLS with a test CA from trustme, on both sides; and the default client context
really verifies certificates."""

from __future__ import annotations

import ssl

import pytest

trustme = pytest.importorskip("trustme")

import asyncws  # noqa: E402

from .conftest import Server, run  # noqa: E402

# ``contexts``: the test CA's server and client contexts (conftest.py).


def test_wss_echo(contexts) -> None:
    server_ctx, client_ctx = contexts

    async def main() -> None:
        async with Server(ssl=server_ctx) as server:
            ws = await asyncws.connect(server.url("/secure", scheme="wss"), ssl=client_ctx)
            assert ws.writer.get_extra_info("ssl_object") is not None
            for payload in ["tls text", b"\x00" * 100000, "é" * 70000]:
                await ws.send(payload)
                assert await ws.recv() == payload
            await ws.close()
            assert ws.close_code == 1000

    run(main())


def test_wss_default_context_verifies_certificates(contexts) -> None:
    server_ctx, _ = contexts

    async def main() -> None:
        async with Server(ssl=server_ctx) as server:
            # No ssl=: the default context does not trust the test CA, so this must fail.
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncws.connect(server.url(scheme="wss"))

    run(main())


def test_ssl_with_ws_url_is_refused(contexts) -> None:
    with pytest.raises(asyncws.InvalidURI):
        run(asyncws.connect("ws://127.0.0.1:1/", ssl=contexts[1]))
