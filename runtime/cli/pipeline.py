"""`core2 pipeline load | unload | status | list | infer | inspect`."""

import json
import os

import click

from runtime.cli.context import CliError, global_options, options, say
from runtime.cli.infer import infer_command
from runtime.cli.resources import kind_group
from runtime.kafka import KafkaConfig, KafkaSettings
from runtime.specs.pipeline import PipelineSpec

pipeline = kind_group("Pipeline", "load", "unload", """Pipelines: Kafka dataflow graphs of
models; load them, infer through them, read what each step left on its topics.

\b
Example:
  core2 pipeline load -f samples/pipelines/chain.yaml
  core2 pipeline infer chain '{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.0]}]}'
  core2 pipeline inspect chain.mul10.outputs
""")
pipeline.add_command(infer_command("pipelines", ".pipeline"))

# the dataflow services' Kafka flags (env KAFKA_*), as `inspect` reads the same topics
KAFKA_FLAGS = ("kafka_bootstrap", "kafka_prefix", "kafka_namespace", "kafka_security_protocol",
               "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password",
               "kafka_ssl_ca_location")


def kafka_options(f):
    for name in reversed(KAFKA_FLAGS):
        field = KafkaSettings.model_fields[name]
        default = "the local platform's broker" if name == "kafka_bootstrap" else field.default
        f = click.option("--" + name.replace("_", "-"), name, default=None,
                         help=f"{field.description or name} (default: ${name.upper()}, else "
                              f"{default or 'unset'})")(f)
    return f


def kafka_config(given: dict[str, str | None]) -> KafkaConfig:
    """The flags given, then KAFKA_* variables, then the local platform's broker."""
    values = {k: v for k, v in given.items() if v is not None}
    if "kafka_bootstrap" not in values and not os.environ.get("KAFKA_BOOTSTRAP"):
        bootstrap = options().state().get("kafkaBootstrap")
        if not bootstrap:
            raise CliError("no Kafka to read: pass --kafka-bootstrap or start `core2 up`")
        values["kafka_bootstrap"] = bootstrap
    # the flags' strings: pydantic converts them as it does the environment's
    return KafkaSettings(**values).kafka_config()  # type: ignore[arg-type]


@pipeline.command()
@click.argument("target", metavar="NAME[.STEP[.inputs|outputs[.TENSOR]]]")
@click.option("--request-id", help="only records with this key (the x-request-id)")
@click.option("--offset", "--last", "last", type=click.IntRange(min=1), default=1,
              metavar="N", help="the last N records per topic (default 1: the latest only)")
@click.option("--format", "fmt", type=click.Choice(("raw", "json")), default="raw",
              help="raw: topic, key and value per line; json: Seldon's JSON document")
@click.option("-v", "--verbose", is_flag=True, help="show the records' headers")
@kafka_options
@global_options
def inspect(target: str, request_id: str | None, last: int, fmt: str, verbose: bool,
            **kafka: str | None) -> None:
    """The latest records a pipeline left on its topics: each step's inputs and outputs, or
    one step's, or one tensor's (as `seldon pipeline inspect`).

    \b
    Example: core2 pipeline inspect join.sum2.inputs.B --request-id ID --format json
    """
    from runtime.cli.inspect import InspectError, read_records, render, render_json, topics_for

    name = target.split(".")[0]
    with options().client() as client:
        items = client.status("Pipeline", name)
    if not items or not items[0].spec_json:
        raise CliError(f"pipeline {name!r} not found")
    spec = PipelineSpec.parse(json.loads(items[0].spec_json))
    cfg = kafka_config(kafka)
    try:
        topics, tensor = topics_for(cfg, name, spec, target)
    except InspectError as e:
        raise CliError(str(e), 2) from None
    records = read_records(cfg, topics, name, request_id, last=last)
    if not records:
        say("no records" + (f" for request id {request_id}" if request_id else ""))
    click.echo((render_json if fmt == "json" else render)(records, tensor, verbose))


COMMANDS: list[click.Command] = [pipeline]
