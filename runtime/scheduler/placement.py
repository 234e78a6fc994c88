"""Where a model version goes: named filters, then named sorters, as in Seldon Core 2.

Filters (per server), each a Rule whose description is what a user reads in ScheduleFailed:
`requirements` (every requirement among the server's capabilities), `replicas` (enough
connected replicas that are not draining, i.e. going away), `memory` (enough of those with
the model's memory free after over-commit and other placements). A pinned `server` narrows
the candidates to it first.
Sorters: servers by `holds the model`, `most free memory`, `name`; replicas by `serving this
version` (topping up never moves a serving copy), `most free memory`, `lowest index`.
A model with `minReplicas` may be placed on fewer replicas than asked (partial scheduling)."""

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from runtime.scheduler import state as st
from runtime.scheduler.state import Model, ModelVersion, Replica

# A copy in these states holds no memory; in any other (being unloaded too) it does.
HOLDS_NOTHING = (st.UNLOADED, st.LOAD_FAILED)


@dataclass
class Placement:
    server: str
    replicas: list[int]
    partial: bool = False


class PlacementError(Exception):
    """No server fits; the message says why (shown as the model's ScheduleFailed reason)."""


@dataclass(frozen=True)
class Ask:
    """What is being placed: one model version's needs."""

    requirements: list[str]
    memory: int
    want: int                                   # replicas asked for
    minimum: int                                # fewest acceptable (partial scheduling)
    used: Mapping[str, int]                     # bytes placed per replica key already
    holding: set[str] = field(default_factory=set)      # servers with the model
    loaded_on: set[str] | frozenset[str] = frozenset()  # replica keys serving this version

    @property
    def needed(self) -> int:
        return max(self.minimum, 1)

    def free(self, r: Replica) -> int:
        return r.capacity - self.used.get(r.key, 0)

    def fitting(self, server: "Server") -> list[Replica]:
        return [r for r in server.replicas if self.free(r) >= self.memory]


@dataclass(frozen=True)
class Server:
    """A candidate server: its connected replicas that are not draining."""

    name: str
    replicas: list[Replica]
    draining: int = 0

    @property
    def capabilities(self) -> set[str]:
        return set().union(*(r.capabilities for r in self.replicas))


@dataclass(frozen=True)
class Rule:
    """A filter: `fits` says whether a server may take the model; `why` says, when it may
    not, what a user reads."""

    name: str
    fits: Callable[[Ask, Server], bool]
    why: Callable[[Ask, Server], str]

    def reason(self, ask: Ask, server: Server) -> str:
        return f"server {server.name} [{self.name}]: {self.why(ask, server)}"


@dataclass(frozen=True)
class Sorter:
    """An order among candidates (servers or replicas): lower keys first."""

    name: str
    key: Callable[..., object]


def quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity a user would write: 900Mi, 1Gi, 1.5Gi."""
    if n >= 2**30:
        return f"{round(n / 2**30, 1):g}Gi"
    return f"{round(n / 2**20):d}Mi"


def _missing(ask: Ask, server: Server) -> list[str]:
    caps = server.capabilities
    return [req for req in ask.requirements if req not in caps]


def _draining_note(n: int) -> str:
    return f" ({n} draining)" if n else ""


def _short_of_memory(ask: Ask, server: Server) -> str:
    best = max(ask.free(r) for r in server.replicas)
    return (f"not enough memory: {len(ask.fitting(server))} of {ask.needed} replica(s) needed "
            f"have {quantity(ask.memory)} free after over-commit (most free: {quantity(best)})")


FILTERS = (
    Rule("requirements", lambda a, s: not _missing(a, s),
         lambda a, s: f"lacks {', '.join(_missing(a, s))}"),
    Rule("replicas", lambda a, s: len(s.replicas) >= a.needed,
         lambda a, s: f"{len(s.replicas)} of {a.needed} replica(s) needed connected"
                      + _draining_note(s.draining)),
    Rule("memory", lambda a, s: len(a.fitting(s)) >= a.needed, _short_of_memory),
)
REPLICA_SORTERS = (
    Sorter("serving this version", lambda a, r: r.key not in a.loaded_on),
    Sorter("most free memory", lambda a, r: -a.free(r)),
    Sorter("lowest index", lambda a, r: r.idx),
)
SERVER_SORTERS = (  # over (server, replicas chosen on it)
    Sorter("holds the model", lambda a, s, chosen: s.name not in a.holding),
    Sorter("most free memory", lambda a, s, chosen: -sum(a.free(r) for r in chosen)),
    Sorter("name", lambda a, s, chosen: s.name),
)


def _servers(replicas: list[Replica]) -> dict[str, Server]:
    up: dict[str, list[Replica]] = defaultdict(list)
    draining: Counter[str] = Counter()
    for r in replicas:
        if r.connected and r.draining:
            draining[r.server] += 1
        elif r.connected:
            up[r.server].append(r)
    return {name: Server(name, up[name], draining[name]) for name in sorted(up)} | {
        name: Server(name, [], n) for name, n in draining.items() if name not in up}


def place(*, requirements: list[str], memory: int, want: int, minimum: int, pinned: str | None,
          replicas: list[Replica], used: Mapping[str, int], holding: set[str],
          loaded_on: frozenset[str] | set[str] = frozenset()) -> Placement:
    """`used`: bytes already placed per replica key; `holding`: servers with this model;
    `loaded_on`: replica keys already serving this version."""
    ask = Ask(requirements, memory, want, minimum, used, holding, loaded_on)
    servers = _servers(replicas)
    up = {name: s for name, s in servers.items() if s.replicas}
    if pinned:
        if pinned not in up:
            draining = servers[pinned].draining if pinned in servers else 0
            raise PlacementError(f"server {pinned!r} has no connected replica"
                                 + (f" that is not draining ({draining} draining)"
                                    if draining else ""))
        up = {pinned: up[pinned]}
    if not up:
        draining = sum(s.draining for s in servers.values())
        raise PlacementError("no server replica is connected"
                             + (f" that is not draining ({draining} draining)"
                                if draining else ""))
    failed: list[tuple[Rule, Server]] = []
    fits: list[tuple[Server, list[Replica]]] = []
    for server in up.values():
        rule = next((rule for rule in FILTERS if not rule.fits(ask, server)), None)
        if rule is not None:
            failed.append((rule, server))
            continue
        free = sorted(ask.fitting(server),
                      key=lambda r: tuple(s.key(ask, r) for s in REPLICA_SORTERS))
        fits.append((server, free[:want]))
    if not fits:
        reasons = "; ".join(rule.reason(ask, server) for rule, server in failed)
        if all(rule is FILTERS[0] for rule, _ in failed):
            raise PlacementError(f"no server offers requirement(s) {', '.join(requirements)} "
                                 f"({reasons})")
        raise PlacementError(reasons)
    server, chosen = min(fits, key=lambda f: tuple(s.key(ask, *f) for s in SERVER_SORTERS))
    return Placement(server.name, sorted(r.idx for r in chosen), partial=len(chosen) < want)


def _share(v: ModelVersion) -> dict[str, int]:
    """Bytes one version takes on each replica it is placed on."""
    return {f"{v.server}/{idx}": v.spec.memory_bytes for idx, r in v.replicas.items()
            if r.state not in HOLDS_NOTHING}


def used_from_scratch(models: dict[str, Model], exclude: ModelVersion | None = None
                      ) -> dict[str, int]:
    """Bytes placed per replica key, walking every model version (but `exclude`)."""
    used: Counter[str] = Counter()
    for m in models.values():
        for v in m.versions:
            if v is not exclude:
                used.update(_share(v))
    return {k: n for k, n in used.items() if n}


class UsedMemory:
    """Bytes placed per replica key, kept up to date as models change: the scheduler touches
    a model on every change to it (its versions, their replicas' states), and the next
    decision recomputes only the touched models' shares, not every model's."""

    def __init__(self, models: dict[str, Model]):
        self._models = models
        self._full = True       # the first decision looks at every model (after a restart)
        self._dirty: set[str] = set()
        self._shares: dict[str, dict[int, dict[str, int]]] = {}  # model -> version -> share
        self._used: Counter[str] = Counter()

    def touch(self, model: str) -> None:
        self._dirty.add(model)

    def without(self, exclude: ModelVersion | None = None) -> dict[str, int]:
        """Bytes placed per replica key by every version but `exclude` (the one being
        placed; its model is looked at afresh, as the caller may be changing it)."""
        if exclude is not None:
            self._dirty.add(exclude.model)
        if self._full:
            self._dirty |= set(self._models) | set(self._shares)
            self._full = False
        for name in self._dirty:
            self._recompute(name)
        self._dirty.clear()
        used = Counter(self._used)
        if exclude is not None:
            used.subtract(self._shares.get(exclude.model, {}).get(exclude.version, {}))
        return {k: n for k, n in used.items() if n}

    def _recompute(self, name: str) -> None:
        for share in self._shares.pop(name, {}).values():
            self._used.subtract(share)
        m = self._models.get(name)
        if m is None:
            return
        shares = {v.version: _share(v) for v in m.versions}
        for share in shares.values():
            self._used.update(share)
        self._shares[name] = shares
