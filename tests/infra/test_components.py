"""Components used directly from Python, as a user's own Pulumi program would."""

import pytest

from components import Connection, Experiment, Model, Server, ServerArgs
from infra.config import ROOT
from runtime.specs.common import SpecError
from tests.infra.harness import run_program

LOCAL = Connection(address="127.0.0.1:9004")


def test_resources_from_seldon_manifests():
    def program():
        models = Model.from_manifest(ROOT / "samples" / "iris.yaml", LOCAL)
        Experiment.from_manifest(ROOT / "samples" / "experiment.yaml", LOCAL)
        return {"n": len(models)}

    render = run_program("dev", program)
    by_name = {r.inputs["name"]: r for r in render.of_type("pulumi-python:dynamic/core2:")}
    assert set(by_name) == {"iris", "iris-ab"}
    # relative artifact paths are taken relative to the manifest
    assert by_name["iris"].inputs["spec"]["storageUri"] == str(ROOT / "samples" / "models" /
                                                               "iris")
    assert by_name["iris-ab"].inputs["spec"]["candidates"][1] == {"name": "iris2",
                                                                  "weight": 50}


def test_a_manifest_without_the_kind_is_refused():
    with pytest.raises(ValueError, match="no Model documents"):
        run_program("dev", lambda: Model.from_manifest(ROOT / "samples" / "experiment.yaml",
                                                       LOCAL))


def test_bad_inline_spec_is_refused_at_preview_naming_the_field():
    with pytest.raises(SpecError, match=r"Model iris: spec\.storageUri"):
        run_program("dev", lambda: Model("iris", {"requirements": ["sklearn"]}, LOCAL))


def test_server_component_parents_its_objects_and_exposes_options():
    args = ServerArgs(name="cpu", namespace="ml", image="ghcr.io/core2/core2:0.1.0",
                      replicas=2, extra_capabilities=["custom"], memory="2Gi",
                      over_commit=50, cache_size="5Gi", storage_class="fast")
    render = run_program("dev", lambda: Server("cpu", args) and {})
    (component,) = render.of_type("core2:index:Server")
    children = [r for r in render.resources if r.parent == component.urn
                and r.type.startswith("kubernetes:")]
    # its own ServiceAccount (cloud identities per server) and, replicated, a disruption budget
    assert {r.inputs["kind"] for r in children} == {"ServiceAccount", "Service", "StatefulSet",
                                                   "PodDisruptionBudget"}
    (sts,) = [r.inputs for r in children if r.inputs["kind"] == "StatefulSet"]
    assert sts["metadata"]["namespace"] == "ml" and sts["spec"]["replicas"] == 2
    agent = sts["spec"]["template"]["spec"]["containers"][1]
    flags = dict(zip(agent["args"][::2], agent["args"][1::2], strict=True))
    assert "custom" in flags["--capabilities"].split(",") and flags["--over-commit"] == "50"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"


def test_the_entry_point_pulumi_runs_builds_the_stack():
    """`main: infra/` runs infra/__main__.py; under mocks it builds the configured stack."""
    import json
    import runpy

    from infra.config import stack_values
    from tests.infra.harness import STACKS

    config = {f"core2:{k}": v if isinstance(v, str) else json.dumps(v)
              for k, v in stack_values(STACKS / "Pulumi.prod-gcp.yaml").items()}
    render = run_program("prod-gcp", lambda: runpy.run_path(str(ROOT / "infra" / "__main__.py"))
                         and {}, config=config)
    types = {r.type for r in render.resources}
    assert {"core2:index:Platform", "core2:index:Server",
            "kubernetes:mlops.seldon.io/v1alpha1:Experiment"} <= types
