"""Run the agent: wait for the model server, start the proxy and /metrics, follow the
scheduler until stopped. `drain` (runtime.agent.drain) moves the replica's models away."""

import asyncio
import logging
import signal
import sys

import grpc
from aiohttp import web

from runtime import logs
from runtime.agent.agent import Agent
from runtime.agent.config import AgentConfig, parse_args
from runtime.agent.load import report_load
from runtime.agent.proxy import GrpcProxy, RestProxy

log = logging.getLogger("core2.agent")


def status_app(agent: Agent) -> web.Application:
    port = agent.config.server_metrics_port
    server_metrics = f"http://127.0.0.1:{port}/metrics" if port else None

    async def metrics(_request: web.Request) -> web.Response:
        # Read at scrape time, never on the inference path; a failed read keeps last values.
        if server_metrics:
            await agent.metrics.refresh(agent.server.session, server_metrics)
        body, content_type = agent.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def ready(_request: web.Request) -> web.Response:
        # Ready = model server up and placements read; the scheduler may come and go.
        return web.json_response({"model_server": agent.ready,
                                  "scheduler": agent.subscribed.is_set()},
                                 status=200 if agent.ready else 503)

    async def live(_request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ready", ready)
    app.router.add_get("/live", live)
    return app


async def _serve_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run(config: AgentConfig) -> None:
    agent = Agent(config)
    config.repository.mkdir(parents=True, exist_ok=True)
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    runners = [await _serve_http(status_app(agent), config.host, config.metrics_port)]
    log.info("waiting for the model server on port %d", config.server_http_port)
    await agent.wait_for_server()
    # The proxies listen where Envoy reaches this replica (--host).
    runners.append(await _serve_http(RestProxy(agent, config.server_http_port).app(),
                                     config.host, config.http_port))
    grpc_server = grpc.aio.server(options=[("grpc.max_send_message_length", -1),
                                           ("grpc.max_receive_message_length", -1),
                                           ("grpc.so_reuseport", 0)])  # a taken port fails
    grpc_server.add_generic_rpc_handlers((GrpcProxy(agent, config.server_grpc_port),))
    grpc_server.add_insecure_port(f"{config.host}:{config.grpc_port}")
    await grpc_server.start()
    await agent.sync_with_server()
    agent.ready = True
    log.info("agent ready", extra={
        "server": config.server_name, "replica": config.replica_idx,
        "proxy_http": config.http_port, "proxy_grpc": config.grpc_port,
        "metrics": config.metrics_port})
    watchers = [asyncio.create_task(agent.watch_server())]
    if config.server_metrics_port and config.load_report_seconds > 0:
        url = f"http://127.0.0.1:{config.server_metrics_port}/metrics"
        watchers.append(asyncio.create_task(report_load(agent, config.load_report_seconds,
                                                        url)))
    try:
        await agent.follow_scheduler()
    finally:
        for task in watchers:
            task.cancel()
        await grpc_server.stop(1)
        for runner in runners:
            await runner.cleanup()
        await agent.server.close()


async def _main(config: AgentConfig) -> None:
    task = asyncio.current_task()
    assert task is not None  # run by asyncio.run
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)  # models stay loaded in the server
    try:
        await run(config)
    except asyncio.CancelledError:
        log.info("agent stopped")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["drain"]:  # the server pod's preStop hook
        from runtime.agent import drain
        raise SystemExit(drain.main(argv[1:]))
    config = parse_args(argv)
    logs.setup("agent", config.log_level)
    asyncio.run(_main(config))
