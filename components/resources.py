"""Model, Pipeline and Experiment as Pulumi resources managed through the scheduler API.

`pulumi preview --diff` shows the spec fields that change; for a Model, `versionKey` changes
exactly when the scheduler will create a new model version (any change except scaling).
"""

import hashlib
import json
from pathlib import Path

import pulumi
import pulumi.dynamic

from components.providers import (
    ExperimentProvider,
    ModelProvider,
    PipelineProvider,
    SchedulerResourceProvider,
)
from components.scheduler_api import Connection
from runtime.specs.common import Spec, check_name
from runtime.specs.manifest import KINDS, load_file
from runtime.specs.model import ModelSpec


def version_key(spec: ModelSpec) -> str:
    digest = hashlib.sha256(json.dumps(spec.version_key(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


class _SchedulerResource(pulumi.dynamic.Resource):
    kind = "Model"
    provider_class: type[SchedulerResourceProvider] = ModelProvider

    name: pulumi.Output[str]
    version: pulumi.Output[int]
    state: pulumi.Output[str]
    reason: pulumi.Output[str]
    ready: pulumi.Output[bool]

    def __init__(self, resource_name: str, spec: dict | Spec, scheduler: Connection,
                 name: str | None = None, timeout_seconds: int = 600,
                 retry_grace_seconds: int = 30, opts: pulumi.ResourceOptions | None = None):
        name = check_name(name or resource_name, f"{self.kind} name")
        if isinstance(spec, Spec):
            parsed = spec
        else:  # refuse a bad spec at preview time, naming the field
            parsed = KINDS[self.kind].parse(spec, f"{self.kind} {name}: spec")
        scheduler.validate()
        scheduler.check_files()  # a missing kubeconfig file fails the preview, naming the key
        conn = scheduler.to_props()
        props = {
            "name": name,
            "spec": parsed.model_dump(exclude_none=True),
            # a kubeconfig is a credential: keep it encrypted in the state
            "scheduler": pulumi.Output.secret(conn) if scheduler.kubeconfig else conn,
            "timeoutSeconds": timeout_seconds,
            "retryGraceSeconds": retry_grace_seconds,
            "version": None, "state": None, "reason": None, "ready": None,
        }
        props.update(self._extra_props(parsed))
        super().__init__(self.provider_class(), resource_name, props, opts)

    def _extra_props(self, spec: Spec) -> dict:
        return {}

    @classmethod
    def from_manifest(cls, path: str | Path, scheduler: Connection,
                      opts: pulumi.ResourceOptions | None = None,
                      **kwargs) -> list["_SchedulerResource"]:
        """One resource per document of this kind in a Seldon YAML file."""
        docs = [r for r in load_file(path) if r.kind == cls.kind]
        if not docs:
            raise ValueError(f"{path}: no {cls.kind} documents")
        return [cls(f"{cls.kind.lower()}-{r.name}", r.spec, scheduler, name=r.name, opts=opts,
                    **kwargs) for r in docs]


class Model(_SchedulerResource, module="core2", name="Model"):
    kind = "Model"
    provider_class = ModelProvider
    versionKey: pulumi.Output[str]  # attributes carry the output properties' names

    def _extra_props(self, spec: Spec) -> dict:
        assert isinstance(spec, ModelSpec)  # parsed as KINDS["Model"]
        return {"versionKey": version_key(spec)}


class Pipeline(_SchedulerResource, module="core2", name="Pipeline"):
    kind = "Pipeline"
    provider_class = PipelineProvider


class Experiment(_SchedulerResource, module="core2", name="Experiment"):
    kind = "Experiment"
    provider_class = ExperimentProvider
