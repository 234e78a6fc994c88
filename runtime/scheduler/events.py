"""Typed scheduler events on one small bus, as Seldon's coordinator hub: the managers publish
what changed, and each listener subscribes to exactly the kinds and names it depends on (a
pipeline to its step models, an experiment to its candidates, a status stream to what it
watches), so a model change reaches its dependents only, not every experiment and pipeline."""

import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from runtime.scheduler.store import Store


@dataclass(frozen=True)
class Event:
    name: str


@dataclass(frozen=True)
class ModelChanged(Event):
    """The model, one of its versions or their replicas changed (or the model went)."""


@dataclass(frozen=True)
class ServerChanged(Event):
    """The server's spec, a replica's connection or its autoscaling changed."""


@dataclass(frozen=True)
class PipelineChanged(Event):
    """The pipeline's spec or a dataflow report changed, or one of its step models did."""


@dataclass(frozen=True)
class ExperimentChanged(Event):
    """The experiment's spec or learned weights changed, or one of its candidates did."""


E = TypeVar("E", bound=Event)
ALL = ""  # subscribe to every name of a kind


class Bus:
    """Synchronous publish/subscribe keyed by (event type, name); `delivered` counts the
    handler calls (for benchmarks and tests)."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[type[Event], str], list[Callable[[Any], None]]] = \
            defaultdict(list)
        self.delivered = 0

    def subscribe(self, kind: type[E], handler: Callable[[E], None],
                  name: str = ALL) -> Callable[[], None]:
        """Call `handler` on each `kind` event for `name` (ALL: any); returns the unsubscribe."""
        key = (kind, name)
        self._handlers[key].append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(key, [])
            if handler in handlers:
                handlers.remove(handler)
            if not handlers:
                self._handlers.pop(key, None)
        return unsubscribe

    def publish(self, event: Event) -> None:
        for key in ((type(event), ALL), (type(event), event.name)):
            for handler in list(self._handlers.get(key, ())):
                self.delivered += 1
                handler(event)


class Dependents:
    """Resources that follow others (pipelines their step models, experiments their
    candidates): a `source` event for a name any dependent names is re-published as a
    `target` event for that dependent."""

    def __init__(self, bus: Bus, source: type[Event], target: type[Event]):
        self.bus, self.source, self.target = bus, source, target
        self._unsubscribe: dict[str, list[Callable[[], None]]] = {}

    def follow(self, dependent: str, names: Iterable[str]) -> None:
        """`dependent` now follows exactly `names`."""
        self.drop(dependent)
        self._unsubscribe[dependent] = [
            self.bus.subscribe(self.source, lambda _e: self.bus.publish(self.target(dependent)),
                               name) for name in set(names)]

    def drop(self, dependent: str) -> None:
        for unsubscribe in self._unsubscribe.pop(dependent, []):
            unsubscribe()


class Stamps:
    """When each name of an event kind last changed (unix ms): a resource's
    updated_unix_ms, moved by a change to it or to what it follows."""

    def __init__(self, bus: Bus, kind: type[Event]):
        self._at: dict[str, int] = {}
        bus.subscribe(kind, self._stamp)

    def _stamp(self, event: Event) -> None:
        self._at[event.name] = int(time.time() * 1000)

    def get(self, name: str) -> int:
        return self._at.get(name, 0)


class Hub(Protocol):
    """What the scheduler's managers use of it (runtime.scheduler.core.Scheduler): the bus,
    the store, background tasks, and routes pushed to Envoy."""

    bus: Bus
    store: "Store"

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None: ...

    async def publish_routes(self, changed_model: str | None = None) -> bool: ...
