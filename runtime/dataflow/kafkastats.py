"""How many requests a dataflow service's Kafka clients send, by request type, for /metrics
(`core2_kafka_requests_total{client, request}`), from librdkafka's statistics. It shows what
a service costs its broker: an idle engine or pipeline gateway should send a few fetches a
second, not hundreds (runtime.dataflow.pacing)."""

import json
import logging
import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
# how often each client reports (ms): the report is built on librdkafka's thread and handed
# over at the client's next poll; every 5 s it costs nothing measurable
STATS_INTERVAL_MS = 5000


class KafkaRequests(Collector):
    """Requests sent so far, summed over every client this process made (a client's counts
    are kept after it is closed, so the totals never go down)."""

    def __init__(self) -> None:
        # (role, librdkafka's client name) -> request type -> requests sent
        self._counts: dict[tuple[str, str], dict[str, int]] = {}
        self._lock = threading.Lock()

    def config(self, role: str) -> dict:
        """The settings that make a client report its counts here, under `role`."""
        return {"statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": lambda doc: self.update(role, doc)}

    def update(self, role: str, doc: str) -> None:
        try:
            stats = json.loads(doc)
            counts: dict[str, int] = {}
            for broker in stats["brokers"].values():
                for request, n in broker.get("req", {}).items():
                    if n:
                        counts[request] = counts.get(request, 0) + n
        except (ValueError, KeyError, AttributeError, TypeError) as e:
            log.debug("unreadable Kafka client statistics: %s", e)
            return
        with self._lock:
            self._counts[(role, stats.get("name", ""))] = counts

    def totals(self) -> dict[tuple[str, str], int]:
        """(role, request type) -> requests sent."""
        out: dict[tuple[str, str], int] = {}
        with self._lock:
            for (role, _name), counts in self._counts.items():
                for request, n in counts.items():
                    out[(role, request)] = out.get((role, request), 0) + n
        return out

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("core2_kafka_requests", "requests this service's Kafka "
                                     "clients sent, by client and request type",
                                     labels=["client", "request"])
        for (role, request), n in sorted(self.totals().items()):
            family.add_metric([role, request], n)
        yield family


KAFKA_REQUESTS = KafkaRequests()
REGISTRY.register(KAFKA_REQUESTS)
