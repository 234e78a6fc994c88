"""What the agent knows about the model versions placed on its replica: state, memory,
recency and reload cost, and the choice of what to evict."""

import math
import statistics
import time
from dataclasses import dataclass, field
from enum import Enum

from runtime.pb import agent_pb2


class State(Enum):
    LOADED = "loaded"      # in the model server, counted against memory
    EVICTING = "evicting"  # still in the server (and in memory) while its route moves away
    EVICTED = "evicted"    # files kept in the repository, not in the server


@dataclass
class Placed:
    name: str
    version: int
    internal_name: str
    memory: int
    state: State = State.EVICTED
    last_used: float = field(default_factory=time.time)  # wall clock, comparable with the server
    load_seconds: float | None = None  # how long its last load into the server took

    @property
    def in_server(self) -> bool:
        return self.state in (State.LOADED, State.EVICTING)

    def ref(self) -> agent_pb2.ModelRef:
        return agent_pb2.ModelRef(name=self.name, version=self.version,
                                  internal_name=self.internal_name)

    def record(self) -> dict:
        return {"name": self.name, "version": self.version, "memory": self.memory}


class Placements:
    """internal name -> Placed, with memory accounting and usage-based recency."""

    def __init__(self, capacity: int, by_cost: bool = True):
        self.capacity = capacity
        self.by_cost = by_cost  # False: plain least recently used
        self.models: dict[str, Placed] = {}

    def get(self, internal_name: str) -> Placed | None:
        return self.models.get(internal_name)

    def add(self, model: Placed) -> None:
        self.models[model.internal_name] = model

    def remove(self, internal_name: str) -> None:
        self.models.pop(internal_name, None)

    def used(self) -> int:
        return sum(m.memory for m in self.models.values() if m.in_server)

    def available(self) -> int:
        return self.capacity - self.used()

    def in_state(self, state: State) -> list[Placed]:
        return [m for m in self.models.values() if m.state is state]

    def note_usage(self, last_inference: dict[str, float]) -> None:
        """Take the model server's last-inference times (from the name hook) into account."""
        for internal, stamp in last_inference.items():
            model = self.models.get(internal)
            if model is not None and stamp > model.last_used:
                model.last_used = stamp

    def victim(self, keep: str) -> Placed | None:
        """What to evict: among the least recently used half of the loaded models, the one
        that reloads at under half the cost of the least recently used one, if any; else the
        least recently used. Under thrash a cheap model comes back fast, an expensive one is
        kept; with similar costs (noise) this is plain LRU."""
        candidates = sorted((m for m in self.in_state(State.LOADED) if m.internal_name != keep),
                            key=lambda m: m.last_used)
        if not candidates or not self.by_cost:
            return candidates[0] if candidates else None
        pool = candidates[:math.ceil(len(candidates) / 2)]
        known = [m.load_seconds for m in pool if m.load_seconds is not None]
        typical = statistics.median(known) if known else 0.0

        def cost(m: Placed) -> float:
            return typical if m.load_seconds is None else m.load_seconds

        lru, cheapest = pool[0], min(pool, key=cost)
        return cheapest if cost(cheapest) * 2 < cost(lru) else lru
