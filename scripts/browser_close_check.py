"""How a real browser sees asyncws fail a connection: headless Chromium sends a message one byte
over the server's max_size, N times, and reports each close event (code, wasClean).

Issue 11's measurement, as a script (not a test: it needs Chromium, which CI does not install).
The page reports back over a WebSocket of its own. Prints one line of counts, e.g.
``clean 1009: 100, unclean 1009: 0, 1006: 0, other: []``.

    python scripts/browser_close_check.py --runs 100 [--compression]

Needs ``chromium`` (Debian's package) on PATH. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

import asyncws

PAGE = """<!doctype html><meta charset="utf-8"><script>
const URL = "ws://127.0.0.1:%(port)d/", RUNS = %(runs)d, SIZE = %(size)d;
function one() {
  return new Promise(done => {
    const ws = new WebSocket(URL);
    ws.onopen = () => ws.send(new Uint8Array(SIZE));
    ws.onerror = () => {};
    ws.onclose = e => done([e.code, e.wasClean]);
  });
}
(async () => {
  const seen = [];
  for (let i = 0; i < RUNS; i++) seen.push(await one());
  const report = new WebSocket(URL + "report");
  report.onopen = () => report.send(JSON.stringify(seen));
})();
</script>"""


async def main(runs: int, compression: bool, max_size: int) -> Counter[str]:
    reported: asyncio.Future[list[list[object]]] = asyncio.get_running_loop().create_future()

    async def handler(ws: asyncws.Websocket) -> None:
        assert ws.request is not None
        if ws.request.path == "/report":
            reported.set_result(json.loads(await ws.recv() or "[]"))
            return
        async for _ in ws:
            pass

    server = await asyncws.start_server(
        handler, "127.0.0.1", 0, max_size=max_size, compression="deflate" if compression else None
    )
    port = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        page = os.path.join(tmp, "page.html")
        with open(page, "w") as f:
            f.write(PAGE % {"port": port, "runs": runs, "size": max_size + 1})
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            raise SystemExit("chromium is not installed")
        proc = subprocess.Popen(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp}/profile",
                f"file://{page}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seen = await asyncio.wait_for(reported, 60 + runs)
        finally:
            proc.kill()
            proc.wait()
            server.close()
            await server.wait_closed()
    counts: Counter[str] = Counter()
    for code, clean in seen:
        if code == 1009:
            counts["clean 1009" if clean else "unclean 1009"] += 1
        else:
            counts[f"{code} wasClean={clean}"] += 1
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--max-size", type=int, default=2**20)
    args = parser.parse_args()
    result = asyncio.run(main(args.runs, args.compression, args.max_size))
    print(
        f"asyncws {asyncws.__version__} from {os.path.dirname(asyncws.__file__)}, "
        f"{args.runs} runs{', compression' if args.compression else ''}: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(result.items()))
    )
    sys.exit(0)
