"""The controller's side of the Kubernetes API: Seldon's custom resources (list, watch,
finalizers, status) and the Servers' StatefulSets, on the `kubernetes` client."""

import logging
from collections.abc import Callable, Iterator
from typing import cast

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from runtime.controller.crds import GROUP, VERSION
from runtime.kinds import Kind

log = logging.getLogger(__name__)
KINDS = tuple(k.value for k in Kind)  # Server, Model, Pipeline, Experiment: resync order
FINALIZER = "mlops.seldon.io/finalizer"  # Seldon's: the scheduler unloads before the CR goes
MERGE = "application/merge-patch+json"
OWNED_BY_PULUMI = ("app.kubernetes.io/managed-by", "pulumi")
# on a StatefulSet Pulumi made for an autoscaled server (components.Server `autoscaling`):
# its replicas are the scheduler's count all the same, and Pulumi ignores changes to them
REPLICAS_FROM = ("core2.io/replicas-from", "scheduler")
WATCH_TIMEOUT_S = 300  # a watch is re-opened (from its resourceVersion) this often


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class Kube:
    def __init__(self, api: client.ApiClient, field_manager: str):
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.manager = field_manager

    # ---- custom resources ------------------------------------------------------------------
    def objects(self, kind: str, namespace: str) -> tuple[list[dict], str]:
        """Every object of a kind in a namespace ("" = all) and the list's resourceVersion."""
        plural = Kind(kind).plural
        out: dict = cast(dict, self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural) if namespace else
            self.custom.list_cluster_custom_object(GROUP, VERSION, plural))
        return out.get("items", []), out["metadata"]["resourceVersion"]

    def watch(self, kind: str, namespace: str, resource_version: str,
              stop: Callable[[], bool]) -> Iterator[tuple[str, dict]]:
        """(event type, object) from a resourceVersion on; raises Gone when it is too old."""
        w = watch.Watch()
        args: tuple = (GROUP, VERSION, namespace, Kind(kind).plural) if namespace else \
            (GROUP, VERSION, Kind(kind).plural)
        fn = self.custom.list_namespaced_custom_object if namespace else \
            self.custom.list_cluster_custom_object
        try:
            for event in w.stream(fn, *args, resource_version=resource_version,
                                  allow_watch_bookmarks=True, timeout_seconds=WATCH_TIMEOUT_S):
                if stop():
                    return
                obj = event["object"]
                if event["type"] == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                yield event["type"], obj
        except ApiException as e:
            if e.status == 410:
                raise Gone() from None
            raise
        finally:
            w.stop()

    def set_finalizers(self, obj: dict, finalizers: list[str]) -> dict:
        """Write metadata.finalizers, guarded by the resourceVersion we read (409 if stale)."""
        meta = obj["metadata"]
        body = {"metadata": {"finalizers": finalizers or None,
                             "resourceVersion": meta["resourceVersion"]}}
        return cast(dict, self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], Kind(obj["kind"]).plural, meta["name"], body,
            field_manager=self.manager, _content_type=MERGE))

    def write_status(self, obj: dict, status: dict) -> dict:
        meta = obj["metadata"]
        return cast(dict, self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], Kind(obj["kind"]).plural, meta["name"],
            {"status": status}, field_manager=self.manager, _content_type=MERGE))

    # ---- a Server's StatefulSet ------------------------------------------------------------
    def scale_server(self, namespace: str, name: str, replicas: int) -> tuple[bool, str]:
        """Make the Server's StatefulSet run `replicas` pods, unless Pulumi owns its replica
        count (components.Server, whose HPA or stack config decides; not with `autoscaling`,
        which marks it REPLICAS_FROM). (ok, message)."""
        try:
            sts = self.apps.read_namespaced_stateful_set(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return False, f"no StatefulSet {namespace}/{name}"
            raise
        label, value = OWNED_BY_PULUMI
        key, source = REPLICAS_FROM
        meta = sts.metadata
        labels, notes = (meta.labels, meta.annotations) if meta else (None, None)
        if (labels or {}).get(label) == value and (notes or {}).get(key) != source:
            return True, "replicas owned by Pulumi (components.Server)"
        if sts.spec.replicas != replicas:
            self.apps.patch_namespaced_stateful_set_scale(
                name, namespace, {"spec": {"replicas": replicas}}, field_manager=self.manager,
                _content_type=MERGE)
            log.info("server %s/%s: StatefulSet scaled to %d", namespace, name, replicas)
        return True, f"StatefulSet at {replicas} replicas"
