"""Cold start at scale (issue 11): a scheduler store holding N Available models.

1. Cold: the real scheduler (process) and a real Envoy start together on that store, with an
   agent that reports it holds every model (played here: it acknowledges at once; a tiny HTTP
   upstream stands in for the model server). Measured: scheduler listening, Envoy /ready, and
   the last model answered through Envoy.
2. Scheduler restart: kill -9, start again; Envoy keeps serving meanwhile (requests to a model
   are counted); measured: scheduler listening, the agent back, and a model applied after the
   restart answered through Envoy (the restarted scheduler is fully in step). Then, settled,
   one more model from the API call to its first answer through Envoy.
3. `core2 up` on such a store (real MLServer and agent; the models are the sample iris, which
   the agent starts loading): its health deadline must pass; measured: time to healthy.

    .venv/bin/python bench/coldstart.py [--models 10000] [--skip-up]
    COLDSTART_PROFILE=/tmp/restart.prof ...  # cProfile of the restarted scheduler
"""

import argparse
import asyncio
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from bench.scale import OkHandler, routable, rss_mb  # noqa: E402
from runtime.client import SchedulerClient  # noqa: E402
from runtime.envoy import envoy_argv, write_bootstrap  # noqa: E402
from runtime.local.config import LocalConfig, LocalServer, Ports  # noqa: E402
from runtime.local.platform import Platform  # noqa: E402
from runtime.pb import agent_pb2, agent_pb2_grpc  # noqa: E402
from runtime.procs import free_port, http_ok, python_module, tcp_open  # noqa: E402
from runtime.scheduler import state as st  # noqa: E402
from runtime.scheduler.store import Store  # noqa: E402
from runtime.specs import ModelSpec  # noqa: E402

Ev = agent_pb2.ModelEvent
IRIS = ROOT / "samples" / "models" / "iris"
SERVER_MEMORY = 10**12


