"""The cost of tracing: two local platforms side by side, one without tracing and one sending
every span (samplePercent 100) to an OTLP/gRPC collector in this process, each serving iris and
the 2-step `chain` pipeline. Rounds alternate between the platforms so a busy moment of the
shared machine hits both alike.

    .venv/bin/python bench/tracing.py [--requests 600] [--rounds 3] [--concurrency 4]

Prints requests per second through Envoy, model and pipeline, off vs on, and the ratio, plus
the spans the collector received.
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.client import SchedulerClient
from runtime.local.config import LocalConfig, Ports
from runtime.local.platform import Platform
from runtime.procs import free_port
from runtime.specs.manifest import load_file
from runtime.tracing import TracingConfig

ROOT = Path(__file__).resolve().parents[1]
IRIS = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32",
                    "data": [6.0, 2.2, 5.0, 1.5]}]}
CHAIN = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = 0
        self.lock = threading.Lock()

    def Export(self, request, context):
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


def platform(tracing: TracingConfig | None) -> Platform:
    p = Platform(Path(tempfile.mkdtemp(prefix="core2-bench-tracing-")), LocalConfig(
        ports=Ports(**{k: free_port() for k in Ports.model_fields}), tracing=tracing))
    p.start()
    client = SchedulerClient(p.scheduler_address)
    client.apply("Model", "iris", json.dumps({
        "storageUri": str(ROOT / "samples/models/iris"), "requirements": ["sklearn"]}))
    for r in load_file(ROOT / "samples/pipelines/models.yaml"):
        if r.name in ("add10", "mul10"):
            client.apply_resource(r)
    for name in ("iris", "add10", "mul10"):
        client.wait("Model", name, timeout=120)
    for r in load_file(ROOT / "samples/pipelines/chain.yaml"):
        client.apply_resource(r)
        client.wait("Pipeline", r.name, timeout=120)
    return p


def rate(url: str, body: dict, n: int, concurrency: int) -> float:
    """Requests per second for n requests from `concurrency` clients; raises on a failure."""
    def worker(count: int) -> None:
        with httpx.Client(timeout=60) as c:
            for _ in range(count):
                r = c.post(url, json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:200]}")
    started = time.perf_counter()
    with futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker, n // concurrency) for _ in range(concurrency)]:
            f.result()
    return (n // concurrency * concurrency) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=600, help="per path and platform, per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    sink, port = Sink(), free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    platforms = {}
    try:
        platforms["off"] = platform(None)
        platforms["on"] = platform(TracingConfig(otlpEndpoint=f"127.0.0.1:{port}"))
        paths = {"model iris": ("/v2/models/iris/infer", IRIS),
                 "pipeline chain": ("/v2/pipelines/chain/infer", CHAIN)}
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for path_name, (path, body) in paths.items():
                for mode, p in platforms.items():
                    results.setdefault((path_name, mode), []).append(
                        rate(p.inference_url + path, body, args.requests, args.concurrency))
        print(f"{args.requests} requests x {args.rounds} rounds per path and platform, "
              f"{args.concurrency} clients; best round")
        for path_name in paths:
            off, on = max(results[(path_name, "off")]), max(results[(path_name, "on")])
            print(f"  {path_name:15s} off {off:7.1f} req/s   on {on:7.1f} req/s   "
                  f"on/off {on / off:.2f}")
        time.sleep(6)  # the services' batch exporters send every 5 s
        print(f"spans received: {sink.spans}")
    finally:
        for p in platforms.values():
            p.stop()
        server.stop(None)


if __name__ == "__main__":
    main()
