"""core2: run the platform locally and drive it like Seldon's CLI.

  core2 up [--detach] | down | status
  core2 apply -f FILE | delete -f FILE
  core2 model load -f FILE | unload NAME | status [NAME] | list | infer NAME 'JSON'
  core2 server status [NAME]
  core2 experiment start -f FILE | stop NAME | status [NAME] | list
  core2 pipeline ... | core2 promote ...
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from components.promote import register as register_promote
from runtime.client import SchedulerClient, SchedulerError
from runtime.dataflow import cli as pipeline_cli
from runtime.specs import SpecError
from runtime.specs.manifest import load_file

DEFAULT_RUN_DIR = ".core2"


class CliError(Exception):
    """A user-facing failure: printed without a traceback, exit status 1 (2 for bad input)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _run_dir(args) -> Path:
    return Path(args.run_dir or os.environ.get("CORE2_HOME", DEFAULT_RUN_DIR))


def _state(args) -> dict:
    from runtime.local.platform import read_state

    return read_state(_run_dir(args)) or {}


def scheduler_address(args) -> str:
    if args.scheduler:
        return args.scheduler
    if os.environ.get("CORE2_SCHEDULER"):
        return os.environ["CORE2_SCHEDULER"]
    port = _state(args).get("ports", {}).get("schedulerApi", 9004)
    return f"127.0.0.1:{port}"


def inference_url(args) -> str:
    if args.inference:
        return args.inference.rstrip("/")
    if os.environ.get("CORE2_INFERENCE"):
        return os.environ["CORE2_INFERENCE"].rstrip("/")
    state = _state(args)
    if state.get("inference"):
        return state["inference"]
    return f"http://127.0.0.1:{state.get('ports', {}).get('envoy', 9000)}"


def inference_ca(args) -> str | None:
    """The CA to verify an https Envoy with: CORE2_INFERENCE_CA, else the local platform's."""
    return os.environ.get("CORE2_INFERENCE_CA") or _state(args).get("inferenceCa")


def _client(args) -> SchedulerClient:
    return SchedulerClient(scheduler_address(args))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(kind: str, name: str):
    started = time.monotonic()

    def show(s):
        reason = f" ({s.reason})" if s.reason else ""
        _say(f"  [{time.monotonic() - started:5.1f}s] {kind} {name}: {s.state}{reason}")
    return show


def _print(obj) -> None:
    print(json.dumps(obj, indent=2))


def _load_manifests(path: str, kinds: set[str] | None = None):
    try:
        resources = load_file(path)
    except SpecError as e:
        raise CliError(str(e), 2) from None
    if kinds:
        wrong = [f"{r.kind} {r.name}" for r in resources if r.kind not in kinds]
        if wrong:
            raise CliError(f"{path}: expected {' or '.join(sorted(kinds))}, found "
                           f"{', '.join(wrong)}", 2)
    return resources


# ---- platform ------------------------------------------------------------------------------
def cmd_up(args) -> None:
    from runtime.local.config import LocalConfig
    from runtime.local.platform import pid_alive, read_state
    from runtime.local.supervisor import supervise

    run_dir = _run_dir(args).resolve()
    state = read_state(run_dir)
    if state and (pid_alive(state.get("supervisor")) or
                  any(pid_alive(p) for p in state.get("pids", {}).values())):
        raise CliError(f"core2 is already running from {run_dir} (`core2 down` stops it)")
    try:
        cfg = LocalConfig.load(args.config)
    except SpecError as e:
        raise CliError(str(e), 2) from None
    if args.kafka_bootstrap:
        cfg.kafkaBootstrap = args.kafka_bootstrap
    if args.kafka:
        cfg.kafkaBroker = args.kafka
    if args.no_pipelines:
        cfg.pipelines = False
    if cfg.pipelines and not cfg.kafkaBootstrap and cfg.kafkaBroker == "apache":
        from runtime.kafka_apache import java_cp

        try:
            java_cp()
        except RuntimeError as e:
            raise CliError(str(e)) from None
    if args.kube:
        from runtime.local.config import LocalKube

        cfg.kube = LocalKube(kubeconfig=Path(args.kube).resolve(), storageBase=Path.cwd())
    started = time.monotonic()
    _say(f"starting core2 in {run_dir} (logs in {run_dir / 'logs'})")

    def progress(message: str) -> None:
        _say(f"  [{time.monotonic() - started:5.1f}s] {message}")

    def show(endpoints: dict) -> None:
        _say(f"core2 is up in {time.monotonic() - started:.1f}s")
        for what, where in endpoints.items():
            print(f"  {what:32} {where}", flush=True)

    if args.detach:
        from runtime.local.detach import start_detached

        try:
            state = start_detached(run_dir, cfg, progress)
        except RuntimeError as e:
            raise CliError(str(e)) from None
        show(state["endpoints"])
        return

    def on_up(platform) -> None:
        show(platform.endpoints())
        _say("supervising; press Ctrl-C to stop")

    try:
        supervise(run_dir, cfg, progress, on_up=on_up, log=_say)
    except (RuntimeError, TimeoutError) as e:
        raise CliError(str(e)) from None


