"""Volume claims of a StatefulSet changed without replacing it.

A StatefulSet's `volumeClaimTemplates` cannot be updated, so Pulumi would delete and recreate
the StatefulSet for a new cache size or storage class: every replica down at once, and (for
the scheduler) the pod restarted on its retained state only by luck of names. Instead the
StatefulSet ignores changes to its templates, and a `ClaimGuard` beside it remembers the claims
it was given:
- a larger size: the guard resizes every existing claim of the StatefulSet in place (the
  storage class must allow volume expansion; the API server says so if it does not);
- a smaller size, another storage class, or a claim added or removed: refused at preview
  (`check` sees the old inputs), with what to do instead.
Cluster access for the resize comes from the stack's `kubeconfig`/`context` config, read when
the provider is configured, so no credential is kept in the guard's state.
"""

import os
import re

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ResourceProvider,
    UpdateResult,
)

from runtime.specs.common import SpecError, parse_quantity

IGNORED = "spec.volumeClaimTemplates"
WHAT_TO_DO = {
    "server": "Keep the old value, or add a server under a new name with the new setting, "
              "move the models to it (their `server` or requirements), then remove this one.",
    "scheduler": "Keep the old value: the scheduler's state lives on the existing volume, "
                 "which a StatefulSet cannot move to another class or a smaller size; only a "
                 "larger size is applied (in place).",
}


def claim_summary(statefulset: dict) -> list[dict]:
    """[{name, size, storageClass}] of a rendered StatefulSet's claim templates."""
    return [{"name": c["metadata"]["name"],
             "size": c["spec"]["resources"]["requests"]["storage"],
             "storageClass": c["spec"].get("storageClassName") or ""}
            for c in statefulset["spec"].get("volumeClaimTemplates") or []]


def _size(value: str) -> int:
    try:
        return parse_quantity(value)
    except SpecError:
        return -1


def refusals(olds: dict, news: dict) -> list[str]:
    """Why the claims cannot go from `olds` to `news` in place (empty: they can)."""
    if not olds or (olds.get("statefulset"), olds.get("namespace")) != (
            news.get("statefulset"), news.get("namespace")):
        return []  # a new StatefulSet: nothing to keep
    field, sts = news["field"], f"{news['namespace']}/{news['statefulset']}"
    old = {c["name"]: c for c in olds.get("claims") or []}
    new = {c["name"]: c for c in news.get("claims") or []}
    recreate = WHAT_TO_DO.get(news.get("owner") or "server", WHAT_TO_DO["server"])
    out = []
    if set(old) != set(new):
        had = "a volume" if old else "no volume (emptyDir)"
        out.append(f"{field}: {sts} was created with {had}; a StatefulSet's volume claims "
                   f"cannot be added or removed in place. {recreate}")
        return out
    for name, o in old.items():
        n = new[name]
        if o["storageClass"] != n["storageClass"]:
            out.append(f"{field}: the storage class of {sts}'s {name!r} volumes cannot change "
                       f"in place ({o['storageClass'] or 'cluster default'} -> "
                       f"{n['storageClass'] or 'cluster default'}). {recreate}")
        elif _size(n["size"]) < _size(o["size"]):
            out.append(f"{field}: {sts}'s {name!r} volumes cannot shrink ({o['size']} -> "
                       f"{n['size']}); Kubernetes only expands volumes. {recreate}")
    return out


def grown(olds: dict, news: dict) -> dict[str, str]:
    """{claim template name: new size} for claims that grow."""
    old = {c["name"]: c for c in olds.get("claims") or []}
    return {c["name"]: c["size"] for c in news.get("claims") or []
            if c["name"] in old and _size(c["size"]) > _size(old[c["name"]]["size"])}


def claim_names(template: str, statefulset: str, existing: list[str]) -> list[str]:
    """The claims a StatefulSet made from `template`: <template>-<statefulset>-<ordinal>."""
    pattern = re.compile(rf"^{re.escape(template)}-{re.escape(statefulset)}-\d+$")
    return sorted(n for n in existing if pattern.match(n))


class ClaimGuardProvider(ResourceProvider):
    """Holds no state of its own: the cluster is reached with the stack config's kubeconfig."""

    kubeconfig: str | None = None
    context: str | None = None

    def configure(self, req: ConfigureRequest) -> None:
        kubeconfig = req.config.get("kubeconfig")
        if kubeconfig and "\n" not in kubeconfig:
            kubeconfig = os.path.expanduser(kubeconfig)
        self.kubeconfig = kubeconfig or None
        self.context = req.config.get("context") or None

    def check(self, olds: dict, news: dict) -> CheckResult:
        return CheckResult(news, [CheckFailure("claims", r) for r in refusals(olds, news)])

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replace = [k for k in ("statefulset", "namespace") if olds.get(k) != news.get(k)]
        changed = replace or olds.get("claims") != news.get("claims")
        return DiffResult(changes=bool(changed), replaces=replace,
                          delete_before_replace=False)

    def create(self, props: dict) -> CreateResult:
        # the StatefulSet creates its claims; the guard only remembers what they were
        return CreateResult(f"{props['namespace']}/{props['statefulset']}", props)

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        sizes = grown(olds, news)
        if sizes:
            self.resize(news, sizes)
        return UpdateResult(news)

    def resize(self, props: dict, sizes: dict[str, str]) -> None:
        ns, sts = props["namespace"], props["statefulset"]
        if not self.kubeconfig:
            commands = "; ".join(
                f"kubectl -n {ns} patch pvc {t}-{sts}-<ordinal> -p "
                f"'{{\"spec\":{{\"resources\":{{\"requests\":{{\"storage\":\"{size}\"}}}}}}}}'"
                for t, size in sizes.items())
            raise RuntimeError(f"{props['field']}: resizing {ns}/{sts}'s volumes needs cluster "
                               f"access (stack config `kubeconfig`); resize them yourself: "
                               f"{commands}")
        from kubernetes import client

        from components.portforward import api_client

        core = client.CoreV1Api(api_client(self.kubeconfig, self.context))
        existing = [c.metadata.name for c in
                    core.list_namespaced_persistent_volume_claim(ns).items
                    if c.metadata and c.metadata.name]
        for template, size in sizes.items():
            for claim in claim_names(template, sts, existing):
                try:
                    core.patch_namespaced_persistent_volume_claim(
                        claim, ns, {"spec": {"resources": {"requests": {"storage": size}}}})
                except client.ApiException as e:
                    raise RuntimeError(
                        f"{props['field']}: resizing {ns}/{claim} to {size} was refused "
                        f"({e.reason}: {e.body}); the storage class must set "
                        "allowVolumeExpansion, or keep the old size") from None

    def delete(self, _id: str, _props: dict) -> None:
        pass  # the claims belong to the StatefulSet (and its retention policy)


class ClaimGuard(pulumi.dynamic.Resource, module="core2", name="ClaimGuard"):
    def __init__(self, resource_name: str, statefulset: dict, field: str,
                 opts: pulumi.ResourceOptions | None = None, owner: str = "server"):
        props = {"statefulset": statefulset["metadata"]["name"],
                 "namespace": statefulset["metadata"]["namespace"],
                 "field": field, "owner": owner, "claims": claim_summary(statefulset)}
        super().__init__(ClaimGuardProvider(), resource_name, props, opts)
