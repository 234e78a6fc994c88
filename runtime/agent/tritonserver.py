"""Start Triton Inference Server for one server replica, the way the agent drives it: explicit
model control (the agent loads and unloads through the V2 repository API), loopback by default.

    python -m runtime.agent.tritonserver --repository DIR --http-port P --grpc-port P \
        --metrics-port P [--host 127.0.0.1]

The binary is the one `scripts/tools` unpacks from the nvidia-pytriton wheel (`.tools/
tritonserver`), or `$CORE2_TRITONSERVER_HOME`. The process becomes tritonserver (exec), so a
supervisor's signals reach Triton itself.
"""

import os
from pathlib import Path

from pydantic import Field

from runtime.agent.config import ServerSettings
from runtime.settings import load

ROOT = Path(__file__).resolve().parents[2]
# Python models find their packages here (Triton runs their interpreter isolated, so
# PYTHONPATH would be ignored; see runtime.agent.triton_layout's boot file)
PYTHONPATH_ENV = "CORE2_TRITON_PYTHONPATH"


def triton_home() -> Path:
    home = Path(os.environ.get("CORE2_TRITONSERVER_HOME", ROOT / ".tools" / "tritonserver"))
    if not (home / "bin" / "tritonserver").exists():
        raise SystemExit(f"tritonserver not found in {home}: run scripts/tools tritonserver "
                         "(or set CORE2_TRITONSERVER_HOME to a Triton installation)")
    return home


class TritonSettings(ServerSettings):
    """Triton for a core2 agent (`python -m runtime.agent.tritonserver --help`)."""

    exit_timeout: int = Field(5, ge=0, description=(
        "seconds Triton waits for requests in flight when stopped"))


def argv_and_env(args: TritonSettings) -> tuple[list[str], dict[str, str]]:
    home = triton_home()
    argv = [str(home / "bin" / "tritonserver"),
            f"--model-repository={args.repository}",
            "--model-control-mode=explicit",
            "--strict-readiness=false",  # ready with no model loaded, like MLServer
            f"--http-address={args.host}", f"--http-port={args.http_port}",
            f"--grpc-address={args.host}", f"--grpc-port={args.grpc_port}",
            f"--metrics-address={args.host}", f"--metrics-port={args.metrics_port}",
            f"--backend-directory={home / 'backends'}",
            f"--exit-timeout-secs={args.exit_timeout}",
            # warnings and errors only, stamped as the other services' lines (runtime.logs)
            "--log-info=false", "--log-format=ISO8601"]
    paths = [p for p in (os.environ.get(PYTHONPATH_ENV, ""), str(home / "python")) if p]
    return argv, {**os.environ, PYTHONPATH_ENV: os.pathsep.join(paths)}


def parse_args(argv: list[str] | None = None) -> TritonSettings:
    return load(TritonSettings, "python -m runtime.agent.tritonserver", argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.repository.mkdir(parents=True, exist_ok=True)
    command, env = argv_and_env(args)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
