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

import asyncio
import sys

from pydantic import Field

from runtime import logs, tracing
from runtime.agent import grpc_guard, loadthread, namehook, serverlogs
from runtime.agent.config import ServerSettings
from runtime.agent.repository import IMPLEMENTATION as NAMED_REPOSITORY
from runtime.settings import load


class ModelServerSettings(ServerSettings):
    """MLServer with core2's name hook (`python -m runtime.agent.modelserver --help`)."""

    parallel_workers: int = Field(0, ge=0, description="inference worker processes")
    server_name: str = Field("mlserver", description="MLServer's server name")
    repository_scan: bool = Field(False, description=(
        "stock MLServer: every load scans every model-settings.json"))
    load_on_loop: bool = Field(False, description=(
        "stock MLServer: model loads block the serving event loop"))
    load_switch_interval: float = Field(loadthread.SWITCH_INTERVAL, gt=0, description=(
        "Python's switch interval (s) while a model loads off the loop"))


def parse_args(argv: list[str] | None = None) -> ModelServerSettings:
    return load(ModelServerSettings, "python -m runtime.agent.modelserver", argv)


async def serve(args: ModelServerSettings) -> None:
    namehook.install()
    grpc_guard.install()
    # Imported after the hook so MLServer is built from the swapped symbols.
    from mlserver import MLServer
    from mlserver.settings import Settings

    repository = args.repository
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
        # core2's log format; the agent's polling requests at DEBUG (serverlogs)
        logging_settings=serverlogs.logging_config("mlserver", args.log_level),
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
    args = parse_args(argv)
    logs.setup("mlserver", args.log_level)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
