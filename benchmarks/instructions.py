"""Instructions per round trip, counted by valgrind's callgrind: a repeatable profile.

Wall-clock figures on a shared 2-core machine move by tens of percent between runs; instruction
counts do not. This script runs an in-process ping-pong (client and server on one event loop)
for each implementation twice, with 0 and with N round trips, under
``valgrind --tool=callgrind``, and prints (Ir(N) - Ir(0)) / N: the instructions one round trip
costs, client and server together, start-up excluded. System-call time is not counted, so these
figures rank the Python-level work of each implementation, not their wall-clock speed.

    python benchmarks/instructions.py [--n 5000] [--size 256] [--loop uvloop|asyncio]

Implementations: ``asyncws`` (client and server), ``picows.websockets`` (picows' awaitable,
websockets-compatible API: its ``serve`` and ``connect``, the same echo), ``tcp-callback`` (a
plain asyncio.Protocol echo; the client awaits a future per reply), ``tcp-task`` (the same, but
the server is a task awaiting a future per message and writing from a coroutine: the shape of an
awaitable recv()/send() API) and ``picows`` (its callback listener API, when installed).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

PROGRAMS = {
    "asyncws": """
import asyncws
async def echo(ws):
    while (m := await ws.recv()) is not None:
        await ws.send(m)
async def main(n, size):
    srv = await asyncws.start_server(echo, "127.0.0.1", 0, ping_interval=None, max_size=None)
    port = srv.sockets[0].getsockname()[1]
    ws = await asyncws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None, max_size=None)
    msg = b"x" * size
    for _ in range(n):
        await ws.send(msg)
        await ws.recv()
    await ws.close()
""",
    "picows.websockets": """
from picows.websockets import connect, serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main(n, size):
    srv = await serve(echo, "127.0.0.1", 0, ping_interval=None, max_size=None, compression=None)
    port = srv.sockets[0].getsockname()[1]
    ws = await connect(f"ws://127.0.0.1:{port}/", ping_interval=None, max_size=None,
                       compression=None, proxy=None)
    msg = b"x" * size
    for _ in range(n):
        await ws.send(msg)
        await ws.recv()
    await ws.close()
    srv.close()
""",
    "tcp-callback": """
import asyncio
class Server(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
class Client(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.w = None
    def data_received(self, d): self.w.set_result(d)
async def main(n, size):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Server, "127.0.0.1", 0)
    t, c = await loop.create_connection(Client, "127.0.0.1", srv.sockets[0].getsockname()[1])
    msg = b"x" * size
    for _ in range(n):
        c.w = loop.create_future(); t.write(msg); await c.w
    t.close()
""",
    "tcp-task": """
import asyncio
class Server(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.w = None; self.q = []
        asyncio.get_running_loop().create_task(self.run())
    def data_received(self, d):
        w = self.w
        if w is not None and not w.done(): self.w = None; w.set_result(d)
        else: self.q.append(d)
    async def recv(self):
        if self.q: return self.q.pop(0)
        self.w = asyncio.get_running_loop().create_future()
        return await self.w
    async def send(self, d): self.t.write(d)
    async def run(self):
        while True:
            await self.send(await self.recv())
class Client(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.w = None
    def data_received(self, d): self.w.set_result(d)
async def main(n, size):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Server, "127.0.0.1", 0)
    t, c = await loop.create_connection(Client, "127.0.0.1", srv.sockets[0].getsockname()[1])
    msg = b"x" * size
    for _ in range(n):
        c.w = loop.create_future(); t.write(msg); await c.w
    t.close()
""",
    "picows": """
from picows import WSListener, WSMsgType, ws_connect, ws_create_server
class Server(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.BINARY:
            transport.send(WSMsgType.BINARY, frame.get_payload_as_bytes())
class Client(WSListener):
    w = None
    def on_ws_frame(self, transport, frame):
        if self.w is not None: self.w.set_result(frame.get_payload_as_bytes())
async def main(n, size):
    import asyncio
    loop = asyncio.get_running_loop()
    srv = await ws_create_server(lambda r: Server(), "127.0.0.1", 0)
    t, c = await ws_connect(Client, f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/")
    msg = b"x" * size
    for _ in range(n):
        c.w = loop.create_future(); t.send(WSMsgType.BINARY, msg); await c.w
    t.disconnect()
""",
}

RUNNER = """
import asyncio, sys
n, size, loop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if loop == "uvloop":
    import uvloop
    uvloop.run(main(n, size))
else:
    asyncio.run(main(n, size))
"""


def instructions(program: str, n: int, size: int, loop: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "prog.py")
        with open(script, "w") as f:
            f.write(program + RUNNER)
        out = os.path.join(tmp, "callgrind.out")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             script, str(n), str(size), loop],
            capture_output=True, text=True, timeout=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        match = re.search(r"Collected : (\d+)", proc.stderr)
        if match is None:
            raise RuntimeError("no instruction count in valgrind's output")
        return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="round trips in the measured run")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--impl", default=",".join(PROGRAMS))
    args = parser.parse_args()
    print(f"| impl | instructions per round trip ({args.size} B, {args.loop}, n={args.n}) |")
    print("|---|---:|")
    for impl in args.impl.split(","):
        try:
            per = (instructions(PROGRAMS[impl], args.n, args.size, args.loop)
                   - instructions(PROGRAMS[impl], 0, args.size, args.loop)) / args.n
        except Exception as exc:  # noqa: BLE001 - report, go on with the others
            print(f"| {impl} | error: {str(exc).strip().splitlines()[-1][:80]} |")
            continue
        print(f"| {impl} | {per:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
