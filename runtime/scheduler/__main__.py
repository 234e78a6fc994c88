"""python -m runtime.scheduler: the control plane (Scheduler API, Agent API, xDS, /metrics).

Settings: the flags below (`--help`), else CORE2_* environment variables (KAFKA_* for the
--kafka-* flags), else the defaults."""

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import grpc
from aiohttp import web
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from prometheus_client import start_http_server
from pydantic import Field, ValidationError

from runtime import logs
from runtime.kafka import KafkaSettings
from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.pb import agent_pb2_grpc, feedback_pb2_grpc, scheduler_pb2_grpc
from runtime.retry import GaveUp, Retry, retry
from runtime.scheduler.api import AgentService, SchedulerService
from runtime.scheduler.autoscale import AutoscaleConfig
from runtime.scheduler.core import Scheduler
from runtime.scheduler.feedback import AccessLog, FeedbackService, FeedbackTopic, rest_app
from runtime.scheduler.routes import Endpoint
from runtime.scheduler.store import Store
from runtime.scheduler.xds import XdsServer
from runtime.scheduler_auth import AuthConfigError, SchedulerAuth
from runtime.settings import load
from runtime.specs.common import describe

PROG = "core2-scheduler"
log = logging.getLogger(__name__)


class SchedulerSettings(KafkaSettings):
    """The scheduler's flags (the Kafka ones only matter with --feedback-kafka)."""

    data_dir: str = Field(description="where the SQLite state lives")
    host: str = Field("127.0.0.1", description="address the scheduler listens on")
    api_port: int = Field(9004, description="Scheduler API (gRPC)")
    agent_port: int = Field(9005, description="Agent API (gRPC)")
    xds_port: int = Field(9002, description="Envoy's aggregated discovery (gRPC)")
    metrics_port: int = Field(0, description="Prometheus /metrics (0: not served)")
    pipeline_gateway_http: str = Field(
        "", description="HOST:PORT of the pipeline gateway (REST)")
    pipeline_gateway_grpc: str = Field(
        "", description="HOST:PORT of the pipeline gateway (gRPC)")
    replica_lost_after: float = Field(
        10.0, description="SECONDS a server replica whose agent stays disconnected is kept; "
        "then it is forgotten and its models are placed on other replicas")
    server_max_requests: int = Field(
        DEFAULT_LIMITS.serverMaxRequests,
        description="per set of server replicas and Envoy: requests served at once")
    server_max_pending_requests: int = Field(
        DEFAULT_LIMITS.serverMaxPendingRequests,
        description="per set of server replicas and Envoy: requests queued; more get a "
        "fast 503")
    feedback_http_port: int = Field(
        0, description="serve POST /v2/models|pipelines/{name}/feedback of adaptive "
        "experiments here (Envoy routes it; 0: no feedback service)")
    feedback_grpc_port: int = Field(0, description="serve core2.feedback.Feedback here")
    feedback_host: str = Field(
        "", description="the address Envoy reaches the feedback service at (default --host)")
    feedback_remember: int = Field(
        100_000, description="request ids kept for attributing feedback (the most recent N)")
    feedback_wait_ms: int = Field(
        3000, description="feedback for a request id not logged yet waits this long for "
        "Envoy's access log before it is refused")
    feedback_kafka: bool = Field(
        False, description="also produce each feedback to <kafka-prefix>.<namespace>.feedback")
    autoscale_json: str = Field(
        "{}", description="model and server autoscaling settings as JSON (fields of "
        "runtime.scheduler.autoscale.AutoscaleConfig: models, servers, scaleUpInFlight, "
        "scaleDownInFlight, scaleUpCooldownSeconds, scaleDownDelaySeconds, "
        "serverCooldownSeconds); default: models on, servers off")


def _endpoint(http: str | None, grpc_addr: str | None,
              resolve_for: float = 60) -> Endpoint | None:
    """The pipeline gateway as Envoy will see it. EDS endpoints must be IP addresses, so a host
    name (on a cluster, the gateway Service's `pipelinegateway.<ns>.svc`, whose ClusterIP
    lasts as long as the Service) is resolved here, retried while DNS does not know it yet."""
    if not http:
        return None
    host, _, port = http.rpartition(":")
    gport = int(grpc_addr.rpartition(":")[2]) if grpc_addr else int(port)
    try:
        info = retry(lambda: socket.getaddrinfo(host, int(port), socket.AF_INET,
                                                socket.SOCK_STREAM),
                     Retry(what=f"resolve {host}", retry_on=(socket.gaierror,),
                           timeout=resolve_for, first=1, cap=1))
    except GaveUp as e:
        raise SystemExit(f"--pipeline-gateway-http: cannot resolve {host!r}: "
                         f"{e.__cause__}") from None
    return Endpoint(str(info[0][4][0]), int(port), gport)


