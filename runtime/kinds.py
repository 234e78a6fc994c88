"""Seldon's four resource kinds and the states the scheduler reports, defined once.

`Kind` is a StrEnum, so "Model" and Kind.MODEL are the same key everywhere (CLI arguments,
manifests, dict lookups); it also knows its protobuf value and its CR plural.
"""

import json
from enum import StrEnum

from runtime.pb import scheduler_pb2


class Kind(StrEnum):
    # declared in the order a resync applies them: servers first, experiments last
    SERVER = "Server"
    MODEL = "Model"
    PIPELINE = "Pipeline"
    EXPERIMENT = "Experiment"

    @property
    def pb(self) -> scheduler_pb2.Kind:
        """The scheduler API's enum value (scheduler.proto `Kind`)."""
        return scheduler_pb2.Kind.Value(self.name)  # type: ignore[return-value]  # stub: int

    @property
    def plural(self) -> str:
        """The custom resource's plural (`models`), as kubectl and RBAC rules name it."""
        return self.value.lower() + "s"

    @classmethod
    def of(cls, value: "str | int") -> "Kind":
        """The Kind of a name ("Model") or a protobuf value (pb.MODEL); ValueError if none."""
        if isinstance(value, int):
            return cls[scheduler_pb2.Kind.Name(value)]
        return cls(value)


# A resource in one of these has failed; the status reason says why.
FAILED = frozenset({"ModelFailed", "PipelineFailed"})
# Failing, but only for as long as it lasts: a model may be unschedulable until its server's
# replicas connect; an experiment waits for members that may be created next.
RETRIED = frozenset({"ScheduleFailed", "ExperimentWaiting"})
# The scheduler has let the resource go (or is about to: TERMINATING).
GONE = frozenset({"ModelTerminated", "PipelineTerminated", "Terminated"})
TERMINATING = frozenset({"ModelTerminating", "PipelineTerminating"})
# The state a resource of each kind reports once it is deleted (Terminated for the others).
TERMINATED = {Kind.MODEL: "ModelTerminated", Kind.PIPELINE: "PipelineTerminated"}
# The state each kind reports when it is ready (what `status -w` waits for by default).
READY = {Kind.MODEL: "ModelAvailable", Kind.PIPELINE: "PipelineReady",
         Kind.EXPERIMENT: "ExperimentReady", Kind.SERVER: "Ready"}


def terminated(kind: "Kind | int") -> str:
    """The state the scheduler reports for a deleted resource of `kind` (a Kind or pb value)."""
    return TERMINATED.get(Kind.of(kind), "Terminated")


def models_missing(status: scheduler_pb2.ResourceStatus) -> bool:
    """A pipeline waiting for models the scheduler does not have (it may be loaded before
    them): retried like ScheduleFailed, since they may be created next."""
    return status.kind == scheduler_pb2.PIPELINE and bool(status.detail_json) and \
        bool(json.loads(status.detail_json).get("modelsMissing"))


def retried(status: scheduler_pb2.ResourceStatus) -> bool:
    return status.state in RETRIED or models_missing(status)
