"""The agent's Prometheus /metrics (under Seldon's names) and its /ready probe."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class AgentMetrics:
    def __init__(self, server_name: str, replica_idx: int, placements):
        self.labels = {"server": server_name, "server_replica": str(replica_idx)}
        self.placements = placements
        self.evictions = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self):
        # Built by hand so the counter keeps Seldon's exact name (the client would add _total).
        evict = Metric("seldon_cache_evict_count", "Models evicted under over-commit", "counter")
        evict.add_sample("seldon_cache_evict_count", self.labels, float(self.evictions))
        yield evict
        loaded = Metric("seldon_loaded_model_gauge", "Models held by the model server", "gauge")
        loaded.add_sample("seldon_loaded_model_gauge", self.labels,
                          float(sum(m.in_server for m in self.placements.models.values())))
        yield loaded
        memory = Metric("seldon_server_available_memory_bytes",
                        "Replica memory not used by loaded models", "gauge")
        memory.add_sample("seldon_server_available_memory_bytes", self.labels,
                          float(self.placements.available()))
        yield memory

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
