"""The agent's Prometheus /metrics under Seldon's names.

Inference does not pass the agent (Envoy sends it straight to the model server), so per-model
request counts come from the model server's own counters, read when /metrics is scraped and
translated: MLServer's `model_infer_request_{success,failure}` and
`model_infer_request_duration` (summary, seconds), or Triton's
`nv_inference_request_{success,failure}` and `nv_inference_request_duration_us`, all labelled
with the internal name (`iris_1`), become `seldon_model_infer_total{model="iris",
model_internal="iris_1",code=...}` and friends.

The model server's counters start again from zero when it restarts; Seldon's must not. Each
total is kept here and grows by the difference between two readings; a reading below the last
one (or, for MLServer, a new `_created` stamp) means the server started counting again, and the
whole reading is added.
"""

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

log = logging.getLogger("core2.agent.metrics")
SCRAPE_TIMEOUT_S = 2.0

# model server sample name (without a trailing _total) -> (field, multiplier to seconds/count)
SERVER_SAMPLES = {
    "model_infer_request_success": ("success", 1.0),          # MLServer
    "model_infer_request_failure": ("failure", 1.0),
    "model_infer_request_duration_sum": ("seconds", 1.0),
    "nv_inference_request_success": ("success", 1.0),         # Triton
    "nv_inference_request_failure": ("failure", 1.0),
    "nv_inference_request_duration_us": ("seconds", 1e-6),
}
FIELDS = ("success", "failure", "seconds")
CREATED = "model_infer_request_success_created"  # MLServer: when this series started counting


@dataclass
class Reading:
    """One model's counters as the model server reports them now."""
    success: float = 0.0
    failure: float = 0.0
    seconds: float = 0.0
    created: float | None = None


def parse_server_metrics(text: str) -> dict[str, Reading]:
    """internal model name -> its counters (versions and failure reasons summed)."""
    readings: dict[str, Reading] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if not model:
                continue
            name = sample.name
            if sample.name == CREATED:
                readings.setdefault(model, Reading()).created = sample.value
                continue
            # the parser adds _total to counters that lack it (Triton's); compare without it
            field, scale = SERVER_SAMPLES.get(name.removesuffix("_total"), (None, 0.0))
            if field is None:
                continue
            reading = readings.setdefault(model, Reading())
            setattr(reading, field, getattr(reading, field) + sample.value * scale)
    return readings


class MonotonicTotals:
    """Seldon's totals per internal name, made monotonic across model-server restarts."""

    def __init__(self):
        self.totals: dict[str, dict[str, float]] = {}
        self.last: dict[str, Reading] = {}

    def observe(self, internal: str, now: Reading) -> None:
        before = self.last.get(internal)
        restarted = before is None or (now.created != before.created) or any(
            getattr(now, f) < getattr(before, f) for f in FIELDS)
        totals = self.totals.setdefault(internal, dict.fromkeys(FIELDS, 0.0))
        for f in FIELDS:
            totals[f] += getattr(now, f) - (0.0 if restarted else getattr(before, f))
        self.last[internal] = now


@dataclass
class Family:
    name: str
    type: str
    help: str
    samples: list[tuple[dict[str, str], float]]


def render_text(families: list[Family]) -> bytes:
    """Prometheus text format with the exact names given (prometheus_client's own writer
    appends _total to every counter, which would rename Seldon's `*_count` counters)."""
    lines = []
    for fam in families:
        lines += [f"# HELP {fam.name} {fam.help}", f"# TYPE {fam.name} {fam.type}"]
        for labels, value in fam.samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{fam.name}{{{text}}} {floatToGoString(value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class AgentMetrics:
    def __init__(self, server_name: str, replica_idx: int, placements):
        self.labels = {"server": server_name, "server_replica": str(replica_idx)}
        self.placements = placements
        self.evictions = 0
        self.loads = 0          # models loaded into the server (first loads and reloads)
        self.unloads = 0        # models unloaded from the server (unload and eviction)
        self.cache_misses = 0   # requests for an evicted model that made the agent reload it
        self.server_totals = MonotonicTotals()
        self._lock = asyncio.Lock()  # concurrent scrapes must apply readings in order
        self._failing = False

    @property
    def failing(self) -> bool:
        """The last read of the model server's counters failed."""
        return self._failing

    async def refresh(self, session: aiohttp.ClientSession, url: str) -> None:
        """Read the model server's counters; on failure keep the last totals (and say so once
        per outage), so the agent's own metrics are still served."""
        async with self._lock:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(
                        total=SCRAPE_TIMEOUT_S)) as r:
                    r.raise_for_status()
                    readings = parse_server_metrics(await r.text())
            except Exception as e:  # unreachable, timed out, not Prometheus text: serve anyway
                if not self._failing:
                    log.warning("cannot read the model server's metrics at %s (%s): per-model "
                                "metrics keep their last values", url, e or type(e).__name__)
                self._failing = True
                return
            if self._failing:
                log.info("model server's metrics readable again at %s", url)
            self._failing = False
            for internal, reading in readings.items():
                if self.placements.get(internal) is not None:  # only models this agent placed
                    self.server_totals.observe(internal, reading)

    def families(self) -> list[Family]:
        base = self.labels
        infer = Family("seldon_model_infer_total", "counter",
                       "Model inference requests by outcome (from the model server)", [])
        seconds = Family("seldon_model_infer_seconds_total", "counter",
                         "Seconds the model server spent on the model's requests", [])
        agg = {"200": 0.0, "500": 0.0, "seconds": 0.0}
        # Aggregates include models since unloaded, so they never go down.
        for internal, totals in self.server_totals.totals.items():
            agg["200"] += totals["success"]
            agg["500"] += totals["failure"]
            agg["seconds"] += totals["seconds"]
            model = self.placements.get(internal)
            if model is None:
                continue
            labels = {"model": model.name, "model_internal": internal, **base}
            infer.samples.append(({**labels, "code": "200"}, totals["success"]))
            infer.samples.append(({**labels, "code": "500"}, totals["failure"]))
            seconds.samples.append((labels, totals["seconds"]))

        def one(name, typ, doc, value):
            return Family(name, typ, doc, [(base, float(value))])

        return [
            infer, seconds,
            Family("seldon_model_aggregate_infer_total", "counter",
                   "Inference requests over all models of the replica",
                   [({**base, "code": "200"}, agg["200"]), ({**base, "code": "500"}, agg["500"])]),
            one("seldon_model_aggregate_infer_seconds_total", "counter",
                "Inference seconds over all models of the replica", agg["seconds"]),
            one("seldon_cache_evict_count", "counter", "Models evicted under over-commit",
                self.evictions),
            one("seldon_cache_miss_count", "counter",
                "Requests for an evicted model that the agent reloaded", self.cache_misses),
            one("seldon_load_model_counter", "counter", "Model loads into the model server",
                self.loads),
            one("seldon_unload_model_counter", "counter",
                "Model unloads from the model server", self.unloads),
            one("seldon_loaded_model_gauge", "gauge", "Models held by the model server",
                sum(m.in_server for m in self.placements.models.values())),
            one("seldon_server_available_memory_bytes", "gauge",
                "Replica memory not used by loaded models", self.placements.available()),
        ]

    def render(self) -> tuple[bytes, str]:
        return render_text(self.families()), CONTENT_TYPE_LATEST
