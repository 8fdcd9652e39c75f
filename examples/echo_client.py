"""Echo client: sends 'hello' and prints the echo (the asyncws 0.1 example, in async/await).

The 0.1 example looped forever; this one sends COUNT messages (default 5) and closes, so that it
ends by itself. Run the echo server first, then: python examples/echo_client.py [URL] [COUNT]
"""

import asyncio
import sys

import asyncws


async def echo(url: str, count: int) -> None:
    websocket = await asyncws.connect(url)
    try:
        for _ in range(count):
            await websocket.send("hello")
            echo = await websocket.recv()
            if echo is None:
                break
            print(echo)
    except asyncws.ConnectionClosed:
        pass  # the server closed between two messages: send() says so, recv() says None
    await websocket.close()


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://localhost:8000"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    asyncio.run(echo(url, count))
