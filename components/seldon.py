"""Seldon's custom resources on a cluster: the mlops.seldon.io CRDs and the Model, Pipeline and
Experiment objects a stack declares.

On a cluster stack a Model is a `mlops.seldon.io/v1alpha1` object the controller reconciles with
the scheduler, so `kubectl get models` shows it, Argo CD or Flux can own it, and Pulumi's state
holds no scheduler connection. `pulumi preview --diff` shows the spec fields that change, and a
Model's `core2.io/version-key` annotation changes exactly when the scheduler will make a new
version (any change but scaling).
"""

from typing import cast

import pulumi
import pulumi_kubernetes as k8s

from components.k8s import labels
from components.resources import version_key
from runtime.controller import crds
from runtime.specs.common import check_name
from runtime.specs.manifest import API_VERSION, KINDS
from runtime.specs.pipeline import PipelineSpec

VERSION_KEY = "core2.io/version-key"


class SeldonCrds(pulumi.ComponentResource):
    """The four CRDs. They are cluster-wide and may serve other stacks' objects, so a stack's
    destroy leaves them (retain on delete), and a stack applying them takes over fields another
    stack's apply set (the same definitions, from the same code)."""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("core2:index:SeldonCrds", name, None, opts)
        self.definitions = []
        for definition in crds.all_crds():
            meta = {**definition["metadata"],
                    "annotations": {"pulumi.com/patchForce": "true"}}
            self.definitions.append(k8s.apiextensions.v1.CustomResourceDefinition(
                f"{name}-{definition['spec']['names']['plural']}",
                metadata=cast(k8s.meta.v1.ObjectMetaArgsDict, meta), spec=definition["spec"],
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True)))
        self.register_outputs({})


def seldon_object(kind: str, name: str, spec: dict, namespace: str,
                  opts: pulumi.ResourceOptions | None = None
                  ) -> k8s.apiextensions.CustomResource:
    """A Model, Pipeline or Experiment object, its spec refused at preview when invalid."""
    check_name(name, f"{kind} name")
    parsed = KINDS[kind].parse(spec, f"{kind} {name}: spec")
    if isinstance(parsed, PipelineSpec):
        parsed.validate_for(name)
    annotations = {VERSION_KEY: version_key(parsed)} if kind == "Model" else {}
    return k8s.apiextensions.CustomResource(
        f"{kind.lower()}-{name}", api_version=API_VERSION, kind=kind,
        metadata={"name": name, "namespace": namespace, "labels": labels(kind.lower(), name),
                  "annotations": annotations},
        spec=parsed.model_dump(exclude_none=True), opts=opts)