def _feedback_endpoint(s: SchedulerSettings) -> Endpoint | None:
    """Where Envoy reaches the feedback service (both ports given), else None."""
    if not (s.feedback_http_port and s.feedback_grpc_port):
        return None
    host = s.feedback_host or s.host
    return _endpoint(f"{host}:{s.feedback_http_port}", f"{host}:{s.feedback_grpc_port}")


async def _serve_feedback(args: SchedulerSettings, scheduler: Scheduler,
                          servers: list[grpc.aio.Server]) -> web.AppRunner | None:
    """The feedback service (REST and gRPC) and the feedback topic, when configured."""
    adaptive = scheduler.adaptive
    adaptive.remember, adaptive.wait_s = args.feedback_remember, args.feedback_wait_ms / 1000
    if args.feedback_kafka:
        topic = FeedbackTopic(args.kafka_config())
        adaptive.publish = topic.publish
        scheduler.spawn(topic.run())
    if scheduler.feedback is None:
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    feedback_pb2_grpc.add_FeedbackServicer_to_server(FeedbackService(adaptive), server)
    server.add_insecure_port(f"{args.host}:{args.feedback_grpc_port}")
    await server.start()
    servers.append(server)
    runner = web.AppRunner(rest_app(adaptive), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.feedback_http_port).start()
    return runner


async def serve(args: SchedulerSettings, autoscale: AutoscaleConfig,
                limits: InferenceLimits) -> None:
    auth = SchedulerAuth.from_env()
    xds = XdsServer(limits)
    scheduler = Scheduler(Store(Path(args.data_dir)), xds,
                          _endpoint(args.pipeline_gateway_http, args.pipeline_gateway_grpc),
                          replica_lost_after_s=args.replica_lost_after,
                          autoscale=autoscale, feedback=_feedback_endpoint(args))
    scheduler.autoscaler.start()
    servers: list[grpc.aio.Server] = []
    plain = SchedulerAuth()  # xDS: only Envoy reaches it
    services: list[tuple[int, SchedulerAuth, Callable[[grpc.aio.Server], object]]] = [
        (args.api_port, auth, lambda s: scheduler_pb2_grpc.add_SchedulerServicer_to_server(
            SchedulerService(scheduler), s)),
        (args.agent_port, auth, lambda s: agent_pb2_grpc.add_AgentServicer_to_server(
            AgentService(scheduler), s)),
        (args.xds_port, plain, lambda s: (
            ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(xds, s),
            # Envoy's access log of adaptive experiments comes on the same connection
            als_pb2_grpc.add_AccessLogServiceServicer_to_server(
                AccessLog(scheduler.adaptive), s)))]
    for port, secured, add in services:
        server = grpc.aio.server(interceptors=secured.interceptors(),
                                 options=[("grpc.keepalive_permit_without_calls", 1),
                                          ("grpc.http2.min_ping_interval_without_data_ms", 1000),
                                          ("grpc.so_reuseport", 0)])  # a taken port must fail
        add(server)
        secured.add_port(server, f"{args.host}:{port}")  # raises if the port is taken
        await server.start()
        servers.append(server)
    rest = await _serve_feedback(args, scheduler, servers)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.host)
    log.info("scheduler ready: api %d, agents %d, xds %d (%s)", args.api_port,
             args.agent_port, args.xds_port, auth.describe())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        await s.stop(1)
    if rest is not None:
        await rest.cleanup()


def _refuse(message: str) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = load(SchedulerSettings, PROG, argv)
    logs.setup("scheduler", args.log_level)
    try:
        autoscale = AutoscaleConfig.model_validate_json(args.autoscale_json)
        limits = InferenceLimits(serverMaxRequests=args.server_max_requests,
                                 serverMaxPendingRequests=args.server_max_pending_requests)
    except ValidationError as e:
        where = "--autoscale-json" if e.title == AutoscaleConfig.__name__ else "limits"
        _refuse(describe(e, where))
    try:
        asyncio.run(serve(args, autoscale, limits))
    except AuthConfigError as e:
        raise SystemExit(f"scheduler: {e}") from None


if __name__ == "__main__":
    main()
