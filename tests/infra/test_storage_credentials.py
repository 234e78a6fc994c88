"""Artifact-store credentials on servers: env, envFrom, volumes and a per-server cloud
identity for the agent; a storageSecret whose keys fsspec applies as s3/gs/az options; and
`core2 promote` refusing (or mapping) another cloud's storageUri."""

import json
import shutil

import kubernetes_validate
import pytest
import yaml
from fsspec.config import apply_config, set_conf_env

from components.promote import PromoteError, promote
from infra.config import stack_values
from runtime.specs.common import SpecError
from tests.infra.harness import STACKS, render_stack, render_values

ROLE = "arn:aws:iam::123456789012:role/models"


def values(stack: str) -> dict:
    return json.loads(json.dumps(stack_values(STACKS / f"Pulumi.{stack}.yaml")))


def with_server(stack: str, **extra) -> dict:
    cfg = values(stack)
    cfg["servers"] = [{**cfg["servers"][0], **extra}]
    return cfg


def objects(render, kind: str) -> dict[str, dict]:
    return {o.manifest["metadata"]["name"]: o.manifest for o in render.kubernetes_objects()
            if o.manifest["kind"] == kind}


def test_servers_take_env_volumes_and_a_cloud_identity_for_the_agent():
    render = render_values("staging", with_server(
        "staging",
        env=[{"name": "AWS_REGION", "value": "eu-west-1"}],
        envFrom=[{"secretRef": {"name": "extra"}}],
        volumes=[{"name": "gcp-key", "secret": {"secretName": "gcp-sa"}}],
        volumeMounts=[{"name": "gcp-key", "mountPath": "/var/run/gcp", "readOnly": True}],
        serviceAccountAnnotations={"eks.amazonaws.com/role-arn": ROLE},
        storageSecret={"name": "minio", "protocol": "s3"}))
    sts = objects(render, "StatefulSet")["mlserver"]
    pod = sts["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "agent")
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in agent["env"]
    assert agent["envFrom"] == [{"prefix": "FSSPEC_S3_", "secretRef": {"name": "minio"}},
                                {"secretRef": {"name": "extra"}}]
    assert {"name": "gcp-key", "secret": {"secretName": "gcp-sa"}} in pod["volumes"]
    assert {"name": "gcp-key", "mountPath": "/var/run/gcp", "readOnly": True} in \
        agent["volumeMounts"]
    account = objects(render, "ServiceAccount")[pod["serviceAccountName"]]
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE}
    for obj in (sts, account):
        kubernetes_validate.validate(obj, render.config.kubernetesVersion, strict=True)


def test_shipped_cloud_stacks_give_servers_their_cloud_identity():
    aws = objects(render_stack("prod-aws"), "ServiceAccount")["core2-server-mlserver"]
    assert aws["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws")
    gcp = objects(render_stack("prod-gcp"), "ServiceAccount")["core2-server-mlserver"]
    assert gcp["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com")


def test_storage_secret_keys_become_fsspec_options_of_its_protocol():
    """What the kubelet makes of envFrom (prefix + each Secret key), read by fsspec's own
    config loader: s3:// (s3fs' protocols s3, s3a) opens with the MinIO endpoint and keys."""
    render = render_stack("onprem")
    agent = next(c for c in objects(render, "StatefulSet")["mlserver"]["spec"]["template"][
        "spec"]["containers"] if c["name"] == "agent")
    (source,) = [e for e in agent["envFrom"] if e["secretRef"]["name"] == "minio-credentials"]
    secret = {"endpoint_url": "http://minio.storage:9000", "key": "core2", "secret": "s3cr3t"}
    environ = {f"{source['prefix']}{k}": v for k, v in secret.items()}
    conf: dict = {}
    set_conf_env(conf, environ)

    class S3:  # stands for s3fs.S3FileSystem: options are looked up by its protocols
        protocol = ("s3", "s3a")

    assert apply_config(S3, {}, conf) == secret


@pytest.mark.parametrize("extra, field", [
    ({"storageSecret": {"name": "x", "protocol": "ftp"}}, "storageSecret.protocol"),
    ({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, "servers[mlserver].volumeMounts"),
    ({"volumes": [{"name": "cache", "emptyDir": {}}]}, "servers[mlserver].volumes"),
])
def test_bad_storage_settings_name_the_field(extra, field):
    with pytest.raises((SpecError, ValueError), match=field.replace("[", r"\[").replace(
            "]", r"\]").replace(".", r"\.")):
        render_values("staging", with_server("staging", **extra))


@pytest.fixture
def stacks(tmp_path):
    out = tmp_path / "stacks"
    shutil.copytree(STACKS, out)
    return out


def test_promote_refuses_another_clouds_uri_naming_model_uri_and_stack(stacks):
    path = stacks / "Pulumi.prod-aws.yaml"
    data = yaml.safe_load(path.read_text())
    data["config"].pop("core2:storageUriMap")
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PromoteError) as err:
        promote("iris-ab", "staging", ["prod-aws"], stacks)
    message = str(err.value)
    for part in ("'prod-aws'", "model iris", "gs://core2-models/iris-sklearn/v2",
                 "core2:storageUriMap"):
        assert part in message
    assert yaml.safe_load(path.read_text()) == data  # nothing written


def test_promote_maps_the_uri_per_target_stack(stacks):
    promote("iris-ab", "staging", ["prod-aws", "prod-gcp", "onprem"], stacks)
    uris = {s: {m["name"]: m["spec"]["storageUri"] for m in yaml.safe_load(
        (stacks / f"Pulumi.{s}.yaml").read_text())["config"]["core2:models"]}["iris"]
        for s in ("prod-aws", "prod-gcp", "onprem")}
    assert uris == {"prod-aws": "s3://core2-models-eu-west-1/iris-sklearn/v2",
                    "prod-gcp": "gs://core2-models/iris-sklearn/v2",
                    "onprem": "s3://models/iris-sklearn/v2"}


def test_the_image_carries_every_artifact_store_backend():
    from infra.config import ROOT

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ARG EXTRAS="s3,gcs,azure"' in dockerfile
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert all("==" in extras[e][0] for e in ("s3", "gcs", "azure"))  # pinned
