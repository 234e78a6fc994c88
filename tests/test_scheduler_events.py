"""Typed scheduler events (fast layer, a real in-process Scheduler with agents that never
answer): a model change reaches the status streams of the pipelines and experiments that
follow the model, and no others; following changes with their specs and ends with them."""

import asyncio

from runtime.pb import scheduler_pb2 as pb
from runtime.scheduler import state as st
from runtime.scheduler.core import EVENTS, Scheduler
from runtime.scheduler.events import Bus, ModelChanged
from runtime.scheduler.store import Store
from runtime.scheduler.xds import XdsServer
from runtime.specs import ExperimentSpec, ModelSpec
from runtime.specs.pipeline import PipelineSpec


class NoEnvoy(XdsServer):
    async def wait_applied(self, generation: int, timeout: float = 0) -> bool:
        return True


def _model(name: str, replicas: int = 1) -> ModelSpec:
    return ModelSpec(storageUri=f"/m/{name}", requirements=["sklearn"], replicas=replicas)


def _pipeline(*steps: str) -> PipelineSpec:
    return PipelineSpec.model_validate({"steps": [{"name": s} for s in steps]})


def _experiment(*candidates: str, kind: str = "model") -> ExperimentSpec:
    return ExperimentSpec.model_validate({"resourceType": kind, "candidates": [
        {"name": c, "weight": 50} for c in candidates]})


class Heard:
    """Names each kind's status stream (all names) was woken for."""

    def __init__(self, sched: Scheduler):
        self.names: dict[int, list[str]] = {pb.PIPELINE: [], pb.EXPERIMENT: []}
        for kind, names in self.names.items():
            sched.bus.subscribe(EVENTS[kind], lambda e, names=names: names.append(e.name))

    def take(self) -> dict[int, set[str]]:
        out = {kind: set(names) for kind, names in self.names.items()}
        for names in self.names.values():
            names.clear()
        return out


def _scheduler(tmp_path) -> Scheduler:
    sched = Scheduler(Store(tmp_path), NoEnvoy(), replica_lost_after_s=3600)
    sched.models.connect(st.Replica("mlserver", 0, ["sklearn"], 2**40, 0, "127.0.0.1",
                                    1, 2, 3, 4), set(), set())
    for m in ("a", "b", "c"):
        sched.models.apply(m, _model(m))
    return sched


def test_a_model_change_reaches_only_the_pipelines_and_experiments_that_follow_it(tmp_path):
    async def run():
        sched = _scheduler(tmp_path)
        sched.pipelines.apply("pa", _pipeline("a", "b"))
        sched.pipelines.apply("pc", _pipeline("c"))
        sched.experiments.apply("ea", _experiment("a", "c"))
        sched.experiments.apply("eb", _experiment("b", "c"))
        sched.experiments.apply("ep", _experiment("pa", "pc", kind="pipeline"))
        heard = Heard(sched)

        sched.models.apply("a", _model("a", replicas=2))
        # pa follows a; ea has it as a candidate; ep follows pa, a pipeline
        assert heard.take() == {pb.PIPELINE: {"pa"}, pb.EXPERIMENT: {"ea", "ep"}}
        sched.models.apply("c", _model("c", replicas=2))
        assert heard.take() == {pb.PIPELINE: {"pc"}, pb.EXPERIMENT: {"ea", "eb", "ep"}}

        # a new spec: pa follows only c now; a deleted experiment follows nothing
        sched.pipelines.apply("pa", _pipeline("c"))
        sched.experiments.delete("ea")
        heard.take()
        sched.models.apply("a", _model("a", replicas=1))
        assert heard.take() == {pb.PIPELINE: set(), pb.EXPERIMENT: set()}
        sched.pipelines.delete("pc")
        assert heard.take() == {pb.PIPELINE: {"pc"}, pb.EXPERIMENT: {"ep"}}
        sched.store.close()

    asyncio.run(run())


def test_followers_come_back_after_a_restart(tmp_path):
    async def run():
        sched = _scheduler(tmp_path)
        sched.pipelines.apply("pa", _pipeline("a"))
        sched.experiments.apply("eb", _experiment("b"))
        sched.store.close()
        again = Scheduler(Store(tmp_path), NoEnvoy(), replica_lost_after_s=3600)
        heard = Heard(again)
        again.models.connect(st.Replica("mlserver", 0, ["sklearn"], 2**40, 0, "127.0.0.1",
                                        1, 2, 3, 4), set(), set())
        heard.take()
        again.models.apply("b", _model("b", replicas=2))
        again.models.apply("a", _model("a", replicas=2))
        assert heard.take() == {pb.PIPELINE: {"pa"}, pb.EXPERIMENT: {"eb"}}
        [status] = again.status(pb.PIPELINE, "pa")
        assert status.updated_unix_ms > 0  # moved by its step model's change
        again.store.close()

    asyncio.run(run())


def test_a_named_subscription_hears_its_name_only_until_it_unsubscribes():
    bus, heard = Bus(), []
    stop = bus.subscribe(ModelChanged, lambda e: heard.append(e.name), "iris")
    bus.publish(ModelChanged("iris"))
    bus.publish(ModelChanged("other"))
    stop()
    bus.publish(ModelChanged("iris"))
    assert heard == ["iris"] and bus.delivered == 1