def cmd_down(args) -> None:
    from runtime.local.platform import stop_detached

    stopped = stop_detached(_run_dir(args))
    _say(f"stopped {len(stopped)} services" if stopped else "core2 is not running")


def cmd_status(args) -> None:
    from runtime.local.status import describe, render

    state = _state(args)
    if not state:
        raise CliError(f"core2 is not running from {_run_dir(args)}")
    report = describe(state)
    if args.json:
        _print(report)
    else:
        print(render(report))
    bad = [n for n, s in report["services"].items() if s["state"] != "Ready"]
    if not report["supervisor"]["running"]:
        raise CliError("the supervisor is not running: services are not restarted; "
                       "`core2 down` then `core2 up`")
    if bad:
        raise CliError(f"not ready: {', '.join(bad)}; see the logs in " +
                       str(_run_dir(args) / "logs"))


# ---- resources -----------------------------------------------------------------------------
def _apply_all(args, resources, wait: bool) -> None:
    client = _client(args)
    for r in resources:
        if r.kind == "Server":
            _start_local_server(args, r)
        s = client.apply_resource(r)
        _say(f"{r.kind.lower()} {r.name}: applied (version {s.version})")
    if wait:
        for r in resources:
            if r.kind != "Server":
                client.wait(r.kind, r.name, timeout=args.timeout,
                            progress=_progress(r.kind.lower(), r.name))


def _start_local_server(args, r) -> None:
    """In local mode a Server manifest also starts that server's replicas (the supervisor
    starts and then watches them)."""
    from runtime.local.config import LocalServer
    from runtime.local.detach import wait_for_services
    from runtime.local.platform import pid_alive
    from runtime.local.supervisor import request_server

    state = _state(args)
    if not state or args.scheduler:
        return
    known = {k.rsplit("-", 1)[0] for k in state.get("replicas", {})}
    if r.name in known:
        return
    if not pid_alive(state.get("supervisor")):
        raise CliError("the local supervisor is not running: `core2 up` first")
    server = LocalServer(name=r.name, **r.spec.model_dump(exclude_none=True))
    _say(f"starting {server.replicas} replica(s) of server {r.name}")
    request = request_server(_run_dir(args), server)
    names = [f"{r.name}-{i}-{part}" for i in range(server.replicas)
             for part in ("mlserver", "agent")]
    try:
        wait_for_services(_run_dir(args), names, request, timeout=args.timeout)
    except RuntimeError as e:
        raise CliError(str(e)) from None


def _admit_manifest_folders(args, paths: list[str]) -> None:
    """Local mode: the agents may fetch from the folders of manifests the user applies."""
    from runtime.local.roots import remember_manifest_folders

    if _state(args) and not args.scheduler:
        remember_manifest_folders(_run_dir(args), paths)


def cmd_apply(args) -> None:
    resources = [r for path in args.file for r in _load_manifests(path)]
    _admit_manifest_folders(args, args.file)
    _apply_all(args, resources, wait=not args.no_wait)


def cmd_delete(args) -> None:
    client = _client(args)
    for r in reversed([r for path in args.file for r in _load_manifests(path)]):
        client.delete(r.kind, r.name)
        _say(f"{r.kind.lower()} {r.name}: deleted")


def print_status(args, client: SchedulerClient, kind: str) -> None:
    """Seldon's status document(s) of a kind (runtime.seldon_status), after `-w` if given."""
    from runtime.seldon_status import render

    name = getattr(args, "name", "") or ""
    if getattr(args, "wait", None):
        if not name:  # SchedulerError: this runs from runtime.dataflow.cli too (see there)
            raise SchedulerError("-w/--wait: needs a NAME", invalid=True)
        client.wait(kind, name, until=args.wait, timeout=args.timeout)
    items = client.status(kind, name)
    _print(render(items[0]) if name else [render(s) for s in items])


def add_status_args(parser, kind: str) -> None:
    parser.add_argument("name", nargs="?")
    parser.add_argument("-w", "--wait", nargs="?", const="ready", metavar="STATE",
                        help=f"first wait until the {kind.lower()} is in STATE (e.g. "
                             f"{READY_STATE[kind]}; alone: until ready), up to --timeout")


READY_STATE = {"Model": "ModelAvailable", "Pipeline": "PipelineReady",
               "Experiment": "ExperimentReady", "Server": "Ready"}


def _status_cmd(kind: str):
    def run(args) -> None:
        print_status(args, _client(args), kind)
    return run


