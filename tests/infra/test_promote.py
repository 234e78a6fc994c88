"""`core2 promote` on copies of the shipped stacks: the expected config change, a readable
diff, and rewritten stacks that still render, validate and pass the policies."""

import shutil

import kubernetes_validate
import pytest
import yaml

from components.promote import PromoteError, promote
from infra.policy.rules import check_all
from runtime import cli
from tests.infra.harness import STACKS, render_stack


@pytest.fixture
def stacks(tmp_path):
    out = tmp_path / "stacks"
    shutil.copytree(STACKS, out)
    return out


def config(path) -> dict:
    return yaml.safe_load(path.read_text())["config"]


def models(path) -> dict:
    return {m["name"]: m["spec"] for m in config(path)["core2:models"]}


def test_promote_makes_the_winner_the_default_and_ends_the_experiment(stacks, capsys):
    before = {s: (stacks / f"Pulumi.{s}.yaml").read_text() for s in ("prod-aws", "prod-gcp")}
    assert cli.main(["promote", "iris-ab", "--from", "staging", "--to", "prod-aws,prod-gcp",
                     "--stacks-dir", str(stacks)]) == 0
    diff = capsys.readouterr().out
    winner_uri = "gs://core2-models/iris-sklearn/v2"
    # prod-aws reads S3: its storageUriMap points the winner at the copy in its bucket
    uris = {"prod-gcp": winner_uri, "prod-aws": "s3://core2-models-eu-west-1/iris-sklearn/v2"}
    assert all(f"+      storageUri: {u}" in diff for u in uris.values())
    assert "-  core2:experiments:" in diff
    for stack in ("prod-aws", "prod-gcp"):
        path = stacks / f"Pulumi.{stack}.yaml"
        iris = models(path)["iris"]
        assert iris["storageUri"] == uris[stack]
        assert iris["replicas"] == 3  # the environment keeps its own scaling
        assert "core2:experiments" not in config(path)
        # only the models/experiments blocks changed: header comments and the rest survive
        old, new = before[stack].splitlines(), path.read_text().splitlines()
        assert new[0] == old[0] and new[0].startswith("#")
        assert new[:new.index("  core2:models:")] == old[:old.index("  core2:models:")]
    # prod-gcp ran the canary: its separate iris2 entry went with the experiment
    assert set(models(stacks / "Pulumi.prod-gcp.yaml")) == {"iris"}
    assert set(models(stacks / "Pulumi.prod-aws.yaml")) == {"iris"}
    # the source stack is untouched
    assert (stacks / "Pulumi.staging.yaml").read_text() == (STACKS /
                                                             "Pulumi.staging.yaml").read_text()


def test_promoted_stacks_still_render_validate_and_pass_policies(stacks):
    promote("iris-ab", "staging", ["prod-aws", "prod-gcp", "onprem"], stacks)
    for stack in ("prod-aws", "prod-gcp", "onprem"):
        render = render_stack(stack, stacks / f"Pulumi.{stack}.yaml")
        for obj in render.builtin_objects():
            kubernetes_validate.validate(obj.manifest, render.config.kubernetesVersion,
                                         strict=True)
        violations = check_all([(r.type, r.inputs) for r in render.resources])
        assert not any(violations.values()), violations
        (iris,) = [r for r in render.resources if r.type.endswith(":Model")]
        assert iris.inputs["spec"]["storageUri"].endswith("/iris-sklearn/v2")


def test_dry_run_prints_and_writes_nothing(stacks, capsys):
    before = (stacks / "Pulumi.prod-gcp.yaml").read_text()
    assert cli.main(["promote", "iris-ab", "--from", "staging", "--to", "prod-gcp",
                     "--dry-run", "--stacks-dir", str(stacks)]) == 0
    assert "+++ b/Pulumi.prod-gcp.yaml" in capsys.readouterr().out
    assert (stacks / "Pulumi.prod-gcp.yaml").read_text() == before


def test_promoting_the_default_only_ends_the_experiment(stacks):
    diffs = promote("iris-ab", "staging", ["prod-gcp"], stacks, winner="iris")
    assert "+      storageUri" not in diffs["prod-gcp"]  # iris keeps its artifact
    assert "core2:experiments" not in config(stacks / "Pulumi.prod-gcp.yaml")
    # iris2 is no longer used by anything there
    assert set(models(stacks / "Pulumi.prod-gcp.yaml")) == {"iris"}


def test_promotion_adds_the_default_model_where_a_stack_lacks_it(stacks):
    path = stacks / "Pulumi.onprem.yaml"
    text = path.read_text().replace("  - name: iris\n", "  - name: fraud\n")
    path.write_text(text)
    promote("iris-ab", "staging", ["onprem"], stacks)
    assert set(models(path)) == {"fraud", "iris"}
    assert models(path)["iris"]["storageUri"] == "s3://models/iris-sklearn/v2"  # mapped


@pytest.mark.parametrize("argv, message", [
    (["nope", "--from", "staging", "--to", "prod-aws"], "no Experiment named 'nope'"),
    (["iris-ab", "--from", "staging", "--to", "prod-aws", "--winner", "iris9"],
     "--winner: 'iris9' is not a candidate"),
    (["iris-ab", "--from", "staging", "--to", "mars"], "stack 'mars'"),
    (["iris-ab", "--from", "staging", "--to", "staging"], "is the source stack"),
])
def test_bad_promotions_are_refused_clearly(stacks, capsys, argv, message):
    before = {p.name: p.read_text() for p in stacks.glob("*.yaml")}
    assert cli.main(["promote", *argv, "--stacks-dir", str(stacks)]) == 2
    assert message in capsys.readouterr().err
    assert before == {p.name: p.read_text() for p in stacks.glob("*.yaml")}


def test_manifest_sourced_targets_are_refused(stacks):
    with pytest.raises(PromoteError, match="promote rewrites inline"):
        promote("iris-ab", "staging", ["local"], stacks)


def test_comments_and_quoting_inside_the_promoted_entry_survive(stacks):
    """ruamel.yaml round trip: only the values that change are re-emitted; a comment or a
    quoted value on the promoted model keeps its text, and what the winner brings is written
    in the stacks' style (short lists in flow style)."""
    path = stacks / "Pulumi.prod-gcp.yaml"
    path.write_text(path.read_text().replace(
        "      memory: 100Ki\n      replicas: 3\n",
        "      memory: '100Ki'  # measured in prod\n      replicas: 3  # sized for prod\n"))
    staging = stacks / "Pulumi.staging.yaml"
    staging.write_text(staging.read_text().replace(
        "storageUri: gs://core2-models/iris-sklearn/v2\n      requirements: [sklearn]\n",
        "storageUri: gs://core2-models/iris-sklearn/v2\n      artifactVersion: 2\n"
        "      requirements: [sklearn, mlserver]\n", 1))
    diff = promote("iris-ab", "staging", ["prod-gcp"], stacks)["prod-gcp"]
    assert ("      memory: '100Ki'  # measured in prod\n      replicas: 3  # sized for prod\n"
            in path.read_text())
    assert models(path)["iris"]["artifactVersion"] == 2
    changed = [line for line in diff.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed[:4] == [
        "-      storageUri: gs://seldon-models/scv2/samples/mlserver_1.5.0/iris-sklearn",
        "-      requirements: [sklearn]",
        "+      storageUri: gs://core2-models/iris-sklearn/v2",
        "+      requirements: [sklearn, mlserver]"]
    assert "+      artifactVersion: 2" in changed
