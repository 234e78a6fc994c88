"""Pulumi dynamic providers for core2 Models, Pipelines and Experiments.

Every operation talks to the scheduler API with the one client (runtime.client), reached
as components.scheduler_api.connect says. Props:
  name, spec (the manifest's `spec`), scheduler (Connection props), timeoutSeconds,
  retryGraceSeconds; outputs add version, state, reason, ready.
The classes hold no state, so the serialized provider stays the same between runs.

Which scheduler to call: for create and update, the new inputs'; for read and delete, the
connection the stack config names now (`configure` reads it), and only without stack config
the one recorded in the state. So a changed `schedulerAddress`/`kubeconfig` is used by every
operation, including deleting a resource removed in the same change; a change of the
connection alone is an update that records it.
"""

import contextlib
import json

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from components import scheduler_api as api
from runtime.client import NotFound, SchedulerClient, SchedulerError
from runtime.kinds import GONE
from runtime.specs.common import SpecError
from runtime.specs.manifest import KINDS

SCALING = {"replicas", "minReplicas", "maxReplicas"}
# Inputs that change how the provider works, not what the scheduler runs.
OPERATIONAL = {"scheduler", "timeoutSeconds", "retryGraceSeconds", "__provider"}


def normalize(kind: str, spec: dict | None) -> dict:
    """The spec as the scheduler sees it: validated, defaults filled, None dropped."""
    return KINDS[kind].parse(spec or {}, f"{kind} spec").model_dump(exclude_none=True)


def _paths(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _paths(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _paths(a, b, f"{prefix}[{i}]")
        return out
    return [] if old == new else [prefix]


def spec_changes(kind: str, old_spec: dict, new_spec: dict) -> tuple[list[str], bool]:
    """(changed field paths, whether the change makes a new version). Models get a new
    version for any change but scaling; every pipeline change is a new version;
    experiments are not versioned."""
    fields = _paths(normalize(kind, old_spec), normalize(kind, new_spec))
    if kind == "Model":
        new_version = any(f.split(".")[0].split("[")[0] not in SCALING for f in fields)
    else:
        new_version = kind == "Pipeline" and bool(fields)
    return fields, new_version


class SchedulerResourceProvider(ResourceProvider):
    kind = "Model"
    current: api.Connection | None = None  # from the stack config, when there is one

    def configure(self, req: ConfigureRequest) -> None:
        self.current = api.Connection.from_stack_config(req.config.get)

    def _connection(self, props: dict) -> api.Connection:
        """The stack config's connection, else the one in `props` (no stack config: a
        program that builds Connections itself)."""
        return self.current or api.Connection.from_props(props.get("scheduler"))

    def check(self, _olds: dict, news: dict) -> CheckResult:
        try:
            normalize(self.kind, news.get("spec"))
        except SpecError as e:
            return CheckResult(news, [CheckFailure("spec", str(e))])
        return CheckResult(news, [])

    def _apply(self, props: dict, undo_on_failure: bool = False) -> dict:
        name, spec = props["name"], props["spec"]
        # the new inputs name the scheduler to use (a config change included)
        with api.connect(api.Connection.from_props(props.get("scheduler"))) as client:
            applied = client.apply(self.kind, name, json.dumps(spec, sort_keys=True))
            try:
                st = client.wait(self.kind, name, timeout=float(props.get("timeoutSeconds", 600)),
                                 version=applied.version,
                                 retry_grace=float(props.get("retryGraceSeconds", 30)))
            except SchedulerError:
                # a failed create leaves nothing in the state, so leave nothing behind either
                if undo_on_failure:
                    with contextlib.suppress(SchedulerError):  # keep the first error
                        _delete(client, self.kind, name, timeout=30)
                raise
        return {**props, **_status_outs(st)}

    def create(self, props: dict) -> CreateResult:
        return CreateResult(f"{self.kind.lower()}/{props['name']}",
                            self._apply(props, undo_on_failure=True))

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        fields, _ = spec_changes(self.kind, olds.get("spec") or {}, news.get("spec") or {})
        if not fields:  # only the connection moved: check it reaches the resource
            with api.connect(api.Connection.from_props(news.get("scheduler"))) as client:
                st = client.get(self.kind, news["name"])
            if st is not None and st.state not in GONE:
                return UpdateResult({**news, **_status_outs(st)})
        # a spec change, or a scheduler that does not have it (e.g. a new one): apply
        return UpdateResult(self._apply(news))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        if olds.get("name") != news.get("name"):
            # another name is another scheduler resource: create it first, then delete the
            # old one, so whatever serves under the old name keeps serving until then
            return DiffResult(changes=True, replaces=["name"], delete_before_replace=False)
        fields, _ = spec_changes(self.kind, olds.get("spec") or {}, news.get("spec") or {})
        # a new connection alone is an update too: the state must record where to delete
        moved = olds.get("scheduler") != news.get("scheduler")
        return DiffResult(changes=bool(fields) or moved, replaces=[], stables=["name"])

    def read(self, id_: str, props: dict) -> ReadResult:
        with api.connect(self._connection(props)) as client:
            st = client.get(self.kind, props["name"])
        if st is None or st.state in GONE:
            return ReadResult(None, {})
        spec = json.loads(st.spec_json) if st.spec_json else props.get("spec")
        return ReadResult(id_, {**props, "spec": spec, **_status_outs(st)})

    def delete(self, _id: str, props: dict) -> None:
        # `props` is the state: its connection may be stale (the config moved the scheduler)
        with api.connect(self._connection(props)) as client:
            _delete(client, self.kind, props["name"], float(props.get("timeoutSeconds", 600)))


def _delete(client: SchedulerClient, kind: str, name: str, timeout: float) -> None:
    """Delete and wait until the scheduler has let it go; already gone is fine."""
    try:
        client.delete(kind, name)
    except NotFound:
        return
    client.wait(kind, name, until="gone", timeout=timeout)


def _status_outs(st) -> dict:
    return {"version": int(st.version), "state": st.state, "reason": st.reason,
            "ready": bool(st.ready)}


class ModelProvider(SchedulerResourceProvider):
    kind = "Model"


class PipelineProvider(SchedulerResourceProvider):
    kind = "Pipeline"


class ExperimentProvider(SchedulerResourceProvider):
    kind = "Experiment"
