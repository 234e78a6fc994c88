"""Tracing: one pipeline request is one trace, received by an OTLP collector (a real OTLP/gRPC
TraceService in the test), with a span for each hop and step: Envoy, the pipeline gateway, the
engine's steps and its model calls, Envoy again and MLServer, per step."""

import secrets
import threading
from concurrent import futures

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from runtime import envoy
from runtime.local.config import LocalConfig
from runtime.local.platform import Platform
from runtime.procs import free_port
from runtime.specs.manifest import load_file
from runtime.tracing import TracingConfig
from tests.conftest import ROOT, Env, free_ports, wait_for


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent: (service name, span name, trace id, span id, parent id)."""

    def __init__(self):
        self.spans: list[tuple[str, str, str, str, str]] = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                service = next((a.value.string_value for a in rs.resource.attributes
                                if a.key == "service.name"), "")
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append((service, s.name, s.trace_id.hex(), s.span_id.hex(),
                                           s.parent_span_id.hex()))
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[tuple[str, str, str, str, str]]:
        with self.lock:
            return [s for s in self.spans if s[2] == trace_id]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    collector, port = Collector(), free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    platform = Platform(tmp_path_factory.mktemp("tracing"), LocalConfig(
        ports=free_ports(), pipelines=True,
        tracing=TracingConfig(otlpEndpoint=f"127.0.0.1:{port}")))
    try:
        platform.start()
        env = Env(platform)
        for r in load_file(ROOT / "samples/pipelines/models.yaml"):
            if r.name in ("add10", "mul10"):
                env.scheduler.apply_resource(r)
                env.scheduler.wait("Model", r.name, timeout=90)
        for r in load_file(ROOT / "samples/pipelines/chain.yaml"):
            env.scheduler.apply_resource(r)
            env.scheduler.wait("Pipeline", r.name, timeout=90)
        yield env, collector
    finally:
        platform.stop()
        server.stop(None)


def test_one_pipeline_request_is_one_trace_with_a_span_per_hop_and_step(traced):
    env, collector = traced
    trace_id = secrets.token_hex(16)
    r = httpx.post(f"{env.url}/v2/pipelines/chain/infer", timeout=60,
                   json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                     "data": [1.0]}]},
                   headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert r.status_code == 200, r.text
    expected = {
        ("core2-pipelinegateway", "pipeline chain"),
        ("core2-engine", "pipeline chain step add10"),
        ("core2-engine", "pipeline chain step mul10"),
        ("core2-engine", "model add10"),   # the engine's in-process model gateway
        ("core2-engine", "model mul10"),
    }

    def complete() -> bool:
        got = collector.trace(trace_id)
        names = {(service, name) for service, name, *_ in got}
        services = [service for service, *_ in got]
        # Envoy: the pipeline call and each model call; MLServer: each model call
        return (expected <= names and services.count("envoy") >= 3
                and sum(1 for s in services if s.startswith("mlserver")) >= 2)
    wait_for(complete, 60, f"the spans of trace {trace_id} "
             f"(so far: {sorted({s[:2] for s in collector.trace(trace_id)})})")

    spans = collector.trace(trace_id)
    ids = {span_id for *_, span_id, _ in spans}
    roots = [s for s in spans if s[4] not in ids]
    assert len(roots) == 1, roots  # one tree under the caller's span, no stray trace
    by_name = {name: (span_id, parent) for _, name, _, span_id, parent in spans}
    # the model call continues the step that asked for it, across Kafka
    assert by_name["model mul10"][1] == by_name["pipeline chain step mul10"][0]


def test_envoy_traces_only_when_a_collector_is_configured():
    def hcm(boot):
        return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"]

    kwargs = {"listen_port": 1, "admin_port": 2, "xds_host": "127.0.0.1", "xds_port": 3}
    off = envoy.bootstrap(**kwargs)
    assert "tracing" not in hcm(off)
    assert [c["name"] for c in off["static_resources"]["clusters"]] == ["xds_cluster"]
    on = envoy.bootstrap(**kwargs, otlp="collector.observability:4317", sample_percent=5)
    assert hcm(on)["tracing"]["random_sampling"] == {"value": 5}
    [otlp] = [c for c in on["static_resources"]["clusters"] if c["name"] == envoy.OTLP_CLUSTER]
    assert otlp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"] == {"address": "collector.observability", "port_value": 4317}
