"""`python -m runtime.agent drain`: before a server pod goes away (its preStop hook), ask the
scheduler to move the replica's models to other replicas. Prints what moved and what could
not (with the reason); exits 0 when everything moved, 1 otherwise."""

import argparse
import sys
import time
from pathlib import Path

import grpc

from runtime.pb import agent_pb2, agent_pb2_grpc
from runtime.scheduler_auth import AuthConfigError, SchedulerAuth

DEFAULT_TIMEOUT_S = 110.0


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.agent drain",
                                description="move this server replica's models elsewhere")
    p.add_argument("--scheduler", required=True, help="scheduler agent API, host:port")
    p.add_argument("--server-name", required=True)
    p.add_argument("--replica-idx", type=int, required=True)
    p.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="give up waiting after S seconds; unfinished moves are reported "
                        f"(default {DEFAULT_TIMEOUT_S:.0f})")
    p.add_argument("--done-file", type=Path, default=None,
                   help="touched when the drain ends, either way (the model server's "
                        "preStop hook waits for it, so it serves until then)")
    return p.parse_args(argv)


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


def drain(args: argparse.Namespace) -> int:
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
