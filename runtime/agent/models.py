"""What the agent knows about the model versions placed on its replica: state, memory,
recency and reload cost, and the choice of what to evict."""

import time
from dataclasses import dataclass, field
from enum import Enum

from runtime.pb import agent_pb2

# Seconds of recency one second of extra reload time is worth: a model that takes 0.5 s more
# to load than the cheapest is kept as if it had been used 30 s more recently.
RELOAD_WEIGHT = 60.0


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
    # Its fastest reload into the server so far (a first load may include importing the
    # runtime, and a slow one the machine's noise), for victim(); None until reloaded once.
    load_seconds: float | None = None
    loads: int = 0

    def loaded_in(self, seconds: float) -> None:
        if self.loads:
            self.load_seconds = min(seconds, self.load_seconds or seconds)
        self.loads += 1

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
        """What to evict: the least recently used, where a model that is dear to reload counts
        as used RELOAD_WEIGHT x its extra reload seconds later than it was (GreedyDual-like).
        Under thrash the cheap models come and go and the dear ones stay. Reload times within
        2x of the cheapest (noise, alike models) or not known yet add nothing: plain LRU."""
        candidates = [m for m in self.in_state(State.LOADED) if m.internal_name != keep]
        if not candidates or not self.by_cost:
            return min(candidates, key=lambda m: m.last_used, default=None)
        floor = min((m.load_seconds for m in candidates if m.load_seconds is not None),
                    default=0.0)

        def kept_for(m: Placed) -> float:
            cost = m.load_seconds
            if cost is None or cost <= 2 * floor:
                return 0.0
            return RELOAD_WEIGHT * (cost - floor)

        return min(candidates, key=lambda m: m.last_used + kept_for(m))
