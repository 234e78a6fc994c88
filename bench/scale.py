"""Routing at thousands of models: the scheduler's xDS server (in process) and a real Envoy.

For each N it builds N models (sklearn-style versions on one server's 2 replicas, state
Available, no model server needed), pushes them to Envoy and measures, side by side:
- scheduler CPU for one change: to encode the routes from scratch (what every change cost
  before) against the snapshot and encodings kept between changes (routing.Routing, the
  ScopeTable), then the scheduler's whole CPU until Envoy acknowledged the change, and what
  Envoy is sent for it;
- clusters Envoy holds: one per version before, one per set of replicas now;
- time for Envoy to take the whole config, then for one more model to be routable (Envoy
  answers for it: a tiny HTTP upstream stands in for the model server), and Envoy's RSS.

    .venv/bin/python bench/scale.py [--models 1000 5000 10000]
    SCALE_PROFILE=/tmp/one.prof .venv/bin/python bench/scale.py --models 10000  # cProfile
"""

import argparse
import asyncio
import cProfile
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from runtime.envoy import envoy_argv, write_bootstrap
from runtime.procs import free_port, http_ok
from runtime.scheduler import envoy_resources as er
from runtime.scheduler import snapshot
from runtime.scheduler import state as st
from runtime.scheduler.xds import XdsServer
from runtime.specs import ModelSpec

PROFILE = os.environ.get("SCALE_PROFILE")  # a file: cProfile of the one-more-model rounds
ROUNDS = 5
SPEC = ModelSpec(storageUri="/m", requirements=["sklearn"])


