"""Echo server: every message received is sent back (the asyncws 0.1 example, in async/await).

Run: python examples/echo_server.py [HOST] [PORT]   (default 127.0.0.1 8000)
"""

import asyncio
import sys

import asyncws


async def echo(websocket):
    while True:
        frame = await websocket.recv()
        if frame is None:
            break
        await websocket.send(frame)


async def main(host: str, port: int) -> None:
    server = await asyncws.start_server(echo, host, port)
    print(f"echo server listening on ws://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    try:
        asyncio.run(main(host, port))
    except KeyboardInterrupt:
        pass
