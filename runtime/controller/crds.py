"""Seldon's mlops.seldon.io/v1alpha1 CustomResourceDefinitions, generated from the pydantic specs.

One source of truth: the schema a cluster validates a Model against is the one the CLI and the
scheduler parse. Pydantic's JSON Schema is turned into a Kubernetes structural schema (no $ref,
`nullable` instead of `anyOf null`, int-or-string for quantities, preserved free-form maps).
"""

from typing import Any

from runtime.kinds import Kind
from runtime.specs.common import Spec
from runtime.specs.manifest import KINDS

GROUP = "mlops.seldon.io"
VERSION = "v1alpha1"
_DROP = {"title", "default", "description", "$defs"}


def _ready(condition: str) -> str:
    return f'.status.conditions[?(@.type=="{condition}")].status'


def _message(condition: str) -> str:
    return f'.status.conditions[?(@.type=="{condition}")].message'


# Printer columns as Seldon's `kubectl get` shows them.
COLUMNS: dict[str, list[dict]] = {
    "Model": [
        {"name": "Ready", "type": "string", "jsonPath": _ready("ModelReady")},
        {"name": "Desired replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Available replicas", "type": "integer", "jsonPath": ".status.availableReplicas"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "Pipeline": [
        {"name": "Ready", "type": "string", "jsonPath": _ready("PipelineReady")},
        {"name": "Message", "type": "string", "jsonPath": _message("PipelineReady")},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "Experiment": [
        {"name": "Experiment ready", "type": "string", "jsonPath": _ready("ExperimentReady")},
        {"name": "Candidates ready", "type": "string", "jsonPath": _ready("CandidatesReady")},
        {"name": "Mirror ready", "type": "string", "jsonPath": _ready("MirrorReady")},
        {"name": "Message", "type": "string", "jsonPath": _message("Ready")},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "Server": [
        {"name": "Ready", "type": "string", "jsonPath": _ready("Ready")},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
        {"name": "Loaded models", "type": "integer", "jsonPath": ".status.loadedModels"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64"},
        "replicas": {"type": "integer"},
        "availableReplicas": {"type": "integer"},
        "loadedModels": {"type": "integer"},
        "selector": {"type": "string"},
        "modelVersion": {"type": "integer"},
        "conditions": {"type": "array", "items": {
            "type": "object", "required": ["type", "status"],
            "properties": {
                "type": {"type": "string"},
                "status": {"type": "string"},
                "reason": {"type": "string"},
                "message": {"type": "string"},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
            }}},
    },
}


def structural(schema: dict, defs: dict) -> dict:
    """A pydantic JSON Schema node as a Kubernetes structural schema node."""
    if "$ref" in schema:
        return structural(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        types = {o.get("type") for o in options}
        if types == {"string", "integer"}:  # Kubernetes quantities: "100Mi" or 1024
            out: dict = {"x-kubernetes-int-or-string": True}
        elif len(options) == 1:
            out = structural(options[0], defs)
        else:
            out = {"x-kubernetes-preserve-unknown-fields": True}
        if nullable:
            out["nullable"] = True
        return out
    out = {k: v for k, v in schema.items() if k not in _DROP}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "exclusiveMinimum" in out:  # JSON Schema 2020 number -> OpenAPI v3.0 boolean form
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out:
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    kind = out.get("type")
    if kind == "object":
        if "properties" in out:
            out["properties"] = {k: structural(v, defs) for k, v in out["properties"].items()}
            out.pop("additionalProperties", None)  # unknown fields: refused by strict apply
        else:
            extra = out.get("additionalProperties")
            if isinstance(extra, dict) and extra:
                out["additionalProperties"] = structural(extra, defs)
            else:  # a free-form map (podSpec, explainer, ...)
                out.pop("additionalProperties", None)
                out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = structural(out.get("items", {}), defs) if out.get("items") else {
            "x-kubernetes-preserve-unknown-fields": True}
    elif kind is None and "enum" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def spec_schema(spec: type[Spec]) -> dict:
    schema = spec.model_json_schema(mode="validation")
    return structural(schema, schema.get("$defs", {}))


def crd(kind: str) -> dict:
    plural = Kind(kind).plural
    version: dict[str, Any] = {
        "name": VERSION, "served": True, "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": COLUMNS[kind],
        "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": spec_schema(KINDS[kind]),
                "status": STATUS_SCHEMA,
            },
            "required": ["spec"],
        }},
    }
    if kind in ("Model", "Server"):  # `kubectl scale` and the HPA act on spec.replicas
        version["subresources"]["scale"] = {
            "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "core2"}},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "categories": ["seldon", "core2"]},
            "versions": [version],
        },
    }


def all_crds() -> list[dict]:
    return [crd(k.value) for k in (Kind.MODEL, Kind.SERVER, Kind.PIPELINE, Kind.EXPERIMENT)]
