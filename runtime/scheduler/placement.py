"""Where a model version goes: filters, then sorters, as in Seldon Core 2.

Filters (per server): the pinned `server`; every requirement among the server's capabilities;
enough connected replicas that are not draining (going away); per replica, free memory after
over-commit and other placements.
Sorters: a server already holding the model first; then, per replica, one already serving this
version (topping up never moves a serving copy); then most free memory; then lowest index.
A model with `minReplicas` may be placed on fewer replicas than asked (partial scheduling)."""

from collections import Counter, defaultdict
from dataclasses import dataclass

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


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f}MiB"


def _draining_note(n: int) -> str:
    return f" that is not draining ({n} draining)" if n else ""


def place(*, requirements: list[str], memory: int, want: int, minimum: int, pinned: str | None,
          replicas: list[Replica], used: dict[str, int], holding: set[str],
          loaded_on: frozenset[str] | set[str] = frozenset()) -> Placement:
    """`used`: bytes already placed per replica key; `holding`: servers with this model;
    `loaded_on`: replica keys already serving this version."""
    servers: dict[str, list[Replica]] = defaultdict(list)
    draining: dict[str, int] = defaultdict(int)
    for r in replicas:
        if r.connected and r.draining:
            draining[r.server] += 1
        elif r.connected:
            servers[r.server].append(r)
    if pinned and pinned not in servers:
        raise PlacementError(f"server {pinned!r} has no connected replica"
                             + _draining_note(draining[pinned]))
    reasons, fits = [], []
    for name, reps in sorted(servers.items()):
        if pinned and name != pinned:
            continue
        caps = set().union(*(r.capabilities for r in reps))
        missing = [req for req in requirements if req not in caps]
        if missing:
            reasons.append(f"{name} lacks {', '.join(missing)}")
            continue
        free = [r for r in reps if r.capacity - used.get(r.key, 0) >= memory]
        if len(free) < max(minimum, 1) and want > 0:
            best = max(r.capacity - used.get(r.key, 0) for r in reps)
            reasons.append(f"{name} has {len(free)} replica(s) with {_mb(memory)} free "
                           f"(needs {max(minimum, 1)}; most free {_mb(best)})")
            continue
        free.sort(key=lambda r: (r.key not in loaded_on, -(r.capacity - used.get(r.key, 0)),
                                 r.idx))
        chosen = free[:want]
        fits.append((name in holding, sum(r.capacity - used.get(r.key, 0) for r in chosen),
                     name, chosen))
    if not fits:
        if not servers:
            raise PlacementError("no server replica is connected"
                                 + _draining_note(sum(draining.values())))
        if requirements and all("lacks" in r for r in reasons):
            raise PlacementError(f"no server offers requirement(s) {', '.join(requirements)} "
                                 f"({'; '.join(reasons)})")
        raise PlacementError("; ".join(reasons))
    fits.sort(key=lambda f: (not f[0], -f[1], f[2]))
    _, _, name, chosen = fits[0]
    return Placement(name, sorted(r.idx for r in chosen), partial=len(chosen) < want)


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