class Upstream(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # Envoy closing idle connections
        pass


def write_store(data_dir: Path, n: int, replica: st.Replica, storage_uri: str) -> None:
    """N models, each Available on `replica`, as a scheduler that served them left them."""
    store = Store(data_dir)
    spec = ModelSpec(storageUri=storage_uri, requirements=["sklearn"])
    store.db.execute("BEGIN")
    for i in range(n):
        name = f"m{i}"
        store.put("model", name, st.Model(name, [st.ModelVersion(
            name, 1, spec, st.AVAILABLE, server=replica.server,
            replicas={replica.idx: st.ReplicaState(st.R_AVAILABLE)})]).to_doc())
    store.put("replica", replica.key, replica.to_doc())
    store.db.execute("COMMIT")
    store.close()


def note(what: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


async def _until(check, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.02)


class FakeAgent:
    """An agent whose server holds every model it is given: it subscribes reporting them
    loaded, acknowledges loads and unloads at once, and re-subscribes after a loss."""

    def __init__(self, address: str, replica: st.Replica, loaded: list[str]):
        self.address, self.replica = address, replica
        self.loaded = set(loaded)

    def _subscribe(self) -> agent_pb2.AgentSubscribe:
        r = self.replica
        return agent_pb2.AgentSubscribe(
            server_name=r.server, replica_idx=r.idx, capabilities=r.capabilities,
            memory_bytes=r.memory, over_commit_percentage=0, host=r.host,
            server_http_port=r.server_http_port, server_grpc_port=r.server_grpc_port,
            agent_http_port=r.agent_http_port, agent_grpc_port=r.agent_grpc_port,
            loaded=[agent_pb2.ModelRef(name=n.rpartition("_")[0], version=1, internal_name=n)
                    for n in sorted(self.loaded)])

    async def run(self) -> None:
        while True:
            try:
                async with grpc.aio.insecure_channel(self.address) as channel:
                    stub = agent_pb2_grpc.AgentStub(channel)
                    call = stub.Subscribe(self._subscribe())
                    async for op in call:
                        await self._answer(stub, op)
            except grpc.aio.AioRpcError:
                pass
            except Exception as e:
                note(f"agent: {e!r}")
            await asyncio.sleep(0.2)

    async def _answer(self, stub, op) -> None:
        load = op.op == agent_pb2.ModelOperation.LOAD
        (self.loaded.add if load else self.loaded.discard)(op.model.internal_name)
        await stub.Event(Ev(server_name=self.replica.server, replica_idx=self.replica.idx,
                            model=op.model, event=Ev.LOADED if load else Ev.UNLOADED,
                            available_memory_bytes=SERVER_MEMORY), timeout=60)


class Prober(threading.Thread):
    """Requests one model through Envoy in a loop; counts answers that are not a 200."""

    def __init__(self, url: str, model: str):
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.ok = self.failed = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            if routable(self.url, self.model):
                self.ok += 1
            else:
                self.failed += 1
            time.sleep(0.01)


def _start_scheduler(work: Path, ports: dict, profile: str | None = None) -> subprocess.Popen:
    """`profile`: a file for cProfile's statistics of this scheduler (written as it stops)."""
    argv = python_module(
        "runtime.scheduler", "--data-dir", str(work / "scheduler"),
        "--api-port", str(ports["api"]), "--agent-port", str(ports["agent"]),
        "--xds-port", str(ports["xds"]))
    if profile:
        argv[1:1] = ["-m", "cProfile", "-o", profile]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=open(work / "scheduler.log", "a"), cwd=ROOT)


def _stop(proc: subprocess.Popen | None, sig=signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def restart_phases(n: int, upstream: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="core2-coldstart-"))
    ports = {k: free_port() for k in ("api", "agent", "xds", "listen", "admin")}
    replica = st.Replica("mlserver", 0, ["sklearn"], SERVER_MEMORY, 0, "127.0.0.1", upstream,
                         upstream, upstream, upstream)
    write_store(work / "scheduler", n, replica, "/models/any")
    url = f"http://127.0.0.1:{ports['listen']}"
    scheduler = envoy = None
    agent = FakeAgent(f"127.0.0.1:{ports['agent']}", replica, [f"m{i}_1" for i in range(n)])
    agent_task = None
    out: dict = {"models": n}
    try:
        # 1. cold: scheduler and Envoy start together
        t0 = time.perf_counter()
        scheduler = _start_scheduler(work, ports)
        config = write_bootstrap(work / "envoy.json", listen_port=ports["listen"],
                                 admin_port=ports["admin"], xds_host="127.0.0.1",
                                 xds_port=ports["xds"])
        envoy = subprocess.Popen(envoy_argv(config), stdout=subprocess.DEVNULL,
                                 stderr=open(work / "envoy.log", "w"))
        agent_task = asyncio.create_task(agent.run())
        await _until(lambda: tcp_open(ports["xds"]), "scheduler listening")
        out["cold: scheduler listening s"] = time.perf_counter() - t0
        note("cold: scheduler listening")
        await _until(lambda: http_ok(f"http://127.0.0.1:{ports['admin']}/ready"), "Envoy ready")
        out["cold: envoy ready s"] = time.perf_counter() - t0
        note("cold: envoy ready")
        await _until(lambda: routable(url, f"m{n - 1}"), "last model routable")
        out["cold: last model routable s"] = time.perf_counter() - t0
        note("cold: last model routable")
        # 2. the scheduler is killed and comes back; Envoy keeps serving meanwhile
        prober = Prober(url, "m0")
        prober.start()
        await asyncio.sleep(1)
        _stop(scheduler, signal.SIGKILL)
        t0 = time.perf_counter()
        scheduler = _start_scheduler(work, ports, os.environ.get("COLDSTART_PROFILE"))
        await _until(lambda: tcp_open(ports["api"]), "scheduler listening")
        out["restart: scheduler listening s"] = time.perf_counter() - t0
        note("restart: scheduler listening")
        client = SchedulerClient(f"127.0.0.1:{ports['api']}", timeout=60)
        await _until(lambda: client.status("Server", "mlserver")[0].ready, "agent back")
        out["restart: agent back s"] = time.perf_counter() - t0
        note("restart: agent back")
        await asyncio.to_thread(client.apply, "Model", "extra", json.dumps(
            {"storageUri": "/models/extra", "requirements": ["sklearn"]}))
        await _until(lambda: routable(url, "extra"), "a new model routable")
        out["restart: new model routable s"] = time.perf_counter() - t0
        note("restart: new model routable")
        # 3. settled: one more model through the real path (API, agent load, xDS), 3 times
        times = []
        for i in range(3):
            await asyncio.sleep(1)
            t0 = time.perf_counter()
            await asyncio.to_thread(client.apply, "Model", f"more{i}", json.dumps(
                {"storageUri": "/models/more", "requirements": ["sklearn"]}))
            await _until(lambda i=i: routable(url, f"more{i}"), "one more model routable")
            times.append(time.perf_counter() - t0)
        out["settled: one more model routable s (median of 3)"] = sorted(times)[1]
        client.close()
        await asyncio.sleep(0.5)
        prober.halt.set()
        prober.join(10)
        out["restart: requests ok/failed"] = f"{prober.ok}/{prober.failed}"
        out["scheduler RSS MiB"] = rss_mb(scheduler.pid)
        return out
    finally:
        if agent_task:
            agent_task.cancel()
        _stop(envoy)
        _stop(scheduler)
        shutil.rmtree(work, ignore_errors=True)


def core2_up(n: int) -> dict:
    """`core2 up` (the local platform, without pipelines) on a store of N iris models."""
    run = Path(tempfile.mkdtemp(prefix="core2-coldstart-up-"))
    replica = st.Replica("mlserver", 0, ["sklearn"], 2 * 2**30, 0, "127.0.0.1", 1, 1, 1, 1)
    write_store(run / "scheduler", n, replica, str(IRIS))
    config = LocalConfig(ports=Ports(**{k: 0 for k in Ports.model_fields}),
                         servers=[LocalServer(name="mlserver")], pipelines=False)
    platform = Platform(run, config)
    t0 = time.perf_counter()
    try:
        platform.start()
        healthy = time.perf_counter() - t0
        return {"core2 up healthy s": healthy, "deadline s": 60}
    finally:
        platform.stop()
        shutil.rmtree(run, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=10000)
    p.add_argument("--skip-up", action="store_true", help="skip the `core2 up` phase")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the clean-ups (processes, dirs)
    httpd = Upstream(("127.0.0.1", 0), OkHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        out = asyncio.run(restart_phases(args.models, httpd.server_address[1]))
    finally:
        httpd.shutdown()
    if not args.skip_up:
        out.update(core2_up(args.models))
    for k, v in out.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
