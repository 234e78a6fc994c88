"""Render a stack's Pulumi program under mocks and capture every resource it registers."""

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings

from infra import config as stack_config
from infra.program import build

STACKS = Path(__file__).resolve().parents[2] / "stacks"
STACK_NAMES = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in STACKS.glob("Pulumi.*.yaml"))


@dataclass
class Captured:
    urn: str
    type: str
    name: str
    parent: str
    inputs: dict
    ignore_changes: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> dict:
        """A Kubernetes object as the API server would receive it."""
        return self.inputs


@dataclass
class Render:
    stack: str
    config: stack_config.StackConfig
    resources: list[Captured] = field(default_factory=list)
    urns: list[str] = field(default_factory=list)  # every registration, duplicates kept
    outputs: dict = field(default_factory=dict)

    def of_type(self, prefix: str) -> list[Captured]:
        return [r for r in self.resources if r.type.startswith(prefix)]

    def kubernetes_objects(self) -> list[Captured]:
        """Objects with apiVersion/kind that go to the API server (not providers/charts)."""
        return [r for r in self.resources if r.type.startswith("kubernetes:")
                and "apiVersion" in r.inputs and "kind" in r.inputs]


    def builtin_objects(self) -> list[Captured]:
        """The objects of Kubernetes' own kinds (custom resources are checked by their CRDs)."""
        custom = ("kafka.strimzi.io/", "mlops.seldon.io/")
        return [o for o in self.kubernetes_objects()
                if not o.manifest["apiVersion"].startswith(custom)]


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker for a secret value


def _ints(value):
    """Plain values: secrets unwrapped, whole floats (protobuf numbers) back to ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict) and SECRET_SIG in value:
        return _ints(value["value"])
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


class _Mocks(pulumi.runtime.Mocks):
    """Outputs are the inputs, plus what the API server would fill in that the program uses."""

    def __init__(self):
        super().__init__()
        self.ips = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "kubernetes:core/v1:Service" and "clusterIP" not in state["spec"]:
            self.ips += 1
            state = {**state, "spec": {**state["spec"], "clusterIP": f"10.96.0.{self.ips}"}}
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class _Monitor(pulumi_mocks.MockMonitor):
    def __init__(self, render: Render):
        super().__init__(_Mocks())
        self.render = render

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            urn = self.make_urn(request.parent, request.type, request.name)
            self.render.urns.append(urn)
            inputs = _ints(self.resources[urn].state)
            self.render.resources.append(Captured(urn, request.type, request.name,
                                                  request.parent, inputs,
                                                  list(request.ignoreChanges)))
        return resp


def run_program(stack: str, program, cfg=None, config: dict | None = None) -> Render:
    """Run `program()` (returning a dict of outputs) under mocks, capturing resources."""
    result = Render(stack, cfg)
    # Pulumi's mocks use the current event loop; an earlier asyncio.run() in this process
    # leaves none set.
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_all_config(config or {})
    settings.ROOT.set(None)  # a fresh root Stack per render
    monitor = _Monitor(result)
    pulumi.runtime.set_mocks(monitor.mocks, project=stack_config.PROJECT, stack=stack,
                             preview=False, monitor=monitor)

    @pulumi.runtime.test
    def run():
        return pulumi.Output.from_input(program()).apply(result.outputs.update)

    run()
    return result


def render_values(stack: str, values: dict) -> Render:
    """Run the program for config `values` (keys without the `core2:` prefix), with the
    Pulumi.yaml defaults filled in as the Pulumi CLI does."""
    values = {**stack_config.project_defaults(), **values}
    config = {f"{stack_config.PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v)
              for k, v in values.items()}
    return run_program(
        stack, lambda: build(stack_config.read(pulumi.Config(stack_config.PROJECT))),
        stack_config.parse(values), config)


def render_stack(stack: str, stack_file: Path | None = None) -> Render:
    path = stack_file or STACKS / f"Pulumi.{stack}.yaml"
    return render_values(stack, stack_config.stack_values(path))
