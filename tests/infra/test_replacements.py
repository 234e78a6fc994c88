"""Changes that must not delete and recreate a server pool or the scheduler: claim templates
are kept (ignore_changes) and guarded - grown in place, refused otherwise with what to do."""

import json

import pytest

from components import claims
from infra.config import stack_values
from tests.infra.harness import STACKS, render_values

GUARD = "pulumi-python:dynamic/core2:ClaimGuard"


def values(stack: str, **changes) -> dict:
    out = json.loads(json.dumps(stack_values(STACKS / f"Pulumi.{stack}.yaml")))
    return {**out, **changes}


def guards(render) -> dict[str, dict]:
    return {r.inputs["statefulset"]: r.inputs for r in render.of_type(GUARD)}


def test_statefulsets_keep_their_claim_templates_and_each_has_a_guard():
    render = render_values("prod-aws", values("prod-aws"))
    statefulsets = [r for r in render.of_type("kubernetes:apps/v1:StatefulSet")]
    assert {r.inputs["metadata"]["name"] for r in statefulsets} == {
        "scheduler", "mlserver", "triton-gpu"}
    for r in statefulsets:
        assert r.ignore_changes == [claims.IGNORED], r.name
    found = guards(render)
    assert found["scheduler"]["claims"] == [
        {"name": "state", "size": "5Gi", "storageClass": "gp3"}]
    assert found["mlserver"]["claims"] == [
        {"name": "cache", "size": "20Gi", "storageClass": "gp3"}]


def _servers(stack: str, **server) -> list[dict]:
    cfg = values(stack)
    return [{**cfg["servers"][0], **server}, *cfg["servers"][1:]]


def _check(old_cfg: dict, new_cfg: dict, statefulset: str) -> list:
    old = guards(render_values("prod-aws", old_cfg))[statefulset]
    new = guards(render_values("prod-aws", new_cfg))[statefulset]
    return claims.ClaimGuardProvider().check(old, new).failures


def test_a_larger_cache_is_accepted_and_a_smaller_one_refused_naming_the_field():
    base = values("prod-aws")
    assert _check(base, values("prod-aws", servers=_servers("prod-aws", cacheSize="40Gi")),
                  "mlserver") == []
    (failure,) = _check(base, values("prod-aws", servers=_servers("prod-aws",
                                                                 cacheSize="10Gi")), "mlserver")
    assert "servers[mlserver].cacheSize" in failure.reason and "cannot shrink" in failure.reason
    assert "add a server under a new name" in failure.reason  # what to do instead


def test_another_storage_class_or_dropping_the_cache_volume_is_refused():
    base = values("prod-aws")
    failures = _check(base, values("prod-aws", storageClass="io2"), "scheduler")
    (failure,) = failures
    assert "schedulerStorage" in failure.reason and "gp3 -> io2" in failure.reason
    (dropped,) = _check(base, values("prod-aws", servers=_servers("prod-aws", cacheSize=None)),
                        "mlserver")
    assert "created with a volume" in dropped.reason and "cannot be added or removed" in \
        dropped.reason


def test_a_renamed_server_is_a_new_pool_and_not_refused():
    provider = claims.ClaimGuardProvider()
    old = {"statefulset": "a", "namespace": "ns", "field": "f", "owner": "server",
           "claims": [{"name": "cache", "size": "20Gi", "storageClass": "x"}]}
    new = {**old, "statefulset": "b", "claims": []}
    assert provider.check(old, new).failures == []
    assert provider.diff("ns/a", old, new).replaces == ["statefulset"]


class FakeCore:
    def __init__(self, names):
        self.names, self.patched = names, []

    def list_namespaced_persistent_volume_claim(self, namespace):
        item = type("Claim", (), {})
        out = []
        for n in self.names:
            c = item()
            c.metadata = type("Meta", (), {"name": n})()
            out.append(c)
        return type("List", (), {"items": out})()

    def patch_namespaced_persistent_volume_claim(self, name, namespace, body):
        self.patched.append((namespace, name, body["spec"]["resources"]["requests"]["storage"]))


def test_update_resizes_every_claim_of_the_statefulset_in_place(monkeypatch):
    from kubernetes import client

    import components.portforward

    core = FakeCore(["cache-mlserver-0", "cache-mlserver-1", "cache-mlserver-big-0",
                     "state-scheduler-0"])
    monkeypatch.setattr(client, "CoreV1Api", lambda _api: core)
    monkeypatch.setattr(components.portforward, "api_client", lambda k, c: object())
    provider = claims.ClaimGuardProvider()
    provider.kubeconfig = "/some/kubeconfig"
    old = {"statefulset": "mlserver", "namespace": "core2", "field": "servers[mlserver]",
           "owner": "server", "claims": [{"name": "cache", "size": "20Gi", "storageClass": ""}]}
    new = {**old, "claims": [{"name": "cache", "size": "40Gi", "storageClass": ""}]}
    provider.update("core2/mlserver", old, new)
    assert core.patched == [("core2", "cache-mlserver-0", "40Gi"),
                            ("core2", "cache-mlserver-1", "40Gi")]


def test_without_cluster_access_the_resize_error_says_what_to_run():
    provider = claims.ClaimGuardProvider()
    old = {"statefulset": "mlserver", "namespace": "core2", "field": "servers[mlserver]",
           "owner": "server", "claims": [{"name": "cache", "size": "20Gi", "storageClass": ""}]}
    new = {**old, "claims": [{"name": "cache", "size": "40Gi", "storageClass": ""}]}
    with pytest.raises(RuntimeError, match=r"kubectl -n core2 patch pvc cache-mlserver-"):
        provider.update("core2/mlserver", old, new)
