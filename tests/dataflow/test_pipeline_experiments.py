"""Experiments over pipelines through the real Envoy: a mirrored pipeline request gets its own
request id (the pipeline gateway holds one request per id in flight), and a sticky client may
send back Seldon's `x-seldon-route` with its steps' labels in it."""

import json

import httpx

from runtime.specs.manifest import load_file
from tests.conftest import wait_for
from tests.dataflow.conftest import ROOT, outputs_of, tensor

CHAIN = {"steps": [{"name": "add10"}, {"name": "mul10", "inputs": ["add10"]}],
         "output": {"steps": ["mul10"]}}
X = {"inputs": [tensor("x", [1.0])]}


def _pipelines(make_env):
    env = make_env(pipelines=True)
    for r in load_file(ROOT / "samples/pipelines/models.yaml"):
        if r.name in ("add10", "mul10"):
            env.scheduler.apply_resource(r)
    for name in ("add10", "mul10"):
        env.scheduler.wait("Model", name, timeout=90)
    for name in ("chain", "chain2"):
        env.scheduler.apply("Pipeline", name, json.dumps(CHAIN))
        assert env.scheduler.wait("Pipeline", name, timeout=90).state == "PipelineReady"
    return env


def _answered_ids(env, pipeline: str) -> set[str]:
    from runtime.cli.inspect import read_records
    from runtime.kafka import KafkaConfig

    cfg = KafkaConfig(bootstrap=env.platform.kafka_bootstrap)
    return {r.key for r in read_records(cfg, [cfg.pipeline_outputs(pipeline)], pipeline,
                                        last=10_000)}


def test_pipeline_mirror_and_seldon_sticky_header(make_env):
    env = _pipelines(make_env)
    env.scheduler.apply("Experiment", "pex", json.dumps({
        "resourceType": "pipeline", "candidates": [{"name": "chain", "weight": 100}],
        "mirror": {"name": "chain2", "percent": 100}}))
    env.scheduler.wait("Experiment", "pex", timeout=60)
    ids = set()
    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            r = client.post(f"{env.url}/v2/models/pex/infer", json=X,
                            headers={"seldon-model": "pex.experiment"})
            assert r.status_code == 200, r.text  # not 409: the copy has its own request id
            assert outputs_of(r) == {"OUTPUT": [110.0]}
            assert r.headers["x-seldon-route"] == ":chain.pipeline:"
            ids.add(r.headers["x-request-id"])
    # the mirror pipeline ran a copy of each, under the request's id + "-mirror"
    wait_for(lambda: {f"{i}-mirror" for i in ids} <= _answered_ids(env, "chain2"), 30,
             "the mirror pipeline's copies")

    env.scheduler.apply("Experiment", "pex", json.dumps({
        "resourceType": "pipeline", "candidates": [{"name": "chain", "weight": 50},
                                                   {"name": "chain2", "weight": 50}]}))
    seen = set()
    with httpx.Client(timeout=30) as client:
        def answer(headers):
            r = client.post(f"{env.url}/v2/models/pex/infer", json=X,
                            headers={"seldon-model": "pex.experiment", **headers})
            assert r.status_code == 200, r.text
            return r.headers["x-seldon-route"]

        wait_for(lambda: seen.add(answer({})) or len(seen) == 2, 60, "both candidates")
        # what a Seldon client sends back: the steps' labels and the pipeline's
        for _ in range(20):
            assert answer({"x-seldon-route": ":add10_1: :mul10_1: :chain2.pipeline:"}) == \
                ":chain2.pipeline:"
