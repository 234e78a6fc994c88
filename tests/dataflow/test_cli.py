"""`core2 pipeline infer` and `core2 pipeline inspect` against the running dataflow."""

import json
import threading
import time
import uuid

from confluent_kafka import Producer

from runtime.cli import main
from runtime.cli.inspect import RECORD_LATE_S, RECORD_SETTLE_S, read_records
from runtime.kafka import H_PIPELINE, ensure_topics
from tests.dataflow.conftest import outputs_of, tensor


def run_cli(capsys, dataflow, *argv) -> tuple[int, str, str]:
    code = main(["--scheduler", dataflow.scheduler.address, "--inference", dataflow.url,
                 *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pipeline_infer_from_the_cli(capsys, dataflow):
    payload = json.dumps({"inputs": [tensor("x", [2.0])]})
    code, out, _ = run_cli(capsys, dataflow, "pipeline", "infer", "chain", payload)
    assert code == 0
    assert json.loads(out)["outputs"][0]["data"] == [120.0]


def test_inspect_shows_each_steps_inputs_and_outputs_for_a_request(capsys, dataflow):
    r = dataflow.infer("join", [tensor("x", [3.0])])
    assert outputs_of(r) == {"SUM": [43.0]}
    rid = r.headers["x-request-id"]
    code, out, err = run_cli(capsys, dataflow, "pipeline", "inspect", "join", "--request-id",
                             rid, "--kafka-bootstrap", dataflow.bootstrap)
    assert code == 0, err
    rows = {}
    for line in out.strip().splitlines():
        topic, key, value = line.split("\t")
        assert key == rid
        rows[topic.removeprefix("seldon.default.")] = {
            t["name"]: t["data"] for t in (json.loads(value).get("inputs")
                                           or json.loads(value)["outputs"])}
    assert rows == {
        "pipeline.join.inputs": {"x": [3.0]},
        "model.add10.inputs": {"x": [3.0]}, "model.add10.outputs": {"OUTPUT": [13.0]},
        "model.mul10.inputs": {"x": [3.0]}, "model.mul10.outputs": {"OUTPUT": [30.0]},
        "model.sum2.inputs": {"A": [13.0], "B": [30.0]}, "model.sum2.outputs": {"SUM": [43.0]},
        "pipeline.join.outputs": {"SUM": [43.0]},
    }
    code, out, _ = run_cli(capsys, dataflow, "pipeline", "inspect", "join.sum2.inputs.B",
                           "--request-id", rid, "--kafka-bootstrap", dataflow.bootstrap)
    topic, key, value = out.strip().split("\t")
    assert topic == "seldon.default.model.sum2.inputs" and json.loads(value)["data"] == [30.0]
    code, _, err = run_cli(capsys, dataflow, "pipeline", "inspect", "join.nope",
                           "--kafka-bootstrap", dataflow.bootstrap)
    assert code == 2 and "'nope' is not a step of join" in err


def test_inspect_waits_for_a_requests_record_that_is_late_on_one_topic(dataflow):
    """The CI once showed a join's last step but not its first steps: their records came in a
    produce request the broker answered late. A record on one topic and not yet on another is
    waited for beyond RECORD_SETTLE_S; a request no topic has is not."""
    cfg, rid = dataflow.kafka, uuid.uuid4().hex
    early, late = cfg.model_inputs("add10"), cfg.model_outputs("add10")
    producer = Producer(cfg.producer())
    producer.produce(early, key=rid, value=json.dumps({"inputs": []}),
                     headers=[(H_PIPELINE, "chain")])
    assert producer.flush(10) == 0

    def produce_late() -> None:
        time.sleep(RECORD_SETTLE_S * 2)   # the delay under test, not a wait for readiness
        producer.produce(late, key=rid, value=json.dumps({"outputs": []}),
                         headers=[(H_PIPELINE, "chain")])
        producer.flush(10)
    thread = threading.Thread(target=produce_late)
    thread.start()
    try:
        found = read_records(cfg, [early, late], "chain", rid)
    finally:
        thread.join()
    assert [r.topic for r in found] == [early, late]
    began = time.monotonic()
    assert read_records(cfg, [early, late], "chain", uuid.uuid4().hex) == []
    assert time.monotonic() - began < RECORD_LATE_S


def test_inspect_finds_a_record_behind_thousands_of_batches(dataflow):
    """One batch per record, as at low rates: the embedded broker, asked with the pipelines'
    2 ms fetch wait, answered nothing at 2,500 batches (the record was found after 90 s)."""
    cfg, rid = dataflow.kafka, uuid.uuid4().hex
    topic = f"{cfg.prefix}.{cfg.namespace}.inspect-{rid}"
    ensure_topics(cfg, [topic])
    producer = Producer(cfg.producer())
    for key in [uuid.uuid4().hex for _ in range(2500)] + [rid]:
        producer.produce(topic, key=key, value=json.dumps({"inputs": []}),
                         headers=[(H_PIPELINE, "chain")])
        producer.flush(10)   # a batch each
    began = time.monotonic()
    assert [r.key for r in read_records(cfg, [topic], "chain", rid, timeout=10)] == [rid]
    assert time.monotonic() - began < 10


def test_inspect_takes_seldons_offset_format_and_verbose_flags(capsys, dataflow):
    ids = []
    for x in (1.0, 2.0):
        r = dataflow.infer("chain", [tensor("x", [x])])
        ids.append(r.headers["x-request-id"])
    code, out, err = run_cli(capsys, dataflow, "pipeline", "inspect", "chain.outputs",
                             "--offset", "2", "--format", "json", "--verbose",
                             "--kafka-bootstrap", dataflow.bootstrap)
    assert code == 0, err
    (topic,) = json.loads(out)["topics"]
    assert topic["name"] == "seldon.default.pipeline.chain.outputs"
    assert [m["key"] for m in topic["msgs"]] == ids  # the last two, oldest first
    for m in topic["msgs"]:
        assert m["value"]["outputs"] and m["headers"]
        assert all(isinstance(v, list) for v in m["headers"].values())
    code, out, _ = run_cli(capsys, dataflow, "pipeline", "inspect", "chain.outputs", "-v",
                           "--kafka-bootstrap", dataflow.bootstrap)
    _topic_name, key, _value, headers = out.strip().split("\t")
    assert key == ids[-1] and json.loads(headers)
