"""`core2 pipeline ...`: load | unload | status | list | infer | inspect.

Wired into runtime/cli.py with `register(subparsers, scheduler_addr_fn)`."""

import json
import os
import sys

from runtime.client import SchedulerClient, SchedulerError
from runtime.kafka import DEFAULT_NAMESPACE, DEFAULT_PREFIX, KafkaConfig, add_security_arguments
from runtime.specs import SpecError
from runtime.specs.manifest import load_file
from runtime.specs.pipeline import PipelineSpec


def _fail(message: str, code: int = 1) -> SchedulerError:
    # runtime.cli's main prints SchedulerError without a traceback (exit 2 when invalid); its
    # CliError is not usable here when the CLI runs as `python -m runtime.cli` (__main__).
    return SchedulerError(message, invalid=code == 2)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register(subparsers, scheduler_addr_fn) -> None:
    def client(args) -> SchedulerClient:
        return SchedulerClient(scheduler_addr_fn(args))

    def load(args) -> None:
        try:
            resources = load_file(args.file)
        except SpecError as e:
            raise _fail(str(e), 2) from None
        wrong = [f"{r.kind} {r.name}" for r in resources if r.kind != "Pipeline"]
        if wrong:
            raise _fail(f"{args.file}: expected Pipeline, found {', '.join(wrong)}", 2)
        c = client(args)
        for r in resources:
            try:
                r.spec.validate_for(r.name)
            except SpecError as e:
                raise _fail(str(e), 2) from None
            c.apply_resource(r)
            if not args.no_wait:
                s = c.wait("Pipeline", r.name, timeout=args.timeout,
                           progress=lambda s, n=r.name: _say(
                               f"  pipeline {n}: {s.state}"
                               + (f" ({s.reason})" if s.reason else "")))
                _say(f"pipeline {r.name}: ready (version {s.version})")
            else:
                _say(f"pipeline {r.name}: applied")

    def unload(args) -> None:
        c = client(args)
        c.delete("Pipeline", args.name)
        if not args.no_wait:
            c.wait("Pipeline", args.name, until="gone", timeout=args.timeout)
        _say(f"pipeline {args.name}: unloaded")

    def status(args) -> None:
        from runtime.cli import print_status

        print_status(args, client(args), "Pipeline")

    def list_(args) -> None:
        for s in client(args).status("Pipeline"):
            reason = f"  {s.reason}" if s.reason else ""
            print(f"{s.name:24} v{s.version:<4} {s.state:20}{reason}")

    def infer(args) -> None:
        from runtime.cli import inference_url
        from runtime.infer import infer as run_infer

        headers = dict(h.split(":", 1) for h in args.header)
        code, body = run_infer(inference_url(args), f"{args.name}.pipeline", args.payload,
                               grpc_mode=args.grpc, headers=headers, path_kind="pipelines")
        print(body)
        if code >= 400:
            raise _fail(f"pipeline inference failed with status {code}")

    def inspect(args) -> None:
        from runtime.dataflow.inspect import (
            InspectError,
            read_records,
            render,
            render_json,
            topics_for,
        )

        name = args.target.split(".")[0]
        items = client(args).status("Pipeline", name)
        if not items or not items[0].spec_json:
            raise _fail(f"pipeline {name!r} not found")
        spec = PipelineSpec.parse(json.loads(items[0].spec_json))
        cfg = _kafka_config(args)
        try:
            topics, tensor = topics_for(cfg, name, spec, args.target)
        except InspectError as e:
            raise _fail(str(e), 2) from None
        records = read_records(cfg, topics, name, args.request_id, last=args.last)
        if not records:
            _say("no records" + (f" for request id {args.request_id}" if args.request_id
                                 else ""))
        show = render_json if args.format == "json" else render
        print(show(records, tensor, args.verbose))

    p = subparsers.add_parser("pipeline", help="Pipelines (Kafka dataflow)")
    s = p.add_subparsers(dest="verb", required=True)
    a = s.add_parser("load", help="load pipelines from a Seldon YAML file")
    a.add_argument("-f", "--file", required=True)
    a.add_argument("--no-wait", action="store_true")
    a.set_defaults(func=load)
    a = s.add_parser("unload")
    a.add_argument("name")
    a.add_argument("--no-wait", action="store_true")
    a.set_defaults(func=unload)
    a = s.add_parser("status", help="Seldon's pipeline status JSON")
    from runtime.cli import add_status_args

    add_status_args(a, "Pipeline")
    a.set_defaults(func=status)
    s.add_parser("list").set_defaults(func=list_)
    a = s.add_parser("infer", help="inference through Envoy (or --inference URL)")
    a.add_argument("name")
    a.add_argument("payload", help="OIP request JSON, or @FILE")
    a.add_argument("--grpc", action="store_true")
    a.add_argument("-H", "--header", action="append", default=[], help="NAME:VALUE")
    a.set_defaults(func=infer)
    a = s.add_parser("inspect", help="latest records on the pipeline's topics")
    a.add_argument("target", help="NAME[.step[.inputs|outputs[.tensor]]]")
    a.add_argument("--request-id", help="only records with this key")
    a.add_argument("--offset", "--last", dest="last", type=int, default=1, metavar="N",
                   help="the last N records per topic (default 1: the latest only)")
    a.add_argument("--format", choices=("raw", "json"), default="raw",
                   help="raw: topic, key and value per line; json: Seldon's JSON document")
    a.add_argument("-v", "--verbose", action="store_true", help="show the records' headers")
    a.add_argument("--kafka-bootstrap", help="default: the local platform's broker")
    a.add_argument("--kafka-prefix")
    a.add_argument("--kafka-namespace")
    add_security_arguments(a)  # as the dataflow services take them (env KAFKA_*)
    a.set_defaults(func=inspect)


def _kafka_config(args) -> KafkaConfig:
    env = os.environ.get
    state = {}
    if not args.kafka_bootstrap and not env("KAFKA_BOOTSTRAP"):
        from runtime.cli import _state

        state = _state(args)
    bootstrap = args.kafka_bootstrap or env("KAFKA_BOOTSTRAP") or state.get("kafkaBootstrap")
    if not bootstrap:
        raise _fail("no Kafka to read: pass --kafka-bootstrap or start `core2 up`")
    return KafkaConfig(
        bootstrap=bootstrap,
        prefix=args.kafka_prefix or env("KAFKA_PREFIX") or DEFAULT_PREFIX,
        namespace=args.kafka_namespace or env("KAFKA_NAMESPACE") or DEFAULT_NAMESPACE,
        security_protocol=args.kafka_security_protocol,
        sasl_mechanism=args.kafka_sasl_mechanism, sasl_username=args.kafka_sasl_username,
        sasl_password=args.kafka_sasl_password, ssl_ca_location=args.kafka_ssl_ca_location)
