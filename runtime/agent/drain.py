"""`python -m runtime.agent drain`: before a server pod goes away (its preStop hook), ask the
scheduler to move the replica's models to other replicas. Prints what moved and what could
not (with the reason); exits 0 when everything moved, 1 otherwise."""

import sys
import time
from pathlib import Path

import grpc
from pydantic import Field

from runtime.pb import agent_pb2, agent_pb2_grpc
from runtime.scheduler_auth import AuthConfigError, SchedulerAuth
from runtime.settings import ServiceSettings, load

DEFAULT_TIMEOUT_S = 110.0


class DrainSettings(ServiceSettings):
    """Move this server replica's models elsewhere."""

    scheduler: str = Field(description="scheduler agent API, host:port")
    server_name: str = Field(description="the Server this replica belongs to")
    replica_idx: int = Field(ge=0, description="this replica's index in its Server")
    timeout: float = Field(DEFAULT_TIMEOUT_S, gt=0, description=(
        "give up waiting after this many seconds; unfinished moves are reported"))
    done_file: Path | None = Field(None, description=(
        "touched when the drain ends, either way (the model server's preStop hook waits "
        "for it, so it serves until then)"))


def parse_args(argv: list[str] | None = None) -> DrainSettings:
    return load(DrainSettings, "python -m runtime.agent drain", argv)


def _where(m: agent_pb2.DrainedModel) -> str:
    return ", ".join(f"{m.server}/{i}" for i in m.replicas) or "nowhere"


def report(resp: agent_pb2.DrainResponse, key: str, took: float) -> str:
    lines = [f"moved {m.name} v{m.version} to {_where(m)}" + (f" ({m.reason})" if m.reason
                                                                else "")
             for m in resp.moved]
    lines += [f"not moved {m.name} v{m.version} (served by {_where(m)}): {m.reason}"
              for m in resp.not_moved]
    lines.append(f"drained {key} in {took:.1f}s: {len(resp.moved)} moved, "
                 f"{len(resp.not_moved)} not moved")
    return "\n".join(lines)


def drain(args: DrainSettings) -> int:
    key = f"{args.server_name}/{args.replica_idx}"
    try:
        channel = SchedulerAuth.from_env().channel(args.scheduler)
    except AuthConfigError as e:
        print(f"drain {key}: {e}", file=sys.stderr)
        return 1
    start = time.monotonic()
    try:
        with channel:
            # wait_for_ready: a scheduler restarting meanwhile is waited for, within the timeout
            resp = agent_pb2_grpc.AgentStub(channel).Drain(
                agent_pb2.DrainRequest(server_name=args.server_name,
                                       replica_idx=args.replica_idx),
                timeout=args.timeout, wait_for_ready=True)
    except grpc.RpcError as e:
        print(f"drain {key}: scheduler {args.scheduler}: {e.code().name}: {e.details()}",
              file=sys.stderr)
        return 1
    print(report(resp, key, time.monotonic() - start), flush=True)
    return 0 if not resp.not_moved else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return drain(args)
    finally:
        if args.done_file is not None:
            args.done_file.touch()
