"""The engine's model-call client (runtime.dataflow.httpclient) against aiohttp's client, side
by side: the client process's CPU per call (us), for POSTs of an OIP request to a small
server in another process (an aiohttp app answering a fixed OIP response), at concurrency 1
and 32, each client measured twice, alternating.

    .venv/bin/python bench/httpclient.py [--calls 20000]
"""

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.dataflow.httpclient import HttpClient  # noqa: E402
from runtime.procs import free_port, tcp_open, wait_until  # noqa: E402

BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [4],
                               "data": [1, 2, 3, 4]}]}).encode()
ANSWER = json.dumps({"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32",
                                                     "shape": [4], "data": [11, 12, 13, 14]}]})
SERVER = f"""
import uvloop
from aiohttp import web
async def infer(request):
    await request.read()
    return web.Response(body={ANSWER.encode()!r}, content_type="application/json")
app = web.Application()
app.router.add_post("/v2/models/{{name}}/infer", infer)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), print=None,
            access_log=None)
"""
HEADERS = {"seldon-model": "m", "content-type": "application/json", "x-request-id": "r1"}


async def with_aiohttp(base: str, calls: int, concurrency: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128)) as session:
        async def call() -> None:
            async with session.post(f"{base}/v2/models/m/infer", data=BODY,
                                    headers=HEADERS) as r:
                assert r.status == 200
                await r.read()
        await run(call, calls, concurrency)


async def with_httpclient(base: str, calls: int, concurrency: int) -> None:
    client = HttpClient(base)

    async def call() -> None:
        status, _ = await client.post("/v2/models/m/infer", BODY, HEADERS)
        assert status == 200
    try:
        await run(call, calls, concurrency)
    finally:
        await client.close()


async def run(call, calls: int, concurrency: int) -> None:
    for _ in range(200):   # connections and caches warm
        await call()

    async def worker(n: int) -> None:
        for _ in range(n):
            await call()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))


def measure(client, base: str, calls: int, concurrency: int) -> float:
    """The client process's CPU per call, us."""
    start = time.process_time()
    uvloop.run(client(base, calls, concurrency))
    return 1e6 * (time.process_time() - start) / (calls + 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        wait_until(lambda: tcp_open(port), 30, "the test server")
        base = f"http://127.0.0.1:{port}"
        print(f"client CPU per call (us), {args.calls} calls each, two runs alternating")
        print(f"{'concurrency':>11}  {'aiohttp':>15}  {'httpclient':>15}  ratio")
        for concurrency in (1, 32):
            a, h = [], []
            for _ in range(2):
                a.append(measure(with_aiohttp, base, args.calls, concurrency))
                h.append(measure(with_httpclient, base, args.calls, concurrency))
            print(f"{concurrency:>11}  {a[0]:6.1f} / {a[1]:6.1f}  {h[0]:6.1f} / {h[1]:6.1f}  "
                  f"{min(a) / min(h):.1f}x", flush=True)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
