"""The engine's logic without Kafka: records arrive as events (pipeline, step, direction, key,
tensors); nodes join them on the request key within their window and emit what to produce.
Kept pure so joins, triggers and routing are testable without a broker.

At-least-once across a crash: a record whose data waits in a join window has produced nothing
yet, so its offset must not be committed. Each event may carry a `tag` (the engine's offset
token); a tag whose data is held is passed to `on_hold`, and given back either on the Emit its
join fires (`held`: the engine produces on their behalf, then drops the hold) or to `on_free`
when its window closes without output or the pipeline changes."""

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.dataflow.plan import INPUT, OUTPUT, STEP, Node, Plan

Source = tuple[str, str | None, str]   # (pipeline, step or None, "inputs" | "outputs")


@dataclass
class Emit:
    kind: str          # STEP: a model's inputs; OUTPUT: pipeline outputs; INPUT: pipeline inputs
    pipeline: str
    version: int
    step: str
    key: str
    tensors: list[dict]
    held: list = field(default_factory=list, compare=False)  # tags of the joined records


@dataclass
class _State:
    arrivals: dict[int, list[dict]] = field(default_factory=dict)
    deadline: float = 0.0
    fires: int = 0
    closed: bool = False   # fired its last time; later arrivals within the window are dropped
    held: list = field(default_factory=list)   # tags of the arrivals waiting here


def _ready(join: str, arrived: int, total: int, final: bool) -> bool:
    if total == 0:
        return True
    if join == "any":
        return arrived >= 1
    if join == "outer":
        return arrived == total or (final and arrived >= 1)
    return arrived == total


def _no_tag(_tag) -> None:
    pass


class Dataflow:
    def __init__(self, on_hold: Callable[[Any], None] = _no_tag,
                 on_free: Callable[[Any], None] = _no_tag):
        self.on_hold, self.on_free = on_hold, on_free
        self.plans: dict[str, Plan] = {}
        self._index: dict[Source, list[tuple[Node, int]]] = {}
        self._states: dict[tuple[str, str, str], _State] = {}
        self._expiry: list[tuple[float, tuple[str, str, str]]] = []

    # -- pipelines ------------------------------------------------------------------------
    def set_plan(self, plan: Plan) -> None:
        self._drop_states(plan.name)
        self.plans[plan.name] = plan
        self._reindex()

    def remove(self, name: str) -> None:
        self._drop_states(name)
        self.plans.pop(name, None)
        self._reindex()

    def _drop_states(self, name: str) -> None:
        for k in [k for k in self._states if k[0] == name]:
            self._free(self._states.pop(k))

    def _reindex(self) -> None:
        index: dict[Source, list[tuple[Node, int]]] = {}
        for plan in self.plans.values():
            for node in plan.nodes:
                for i, slot in enumerate(node.slots):
                    index.setdefault(slot.ref.source, []).append((node, i))
        self._index = index

    def sources(self) -> set[Source]:
        return set(self._index)

    # -- data -----------------------------------------------------------------------------
    def _free(self, state: _State) -> None:
        held, state.held = state.held, []
        for tag in held:
            self.on_free(tag)

    def on_event(self, source: Source, key: str, tensors: list[dict], now: float,
                 tag: object = None) -> list[Emit]:
        out: list[Emit] = []
        for node, slot_no in self._index.get(source, ()):
            ref = node.slots[slot_no].ref
            picked = [t for t in tensors if ref.tensor is None or t.get("name") == ref.tensor]
            if not picked:
                continue  # nothing for this node: how conditional routing skips a branch
            if not node.joins:
                out += self._fire(node, key, {slot_no: picked})
                continue
            skey = (node.pipeline, node.id, key)
            state = self._states.get(skey)
            if state is None:
                state = _State(deadline=now + node.window_ms / 1000)
                self._states[skey] = state
                heapq.heappush(self._expiry, (state.deadline, skey))
            if state.closed or slot_no in state.arrivals:
                continue  # the slot is filled: this record's data is not used
            state.arrivals[slot_no] = picked
            fired = self._try_fire(node, key, state, final=False)
            if not fired and state.arrivals and tag is not None:
                state.held.append(tag)
                self.on_hold(tag)
            out += fired
        return self._with_step_inputs(out, now, tag)

    def expire(self, now: float) -> list[Emit]:
        """Close windows that ended: outer joins fire with what arrived, the rest is dropped."""
        out: list[Emit] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, skey = heapq.heappop(self._expiry)
            state = self._states.pop(skey, None)
            plan = self.plans.get(skey[0])
            if state is None:
                continue
            if state.closed or plan is None:
                self._free(state)
                continue
            node = next((n for n in plan.nodes if n.id == skey[1]), None)
            if node is not None:
                out += self._try_fire(node, skey[2], state, final=True)
            self._free(state)  # what did not fire is dropped
        return self._with_step_inputs(out, now, None)

    def _with_step_inputs(self, emits: list[Emit], now: float, tag: object) -> list[Emit]:
        """A step's inputs are produced by the engine itself, so refs to `step.inputs` are
        served here rather than by reading the model's input topic back."""
        out = list(emits)
        for e in emits:
            if e.kind == STEP and (e.pipeline, e.step, "inputs") in self._index:
                out += self.on_event((e.pipeline, e.step, "inputs"), e.key, e.tensors, now,
                                     tag)
        return out

    def next_deadline(self) -> float | None:
        return self._expiry[0][0] if self._expiry else None

    def _try_fire(self, node: Node, key: str, state: _State, final: bool) -> list[Emit]:
        data = [i for i, s in enumerate(node.slots) if not s.trigger]
        gates = [i for i, s in enumerate(node.slots) if s.trigger]
        if not (_ready(node.inputs_join, sum(i in state.arrivals for i in data), len(data), final)
                and _ready(node.triggers_join, sum(i in state.arrivals for i in gates),
                           len(gates), final)):
            return []
        arrivals, state.arrivals = state.arrivals, {}
        state.fires += 1
        state.closed = state.fires >= node.max_fires
        emits = self._fire(node, key, arrivals)
        if emits:
            emits[0].held, state.held = state.held, []
        else:
            self._free(state)
        return emits

    def _fire(self, node: Node, key: str, arrivals: dict[int, list[dict]]) -> list[Emit]:
        tensors: list[dict] = []
        for slot_no in sorted(arrivals):
            slot = node.slots[slot_no]
            if slot.trigger:
                continue
            for t in arrivals[slot_no]:
                name = next((node.tensor_map[lb] for lb in slot.ref.labels(t["name"])
                             if lb in node.tensor_map), t["name"])
                tensors.append({**t, "name": name})
        if not tensors:
            return []
        plan = self.plans[node.pipeline]
        return [Emit(node.kind, node.pipeline, plan.version, node.name, key, tensors)]


__all__ = ["INPUT", "OUTPUT", "STEP", "Dataflow", "Emit"]