class OkHandler(http.server.BaseHTTPRequestHandler):
    """A model server that answers every inference with 200 (the benches' upstream)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"outputs": []}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


class Hub:
    """The parts of the scheduler snapshot.build reads, with every replica at one upstream."""

    def __init__(self, upstream: int):
        self.replicas = {f"mlserver/{i}": st.Replica(
            "mlserver", i, ["sklearn"], 10**12, 0, "127.0.0.1", upstream, upstream, upstream,
            upstream, connected=True) for i in range(2)}
        self.models = type("M", (), {"models": {}, "replicas": self.replicas})()
        self.pipeline_gateway = self.feedback = None
        self.pipelines = type("P", (), {"docs": {}})()
        self.experiments = type("E", (), {"routes": staticmethod(lambda t: ([], set()))})()

    def add(self, name: str) -> None:
        self.models.models[name] = st.Model(name, [st.ModelVersion(
            name, 1, SPEC, st.AVAILABLE, server="mlserver",
            replicas={0: st.ReplicaState(st.R_AVAILABLE), 1: st.ReplicaState(st.R_AVAILABLE)})])


def routable(url: str, model: str) -> bool:
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


class CountingXds(XdsServer):
    """Counts the resources it sends (after a restart: what Envoy did not already hold)."""

    resent = 0

    async def _push(self, stream, type_url, resources):
        nonce = await super()._push(stream, type_url, resources)
        if nonce:
            self.resent += len(stream.outbox._queue[-1].resources)
        return nonce


async def _serve(port: int) -> tuple[CountingXds, grpc.aio.Server]:
    xds = CountingXds()
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 1 << 30)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(xds, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return xds, server


async def measure(n: int, upstream: int) -> dict:
    hub = Hub(upstream)
    for i in range(n):
        hub.add(f"m{i}")
    xds_port = free_port()
    xds, server = await _serve(xds_port)
    listen, admin = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="core2-scale-"))
    config = write_bootstrap(work / "envoy.json", listen_port=listen, admin_port=admin,
                             xds_host="127.0.0.1", xds_port=xds_port)
    envoy = subprocess.Popen(envoy_argv(config), stdout=subprocess.DEVNULL,
                             stderr=open(work / "envoy.log", "w"))
    url = f"http://127.0.0.1:{listen}"
    try:
        routing = snapshot.Routing(hub)  # kept between changes, as in the scheduler
        snap = routing.snapshot()
        t0 = time.perf_counter()
        generation = xds.set_snapshot(snap)
        while not await xds.wait_applied(generation, timeout=600):
            pass
        while not await asyncio.to_thread(http_ok, f"http://127.0.0.1:{admin}/ready"):
            await asyncio.sleep(0.05)
        whole = time.perf_counter() - t0
        scopes, routes = xds.scopes.encode(snap)
        route_bytes = sum(map(len, routes.values())) + sum(map(len, scopes.values()))
        # one more model, a few times (medians): scheduler CPU to encode it from scratch
        # (what every change cost before) and kept between changes; the scheduler's whole
        # CPU (its thread: snapshot, encoding, the xDS streams) until Envoy acknowledged it;
        # what Envoy is sent; and the time until Envoy answers for the model
        fresh, incremental, cpu, pushed, one_more = [], [], [], [], []
        prof = cProfile.Profile() if PROFILE else None
        for i in range(ROUNDS):
            name = f"extra{i}"
            hub.add(name)
            routing.touch(name)
            fresh.append(_cpu(lambda: er.ScopeTable().encode(snapshot.build(hub))))
            before = xds._route_res.generation, xds._scope_res.generation
            if prof:
                prof.enable()
            t0, c0 = time.perf_counter(), time.thread_time()
            snap = routing.snapshot()
            xds._scoped(snap)  # what the xDS writer does first
            incremental.append(time.thread_time() - c0)
            generation = xds.set_snapshot(snap)
            while not await xds.wait_applied(generation, timeout=600):
                pass
            cpu.append(time.thread_time() - c0)
            while not await asyncio.to_thread(routable, url, name):
                pass
            one_more.append(time.perf_counter() - t0)
            if prof:
                prof.disable()
            # delta xDS: only the scopes and route configurations that changed
            pushed.append(sum(len(xds._route_res[n][1]) for n in xds._route_res.changed_since(
                before[0])) + sum(len(xds._scope_res[n][1])
                                  for n in xds._scope_res.changed_since(before[1])))
        if prof:
            prof.dump_stats(PROFILE)
        # a scheduler restart: a new xDS server with the same state on the same port; Envoy
        # reconnects, reports the versions it holds and is sent only what it lacks
        await server.stop(0)
        restarted, server = await _serve(xds_port)
        t0 = time.perf_counter()
        generation = restarted.set_snapshot(snapshot.build(hub))  # a new scheduler's first
        while not await restarted.wait_applied(generation, timeout=600):
            pass
        resync = time.perf_counter() - t0
        sent = restarted.resent
        return {"models": n, "clusters before": 2 * (n + 1),
                "clusters now": len(er.clusters(xds.snapshot)),
                "routes MiB": route_bytes / 2**20,
                "one change pushes KiB": median(pushed) / 2**10,
                "encode CPU from scratch s": median(fresh),
                "encode CPU kept s": median(incremental),
                "ratio": median(fresh) / max(median(incremental), 1e-6),
                "scheduler CPU per change s": median(cpu),
                "envoy takes all s": whole, "one more routable s": median(one_more),
                "envoy RSS MiB": rss_mb(envoy.pid), "restart resync s": resync,
                "resources resent": sent}
    finally:
        envoy.terminate()
        try:
            envoy.wait(30)
        except subprocess.TimeoutExpired:
            envoy.kill()
            envoy.wait()
        shutil.rmtree(work, ignore_errors=True)
        await server.stop(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", type=int, nargs="+", default=[1000, 5000, 10000])
    args = p.parse_args()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OkHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    rows = [asyncio.run(measure(n, httpd.server_address[1])) for n in args.models]
    httpd.shutdown()
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    print(f"(pid {os.getpid()}; CPU is this process's, Envoy's time is wall clock)")


if __name__ == "__main__":
    main()
