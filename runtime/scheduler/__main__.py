"""python -m runtime.scheduler: the control plane (Scheduler API, Agent API, xDS, /metrics)."""

import argparse
import asyncio
import logging
import signal
import socket
import time
from pathlib import Path

import grpc
from aiohttp import web
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from prometheus_client import start_http_server
from pydantic import ValidationError

from runtime import kafka
from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.pb import agent_pb2_grpc, feedback_pb2_grpc, scheduler_pb2_grpc
from runtime.scheduler.api import AgentService, SchedulerService
from runtime.scheduler.autoscale import AutoscaleConfig
from runtime.scheduler.core import Scheduler
from runtime.scheduler.feedback import AccessLog, FeedbackService, FeedbackTopic, rest_app
from runtime.scheduler.routes import Endpoint
from runtime.scheduler.store import Store
from runtime.scheduler.xds import XdsServer
from runtime.scheduler_auth import AuthConfigError, SchedulerAuth
from runtime.specs.common import describe


def _endpoint(http: str | None, grpc_addr: str | None,
              resolve_for: float = 60) -> Endpoint | None:
    """The pipeline gateway as Envoy will see it. EDS endpoints must be IP addresses, so a host
    name (on a cluster, the gateway Service's `pipelinegateway.<ns>.svc`, whose ClusterIP
    lasts as long as the Service) is resolved here, retried while DNS does not know it yet."""
    if not http:
        return None
    host, _, port = http.rpartition(":")
    gport = int(grpc_addr.rpartition(":")[2]) if grpc_addr else int(port)
    deadline = time.monotonic() + resolve_for
    while True:
        try:
            ip = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
            return Endpoint(ip, int(port), gport)
        except socket.gaierror as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"--pipeline-gateway-http: cannot resolve {host!r}: {e}") from None
            time.sleep(1)


def _feedback_endpoint(args) -> Endpoint | None:
    """Where Envoy reaches the feedback service (both ports given), else None."""
    if not (args.feedback_http_port and args.feedback_grpc_port):
        return None
    host = args.feedback_host or args.host
    return _endpoint(f"{host}:{args.feedback_http_port}", f"{host}:{args.feedback_grpc_port}")


async def _serve_feedback(args, scheduler: Scheduler, servers: list) -> web.AppRunner | None:
    """The feedback service (REST and gRPC) and the feedback topic, when configured."""
    adaptive = scheduler.adaptive
    adaptive.remember, adaptive.wait_s = args.feedback_remember, args.feedback_wait_ms / 1000
    if args.feedback_kafka:
        topic = FeedbackTopic(kafka.from_args(args))
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


async def serve(args) -> None:
    auth = SchedulerAuth.from_env()
    xds = XdsServer(args.limits)
    scheduler = Scheduler(Store(Path(args.data_dir)), xds,
                          _endpoint(args.pipeline_gateway_http, args.pipeline_gateway_grpc),
                          replica_lost_after_s=args.replica_lost_after,
                          autoscale=args.autoscale, feedback=_feedback_endpoint(args))
    scheduler.autoscaler.start()
    servers = []
    plain = SchedulerAuth()  # xDS: only Envoy reaches it
    for port, secured, add in (
            (args.api_port, auth, lambda s: scheduler_pb2_grpc.add_SchedulerServicer_to_server(
                SchedulerService(scheduler), s)),
            (args.agent_port, auth, lambda s: agent_pb2_grpc.add_AgentServicer_to_server(
                AgentService(scheduler), s)),
            (args.xds_port, plain, lambda s: (
                ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(xds, s),
                # Envoy's access log of adaptive experiments comes on the same connection
                als_pb2_grpc.add_AccessLogServiceServicer_to_server(
                    AccessLog(scheduler.adaptive), s)))):
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
    logging.info("scheduler ready: api %d, agents %d, xds %d (%s)", args.api_port,
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


def main() -> None:
    p = argparse.ArgumentParser(prog="core2-scheduler", description=__doc__)
    p.add_argument("--data-dir", required=True, help="where the SQLite state lives")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--api-port", type=int, default=9004)
    p.add_argument("--agent-port", type=int, default=9005)
    p.add_argument("--xds-port", type=int, default=9002)
    p.add_argument("--metrics-port", type=int, default=0)
    p.add_argument("--pipeline-gateway-http", help="HOST:PORT of the pipeline gateway (REST)")
    p.add_argument("--pipeline-gateway-grpc", help="HOST:PORT of the pipeline gateway (gRPC)")
    p.add_argument("--replica-lost-after", type=float, default=10.0, metavar="SECONDS",
                   help="a server replica whose agent stays disconnected this long is "
                        "forgotten and its models are placed on other replicas")
    p.add_argument("--server-max-requests", type=int, metavar="N",
                   default=DEFAULT_LIMITS.serverMaxRequests,
                   help="per set of server replicas and Envoy: requests served at once")
    p.add_argument("--server-max-pending-requests", type=int, metavar="N",
                   default=DEFAULT_LIMITS.serverMaxPendingRequests,
                   help="per set of server replicas and Envoy: requests queued; more get "
                        "a fast 503")
    fb = p.add_argument_group("feedback of adaptive experiments")
    fb.add_argument("--feedback-http-port", type=int, default=0,
                    help="serve POST /v2/models|pipelines/{name}/feedback here (Envoy routes "
                         "it; 0: no feedback service)")
    fb.add_argument("--feedback-grpc-port", type=int, default=0,
                    help="serve core2.feedback.Feedback here")
    fb.add_argument("--feedback-host", help="the address Envoy reaches the feedback service at "
                                            "(default --host)")
    fb.add_argument("--feedback-remember", type=int, default=100_000, metavar="N",
                    help="request ids kept for attributing feedback (the most recent N)")
    fb.add_argument("--feedback-wait-ms", type=int, default=3000,
                    help="feedback for a request id not logged yet waits this long for "
                         "Envoy's access log before it is refused")
    fb.add_argument("--feedback-kafka", action="store_true",
                    help="also produce each feedback to <kafka-prefix>.<namespace>.feedback")
    kafka.add_arguments(p)
    p.add_argument("--autoscale-json", metavar="JSON", default="{}",
                   help="model and server autoscaling settings as JSON (fields of "
                        "runtime.scheduler.autoscale.AutoscaleConfig: models, servers, "
                        "scaleUpInFlight, scaleDownInFlight, scaleUpCooldownSeconds, "
                        "scaleDownDelaySeconds, serverCooldownSeconds); default: models on, "
                        "servers off")
    args = p.parse_args()
    try:
        args.autoscale = AutoscaleConfig.model_validate_json(args.autoscale_json)
    except ValidationError as e:
        p.error(describe(e, "--autoscale-json"))
    try:
        args.limits = InferenceLimits(serverMaxRequests=args.server_max_requests,
                                      serverMaxPendingRequests=args.server_max_pending_requests)
    except ValidationError as e:
        p.error(describe(e, "limits"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(args))
    except AuthConfigError as e:
        raise SystemExit(f"scheduler: {e}") from None


if __name__ == "__main__":
    main()
