"""`core2 pipeline inspect`: read the latest records a pipeline left on each of its topics."""

import json
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from runtime.dataflow.records import decode, headers_of, key_of
from runtime.kafka import (
    H_PIPELINE,
    PRODUCE_TIMEOUT_MS,
    RECORD_LINGER_MS,
    KafkaConfig,
    partitions_of,
)
from runtime.specs.pipeline import PipelineSpec


@dataclass
class Record:
    topic: str
    key: str
    headers: dict[str, str]
    value: dict | None

    def tensors(self) -> list[dict]:
        v = self.value or {}
        return v.get("inputs") or v.get("outputs") or []


class InspectError(ValueError):
    pass


# How long `--request-id` waits for a request's records that are not on a topic yet: they
# are written up to RECORD_LINGER_MS after the answer, later on a loaded machine. A request
# whose records are on some of the topics but not the others waits longer, for a produce
# request the broker left unanswered and the engine sends again (PRODUCE_TIMEOUT_MS): the
# fresh-clone CI once found a join's last step's records but not its first steps'.
RECORD_SETTLE_S = 10 * RECORD_LINGER_MS / 1000
RECORD_LATE_S = RECORD_SETTLE_S + PRODUCE_TIMEOUT_MS / 1000
# The fetch wait of this reader of what is already on the topics, whatever the pipelines'
# (2 ms on the embedded broker): Tansu scans a partition's batches on each fetch and, given
# 2 ms, answers nothing once there are a few thousand (2,500 batches: the last record found
# after 90 s, with 500 ms at once; the fresh-clone CI twice missed a join's add10 and mul10
# records, topics the tests before it had filled). A broker with records answers at once.
READ_FETCH_WAIT_MS = 1000


def topics_for(cfg: KafkaConfig, pipeline: str, spec: PipelineSpec,
               target: str) -> tuple[list[str], str | None]:
    """Topics for NAME[.step[.inputs|outputs[.tensor]]] and the tensor to keep (or None)."""
    parts = target.split(".")
    if parts[0] != pipeline:
        raise InspectError(f"{target!r}: must start with the pipeline name {pipeline!r}")
    steps = [s.name for s in spec.steps]
    if len(parts) == 1:
        topics = [cfg.pipeline_inputs(pipeline)]
        for s in steps:
            topics += [cfg.model_inputs(s), cfg.model_outputs(s)]
        return [*topics, cfg.pipeline_outputs(pipeline)], None
    step = parts[1]
    if step in ("inputs", "outputs") and len(parts) <= 3:
        topic = (cfg.pipeline_inputs if step == "inputs" else cfg.pipeline_outputs)(pipeline)
        return [topic], (parts[2] if len(parts) == 3 else None)
    if step not in steps:
        raise InspectError(f"{target!r}: {step!r} is not a step of {pipeline} "
                           f"(steps: {', '.join(steps)})")
    if len(parts) == 2:
        return [cfg.model_inputs(step), cfg.model_outputs(step)], None
    if parts[2] not in ("inputs", "outputs"):
        raise InspectError(f"{target!r}: expected {pipeline}.{step}.inputs or .outputs")
    topic = (cfg.model_inputs if parts[2] == "inputs" else cfg.model_outputs)(step)
    return [topic], (".".join(parts[3:]) or None)


def read_records(cfg: KafkaConfig, topics: list[str], pipeline: str | None = None,
                 request_id: str | None = None, last: int = 1,
                 scan: int = 10_000, timeout: float = 10) -> list[Record]:
    """The latest `last` records per topic (of `pipeline`, with key `request_id` if given),
    searching at most the last `scan` records of each partition. With `request_id`, topics
    without its record are read again, for what came since, until RECORD_SETTLE_S after the
    start (RECORD_LATE_S once another topic had one)."""
    consumer = Consumer({**cfg.consumer(None), "fetch.wait.max.ms": READ_FETCH_WAIT_MS})
    start = time.monotonic()
    found: dict[str, list[Record]] = {}
    read_to: dict[tuple[str, int], int] = {}   # (topic, partition) -> the offset read up to
    try:
        partitions = {t: _partitions(consumer, t, timeout) for t in topics}
        while True:
            for topic, parts in partitions.items():
                if not found.get(topic):
                    found[topic] = [r for p in parts for r in _read_partition(
                        consumer, topic, p, read_to, scan, timeout, pipeline, request_id)]
            if not request_id or all(found[t] for t in partitions if partitions[t]):
                break
            wait = RECORD_LATE_S if any(found.values()) else RECORD_SETTLE_S
            if time.monotonic() - start >= wait:
                break
            time.sleep(RECORD_SETTLE_S / 20)
    finally:
        consumer.close()
    return [r for t in topics for r in found.get(t, [])[-last:]]


def _partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """The topic's partitions; none when it does not exist (a pipeline not loaded yet)."""
    try:
        return partitions_of(consumer, topic, timeout)
    except RuntimeError:
        return []


def _read_partition(consumer: Consumer, topic: str, partition: int,
                    read_to: dict[tuple[str, int], int],
                    scan: int, timeout: float, pipeline: str | None,
                    request_id: str | None) -> list[Record]:
    """The partition's records from where the last call stopped (read_to) or the last `scan`
    records, up to its current end."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                               timeout=timeout)
    pos = max(low, high - scan, read_to.get((topic, partition), 0))
    read_to[topic, partition] = max(pos, high)
    if high <= pos:
        return []
    consumer.assign([TopicPartition(topic, partition, pos)])
    found: list[Record] = []
    while pos < high:
        msg = consumer.poll(timeout)
        if msg is None:
            break
        if msg.error() or (msg.topic(), msg.partition()) != (topic, partition):
            continue   # not a record, or one fetched for the partition read before
        pos = (msg.offset() or pos) + 1
        rec = Record(topic, key_of(msg), headers_of(msg), decode(msg.value()))
        if pipeline and rec.headers.get(H_PIPELINE, pipeline) != pipeline:
            continue
        if request_id and rec.key != request_id:
            continue
        found.append(rec)
    return found


def _body(r: Record, tensor: str | None):
    if not tensor:
        return r.value
    picked = [t for t in r.tensors() if t.get("name") == tensor]
    return picked[0] if picked else None


def render(records: list[Record], tensor: str | None = None, verbose: bool = False) -> str:
    """Seldon's raw format: `topic<TAB>key<TAB>value`, one record a line; `verbose` adds the
    record's headers as a fourth column (a JSON object)."""
    lines = []
    for r in records:
        line = f"{r.topic}\t{r.key}\t{json.dumps(_body(r, tensor))}"
        lines.append(line + (f"\t{json.dumps(r.headers)}" if verbose else ""))
    return "\n".join(lines)


def render_json(records: list[Record], tensor: str | None = None,
                verbose: bool = False) -> str:
    """Seldon's `--format json`: {"topics": [{"name", "msgs": [{"key", "value"[, "headers"]}]}]},
    headers as lists of values (a Kafka header may repeat) with `verbose`."""
    topics: dict[str, list[dict]] = {}
    for r in records:
        msg = {"key": r.key, "value": _body(r, tensor)}
        if verbose:
            msg["headers"] = {k: [v] for k, v in r.headers.items()}
        topics.setdefault(r.topic, []).append(msg)
    return json.dumps({"topics": [{"name": t, "msgs": m} for t, m in topics.items()]})
