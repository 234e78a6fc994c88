"""Seldon-format YAML manifests: any mix of Model, Server, Pipeline and Experiment documents."""

from dataclasses import dataclass
from pathlib import Path

import yaml

from runtime.kinds import Kind
from runtime.specs.common import Spec, SpecError, check_name
from runtime.specs.depth import check_json_depth, check_yaml_depth
from runtime.specs.experiment import ExperimentSpec
from runtime.specs.model import ModelSpec
from runtime.specs.pipeline import PipelineSpec
from runtime.specs.server import ServerSpec

API_VERSION = "mlops.seldon.io/v1alpha1"
# the spec class of each kind, keyed by the kinds' names as plain strings (YAML dumps them)
KINDS: dict[str, type[Spec]] = {
    Kind.MODEL.value: ModelSpec,
    Kind.SERVER.value: ServerSpec,
    Kind.PIPELINE.value: PipelineSpec,
    Kind.EXPERIMENT.value: ExperimentSpec,
}


@dataclass
class Resource:
    kind: str
    name: str
    spec: Spec

    def spec_json(self) -> str:
        return self.spec.model_dump_json(exclude_none=True)


def parse_document(doc: dict, where: str = "document") -> Resource:
    if not isinstance(doc, dict):
        raise SpecError(f"{where}: expected a mapping with apiVersion, kind, metadata and spec")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise SpecError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    if doc.get("apiVersion") != API_VERSION:
        got = doc.get("apiVersion")
        raise SpecError(f"{where}.apiVersion: expected {API_VERSION}, got {got!r}")
    meta = doc.get("metadata") or {}
    name = check_name(meta.get("name", "") if isinstance(meta, dict) else "",
                      f"{where}.metadata.name")
    spec = KINDS[kind].parse(doc.get("spec"), f"{kind} {name}: spec")
    validate_for = getattr(spec, "validate_for", None)
    if validate_for is not None:  # rules that need the resource's name
        validate_for(name)
    return Resource(kind, name, spec)


def load_manifests(text: str, source: str = "input") -> list[Resource]:
    check_yaml_depth(text, source)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise SpecError(f"{source}: not valid YAML: {e}") from None
    except RecursionError:  # what the depth check missed (e.g. aliases)
        raise SpecError(f"{source}: nested too deeply") from None
    return [parse_document(d, f"{source}[{i}]") for i, d in enumerate(docs)]


def load_file(path: str | Path) -> list[Resource]:
    """Load a manifest file. A Model's storageUri that is a relative plain path is taken
    relative to the file's folder, so samples work from any working directory."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{path}: no such file")
    resources = load_manifests(p.read_text(), str(path))
    for r in resources:
        spec = r.spec
        if isinstance(spec, ModelSpec) and "://" not in spec.storageUri \
                and not Path(spec.storageUri).is_absolute():
            spec.storageUri = str((p.parent / spec.storageUri).resolve())
    return resources


def parse_spec(kind: str, name: str, spec_json: str) -> Spec:
    """Parse a spec arriving over the API (JSON of the manifest's `spec`)."""
    import json

    if kind not in KINDS:
        raise SpecError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    check_name(name, "name")
    check_json_depth(spec_json or "", f"{kind} {name}: spec")
    try:
        data = json.loads(spec_json or "{}")
    except json.JSONDecodeError as e:
        raise SpecError(f"spec: not valid JSON: {e}") from None
    except RecursionError:
        raise SpecError(f"{kind} {name}: spec: nested too deeply") from None
    if not isinstance(data, dict):
        raise SpecError(f"{kind} {name}: spec: expected a JSON object")
    spec = KINDS[kind].parse(data, f"{kind} {name}: spec")
    validate_for = getattr(spec, "validate_for", None)
    if validate_for is not None:
        validate_for(name)
    return spec
