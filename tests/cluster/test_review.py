"""What a reviewer reads in a pull request: `pulumi preview --diff` of an edited stack file and
the policy pack, both run by the real engine against a real API server."""

import re
import shutil

import pytest

from runtime import cli
from tests.cluster.conftest import ROOT

ANALYZER = str(ROOT / "infra" / "policy" / "analyzer")
VERSION_KEY = "core2.io/version-key"


# several real engine runs, each planning a whole stack
pytestmark = pytest.mark.timeout(1800)

def model(sd, name: str) -> dict:
    (found,) = [m for m in sd.values["core2:models"] if m["name"] == name]
    return found["spec"]


def changed_lines(diff: str) -> list[str]:
    """The lines of the engine's diff that mark a change (`~`, `+`, `-`, `+-`)."""
    return [line for line in diff.splitlines() if re.match(r"^\s*[~+-]{1,2}\s", line)]


@pytest.fixture
def staging(stack_dir, cluster):
    sd = stack_dir("staging")
    sd.values["core2:strimziInstallOperator"] = False
    sd.save()
    sd.run("up").ok()
    return sd


def test_preview_diff_shows_exactly_what_changes(staging):
    iris = model(staging, "iris")
    original = dict(iris)

    iris["storageUri"] = "gs://core2-models/iris-sklearn/v3"
    staging.save()
    diff = staging.run("preview", "--diff").ok().output
    lines = "\n".join(changed_lines(diff))
    assert "gs://core2-models/iris-sklearn/v3" in lines and "storageUri" in lines, diff[-4000:]
    assert VERSION_KEY in lines, "a storageUri change must show a new model version"

    iris.clear()
    iris.update(original, replicas=3)
    staging.save()
    diff = staging.run("preview", "--diff").ok().output
    lines = "\n".join(changed_lines(diff))
    assert re.search(r"replicas\s*:\s*1\s*=>\s*3", lines), diff[-4000:]
    assert VERSION_KEY not in lines and "storageUri" not in lines, lines

    iris.clear()
    iris.update(original)
    (experiment,) = staging.values["core2:experiments"]
    experiment["spec"]["candidates"][0]["weight"] = 90
    experiment["spec"]["candidates"][1]["weight"] = 10
    staging.save()
    diff = staging.run("preview", "--diff").ok().output
    lines = "\n".join(changed_lines(diff))
    assert re.search(r"weight\s*:\s*50\s*=>\s*90", lines), diff[-4000:]
    assert re.search(r"weight\s*:\s*50\s*=>\s*10", lines), diff[-4000:]
    assert "mlops.seldon.io/v1alpha1:Model" not in lines  # the models are untouched


def test_policy_pack_blocks_a_stack_that_breaks_a_mandatory_policy(stack_dir, cluster):
    sd = stack_dir("prod-aws")
    result = sd.run("preview", "--policy-pack", ANALYZER)
    assert result.returncode == 0, result.output[-4000:]

    sd.values["core2:image"] = "ghcr.io/core2/core2:latest"
    sd.values["core2:models"][0]["spec"]["requirements"] = ["no-server-has-this"]
    sd.save()
    result = sd.run("preview", "--policy-pack", ANALYZER)
    assert result.returncode != 0
    assert "core2-images-pinned" in result.output and "latest" in result.output
    assert "core2-model-requirements-satisfiable" in result.output
    assert "no-server-has-this" in result.output


def test_promote_output_goes_through_preview_diff(stack_dir, cluster):
    sd = stack_dir("prod-gcp")
    sd.run("up").ok()
    shutil.copy(ROOT / "stacks" / "Pulumi.staging.yaml", sd.dir / "stacks")
    assert cli.main(["promote", "iris-ab", "--from", "staging", "--to", "prod-gcp",
                     "--stacks-dir", str(sd.dir / "stacks")]) == 0

    diff = sd.run("preview", "--diff").ok().output
    lines = "\n".join(changed_lines(diff))
    winner = "gs://core2-models/iris-sklearn/v2"
    updated = re.search(r"~ kubernetes:mlops\.seldon\.io/v1alpha1:Model: \(update\)\s*"
                        r"\[id=[^/\]]+/(\S+)\]", diff)
    assert updated and updated.group(1) == "iris", diff[-4000:]
    assert winner in lines and VERSION_KEY in lines