def _list_cmd(kind: str):
    def run(args) -> None:
        for s in _client(args).status(kind):
            reason = f"  {s.reason}" if s.reason else ""
            print(f"{s.name:24} v{s.version:<4} {s.state:20}{reason}")
    return run


def _unload_cmd(kind: str):
    def run(args) -> None:
        client = _client(args)
        client.delete(kind, args.name)
        if not args.no_wait:
            client.wait(kind, args.name, until="gone", timeout=args.timeout,
                        progress=_progress(kind.lower(), args.name))
        _say(f"{kind.lower()} {args.name}: unloaded")
    return run


def _load_cmd(kind: str):
    def run(args) -> None:
        resources = _load_manifests(args.file, {kind})
        _admit_manifest_folders(args, [args.file])
        _apply_all(args, resources, wait=not args.no_wait)
    return run


def cmd_model_infer(args) -> None:
    from runtime.infer import infer

    status, body = infer(inference_url(args), args.name, args.payload, grpc_mode=args.grpc,
                         headers=dict(h.split(":", 1) for h in args.header),
                         ca_file=inference_ca(args))
    print(body)
    if status >= 400:
        raise CliError(f"inference failed with status {status}")


# ---- parser --------------------------------------------------------------------------------
def _resource_group(sub, kind: str, verb_load: str, verb_unload: str):
    p = sub.add_parser(kind.lower(), help=f"{kind}s")
    s = p.add_subparsers(dest="verb", required=True)
    load = s.add_parser(verb_load, help=f"load {kind.lower()}s from a Seldon YAML file")
    load.add_argument("-f", "--file", required=True)
    load.add_argument("--no-wait", action="store_true")
    load.set_defaults(func=_load_cmd(kind))
    unload = s.add_parser(verb_unload)
    unload.add_argument("name")
    unload.add_argument("--no-wait", action="store_true")
    unload.set_defaults(func=_unload_cmd(kind))
    st = s.add_parser("status", help=f"Seldon's {kind.lower()} status JSON")
    add_status_args(st, kind)
    st.set_defaults(func=_status_cmd(kind))
    s.add_parser("list").set_defaults(func=_list_cmd(kind))
    return s


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="core2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", help=f"local platform directory (default {DEFAULT_RUN_DIR}, "
                                     "or $CORE2_HOME)")
    p.add_argument("--scheduler", help="scheduler API HOST:PORT (default from the run dir)")
    p.add_argument("--inference", help="inference URL, e.g. http://127.0.0.1:9000")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for readiness")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the platform locally")
    up.add_argument("-c", "--config", help="local config YAML (ports, servers, kafka)")
    up.add_argument("--detach", "-d", action="store_true", help="return once healthy")
    up.add_argument("--kafka-bootstrap", help="use this Kafka instead of the embedded broker")
    up.add_argument("--kafka", choices=("embedded", "apache"),
                    help="the broker to start: embedded (Tansu, memory only; the default) or "
                         "apache (Apache Kafka from the jars scripts/tools fetched)")
    up.add_argument("--no-pipelines", action="store_true", help="no broker or dataflow")
    up.add_argument("--kube", metavar="KUBECONFIG",
                    help="also serve this cluster's Seldon CRs (runs the controller)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop a detached platform").set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="local services (state, restarts, last exit) and endpoints")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    for verb, func, text in (("apply", cmd_apply, "create or update"),
                             ("delete", cmd_delete, "delete")):
        a = sub.add_parser(verb, help=f"{text} every resource in Seldon YAML files")
        a.add_argument("-f", "--file", required=True, action="append", help="repeatable")
        if verb == "apply":
            a.add_argument("--no-wait", action="store_true")
        a.set_defaults(func=func)

    models = _resource_group(sub, "Model", "load", "unload")
    inf = models.add_parser("infer", help="inference through Envoy")
    inf.add_argument("name")
    inf.add_argument("payload", help="OIP request JSON, or @FILE")
    inf.add_argument("--grpc", action="store_true", help="use gRPC instead of REST")
    inf.add_argument("-H", "--header", action="append", default=[], help="NAME:VALUE")
    inf.set_defaults(func=cmd_model_infer)
    _resource_group(sub, "Experiment", "start", "stop")

    server = sub.add_parser("server", help="Servers").add_subparsers(dest="verb", required=True)
    ss = server.add_parser("status", help="Seldon's ServerStatusResponse JSON")
    add_status_args(ss, "Server")
    ss.set_defaults(func=_status_cmd("Server"))
    server.add_parser("list").set_defaults(func=_list_cmd("Server"))

    pipeline_cli.register(sub, scheduler_address)
    register_promote(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CliError as e:
        _say(f"error: {e}")
        return e.code
    except SchedulerError as e:
        _say(f"error: {e}")
        return 2 if e.invalid else 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
