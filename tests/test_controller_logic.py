"""The controller's decisions without a cluster: the work queue's guarantees, the status it
writes from a scheduler status, and a reconcile against fakes (diff-based apply, refusals,
one namespace owning a name)."""

import json
import threading
import time
from pathlib import Path

from runtime.client import SchedulerError
from runtime.controller import status
from runtime.controller.kube import FINALIZER
from runtime.controller.reconcile import Reconciler, desired
from runtime.controller.workqueue import WorkQueue
from runtime.pb import scheduler_pb2 as pb


def test_a_key_queued_twice_is_worked_once_and_never_by_two_workers():
    q = WorkQueue()
    q.add("a")
    q.add("a")
    assert q.get() == "a"
    q.add("a")  # changed while being worked: handed out again only after done()
    got: list = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    t.join(0.2)
    assert got == []
    q.done("a")
    t.join(2)
    assert got == ["a"]
    q.done("a")
    q.close()
    assert q.get() is None


def test_add_after_hands_the_key_out_once_due():
    q = WorkQueue()
    started = time.monotonic()
    q.add_after("k", 0.2)
    assert q.get() == "k" and time.monotonic() - started >= 0.19


def _model_status(ready: bool, state: str, reason: str = "", available: int = 1,
                  version: int = 1) -> pb.ResourceStatus:
    return pb.ResourceStatus(kind=pb.MODEL, name="iris", version=version, state=state,
                             reason=reason, ready=ready, updated_unix_ms=1,
                             versions=[pb.VersionStatus(version=version, state=state,
                                                        available_replicas=available)])


def test_status_has_seldons_conditions_and_keeps_transition_times():
    ready = status.render("Model", {"replicas": 2}, None,
                          _model_status(True, "ModelAvailable", available=2), None, 3)
    conds = {c["type"]: c for c in ready["conditions"]}
    assert conds["ModelReady"]["status"] == conds["Ready"]["status"] == "True"
    assert ready["observedGeneration"] == 3 and ready["availableReplicas"] == 2
    assert ready["replicas"] == 2 and ready["modelVersion"] == 1
    # the same inputs again: nothing to write
    assert status.same(status.render("Model", {"replicas": 2}, ready,
                                      _model_status(True, "ModelAvailable", available=2),
                                      None, 3), ready)

    refused = status.render("Model", {}, ready, None, "memory: too much", 4)
    cond = next(c for c in refused["conditions"] if c["type"] == "ModelReady")
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False", status.REFUSED, "memory: too much")
    assert not status.same(refused, ready)


def test_experiment_status_shows_candidates_and_mirror():
    s = pb.ResourceStatus(kind=pb.EXPERIMENT, name="ab", state="ExperimentWaiting",
                          reason="waiting for model(s) b to be ready", ready=False,
                          detail_json=json.dumps({"candidatesReady": False,
                                                  "mirrorReady": True}))
    conds = {c["type"]: c for c in status.render("Experiment", {}, None, s, None, 1)[
        "conditions"]}
    assert conds["CandidatesReady"]["status"] == "False"
    assert conds["MirrorReady"]["status"] == "True"
    assert conds["Ready"]["message"] == "waiting for model(s) b to be ready"


def test_a_relative_storage_uri_is_taken_from_the_storage_base(tmp_path):
    spec = {"storageUri": "./models/iris", "requirements": ["sklearn"]}
    assert desired("Model", spec, tmp_path)["storageUri"] == str(tmp_path / "models/iris")
    for uri in ("gs://b/iris", "/abs/iris"):
        assert desired("Model", {**spec, "storageUri": uri}, tmp_path)["storageUri"] == uri


class FakeKube:
    def __init__(self):
        self.statuses: list[dict] = []

    def set_finalizers(self, obj, finalizers):
        obj["metadata"]["finalizers"] = finalizers
        return obj

    def write_status(self, obj, new):
        obj["status"] = new
        self.statuses.append(new)


class FakeScheduler:
    def __init__(self, refuse: str | None = None):
        self.held: dict[str, pb.ResourceStatus] = {}
        self.applies, self.refuse = 0, refuse

    def get(self, kind, name):
        return self.held.get(name)

    def apply(self, kind, name, spec_json):
        if self.refuse:
            raise SchedulerError(self.refuse, invalid=True)
        self.applies += 1
        s = _model_status(True, "ModelAvailable")
        s.spec_json = spec_json
        self.held[name] = s
        return s


def _cr(ns: str) -> dict:
    return {"kind": "Model", "metadata": {"name": "iris", "namespace": ns, "generation": 1,
                                          "finalizers": [FINALIZER]},
            "spec": {"storageUri": "gs://b/iris"}}


def test_reconcile_applies_only_a_diff_and_shows_refusals():
    kube, scheduler = FakeKube(), FakeScheduler()
    rec = Reconciler(kube, scheduler, Path("/"))
    obj = _cr("a")
    rec.reconcile(("Model", "a", "iris"), obj, "a")
    assert scheduler.applies == 1
    restarted = Reconciler(kube, scheduler, Path("/"))  # a new controller: nothing re-applied
    restarted.reconcile(("Model", "a", "iris"), obj, "a")
    assert scheduler.applies == 1

    refusing = Reconciler(kube, FakeScheduler(refuse="requirements: no server has gpu"))
    out = refusing.reconcile(("Model", "a", "iris"), _cr("a"), "a")
    assert out.retry is not None
    cond = next(c for c in kube.statuses[-1]["conditions"] if c["type"] == "ModelReady")
    assert cond["reason"] == status.REFUSED and "no server has gpu" in cond["message"]


def test_a_name_served_from_another_namespace_is_refused_there():
    kube, scheduler = FakeKube(), FakeScheduler()
    Reconciler(kube, scheduler).reconcile(("Model", "b", "iris"), _cr("b"), "a")
    assert scheduler.applies == 0
    cond = kube.statuses[-1]["conditions"][0]
    assert cond["reason"] == status.REFUSED and "namespace 'a'" in cond["message"]
