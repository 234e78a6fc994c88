"""Feedback through a pipeline reaches the pipeline's adaptive experiment (real Envoy,
pipeline gateway, broker), and every accepted feedback is on the feedback topic."""

import json

import httpx
from confluent_kafka import Consumer, TopicPartition

from runtime.kafka import KafkaConfig
from tests.conftest import SAMPLES, wait_for

X = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
ANSWERS = {110.0: "chain", 20.0: "chain2"}  # add10 then mul10, or the other way round


def _candidates(env) -> dict[str, dict]:
    [status] = env.scheduler.status("Experiment", "pab")
    return json.loads(status.detail_json)["candidates"]


def _topic_records(bootstrap: str) -> list[dict]:
    cfg = KafkaConfig(bootstrap=bootstrap)
    consumer = Consumer(cfg.consumer(None))
    try:
        consumer.assign([TopicPartition(cfg.feedback(), 0, 0)])
        out = []
        while (msg := consumer.poll(2.0)) is not None:
            if not msg.error():
                out.append(json.loads(msg.value()))
        return out
    finally:
        consumer.close()


def test_pipeline_feedback_reaches_the_pipelines_experiment(make_env):
    env = make_env(pipelines=True)
    for name in ("add10", "mul10"):
        env.load_model(name, SAMPLES / "models" / name, requirements=["mlserver"])
    for name, (first, second) in {"chain": ("add10", "mul10"),
                                  "chain2": ("mul10", "add10")}.items():
        env.scheduler.apply("Pipeline", name, json.dumps({
            "steps": [{"name": first}, {"name": second, "inputs": [first]}],
            "output": {"steps": [second]}}))
        env.scheduler.wait("Pipeline", name, timeout=90)
    env.scheduler.apply("Experiment", "pab", json.dumps({
        "default": "chain", "resourceType": "pipeline",
        "candidates": [{"name": "chain", "weight": 1}, {"name": "chain2", "weight": 1}],
        "strategy": {"type": "thompson", "seed": 1, "updateIntervalMs": 200}}))
    env.scheduler.wait("Experiment", "pab", timeout=60)
    rated = 0
    with httpx.Client(base_url=env.url, timeout=60) as client:
        def infer() -> tuple[str, str]:
            r = client.post("/v2/pipelines/chain/infer", json=X)
            assert r.status_code == 200, r.text
            return ANSWERS[r.json()["outputs"][0]["data"][0]], r.headers["x-request-id"]

        # Ready: Envoy may still route by the pipeline's own route for a moment
        wait_for(lambda: infer() and sum(c["pulls"] for c in _candidates(env).values()), 30,
                 "experiment routing")
        for _ in range(40):
            served, rid = infer()
            r = client.post("/v2/pipelines/chain/feedback",
                            json={"request_id": rid, "reward": float(served == "chain2")})
            assert r.status_code == 200, r.text
            assert r.json()["candidate"] == served and r.json()["experiment"] == "pab"
            rated += 1
    wait_for(lambda: _candidates(env)["chain2"]["weight"] >= 80, 30, "chain2 favoured")
    stats = _candidates(env)
    assert sum(c["rewards"] for c in stats.values()) == rated
    assert stats["chain2"]["meanReward"] == 1.0 and stats["chain"]["meanReward"] == 0.0
    records = wait_for(lambda: len(r := _topic_records(env.platform.kafka_bootstrap)) == rated
                       and r, 60, "feedback on its topic")
    assert {r["experiment"] for r in records} == {"pab"}
    assert {r["called"] for r in records} == {"chain.pipeline"}
