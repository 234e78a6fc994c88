"""Start MLServer (the real one, through its Python API) for one server replica, with core2's
name hook installed in-process.

    python -m runtime.agent.modelserver --repository DIR --http-port P --grpc-port P \
        --metrics-port P [--parallel-workers 0] [--repository-scan] [--load-on-loop]

Models are not loaded at start-up: the agent loads them through the V2 repository API.
The load path is flat (see repository.py, loadthread.py): a load finds its model by name and
runs off the serving loop. `--repository-scan` / `--load-on-loop` bring back stock MLServer's
behaviour for either half, to measure the difference (bench/loads.py).
`parallel_workers` defaults to 0 (inference in the server process): for small models the
hand-off to a worker process costs more than the model itself (see the agent's README notes).
"""

import argparse
import asyncio
import sys
from pathlib import Path

from runtime import tracing
from runtime.agent import grpc_guard, loadthread, namehook
from runtime.agent.repository import IMPLEMENTATION as NAMED_REPOSITORY


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.agent.modelserver",
                                description="MLServer with core2's name hook")
    p.add_argument("--repository", required=True, help="model repository folder")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--parallel-workers", type=int, default=0)
    p.add_argument("--server-name", default="mlserver")
    p.add_argument("--repository-scan", action="store_true",
                   help="stock MLServer: every load scans every model-settings.json")
    p.add_argument("--load-on-loop", action="store_true",
                   help="stock MLServer: model loads block the serving event loop")
    p.add_argument("--load-switch-interval", type=float, default=loadthread.SWITCH_INTERVAL,
                   help="Python's switch interval (s) while a model loads off the loop")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    namehook.install()
    grpc_guard.install()
    # Imported after the hook so MLServer is built from the swapped symbols.
    from mlserver import MLServer
    from mlserver.settings import Settings

    repository = Path(args.repository).resolve()
    repository.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        model_repository_root=str(repository),
        load_models_at_startup=False,
        parallel_workers=args.parallel_workers,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        metrics_dir=str(repository / ".metrics"),
        server_name=args.server_name,
        model_repository_implementation=None if args.repository_scan else NAMED_REPOSITORY,
        # MLServer's own OpenTelemetry spans (REST and gRPC), continuing Envoy's trace
        tracing_server=tracing.endpoint(),
    )
    # MLServer imports custom runtimes relative to the working folder, as `mlserver start` does.
    sys.path.insert(0, str(repository))
    server = MLServer(settings)
    if not args.load_on_loop and not args.parallel_workers:
        # With parallel workers the pool's proxies load in the workers already.
        loadthread.switch_interval = args.load_switch_interval
        server._model_registry._on_model_load.append(loadthread.load_off_loop)
    await server.start([])


def main(argv: list[str] | None = None) -> None:
    from mlserver.utils import install_uvloop_event_loop

    # As `mlserver start` does: uvloop, installed before the loop exists, is also what
    # parallel workers (forked) expect to inherit.
    install_uvloop_event_loop()
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
