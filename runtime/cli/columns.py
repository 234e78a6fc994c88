"""The columns of `core2 <noun> list` (and `status -o table|wide`), per kind: the short view,
and the wide one with what a user checks next (replicas, server, reason, age)."""

import time
from collections.abc import Callable, Sequence

from runtime.cli.seldon_status import render
from runtime.pb import scheduler_pb2 as pb

Row = Callable[[pb.ResourceStatus], Sequence[object]]


def age(unix_ms: int) -> str:
    """Time since the last change, as kubectl's AGE: 42s, 5m, 3h, 2d."""
    if not unix_ms:
        return ""
    seconds = max(0, int(time.time() - unix_ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "d" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _model(s: pb.ResourceStatus) -> tuple[str, str, str]:
    """(ready/desired replicas, server, replicas' states) of the newest version."""
    versions = render(s).get("versions") or [{}]
    latest = versions[-1]
    available = latest.get("state", {}).get("availableReplicas", 0)
    desired = latest.get("modelDefn", {}).get("deploymentSpec", {}).get("replicas", available)
    states = sorted({r["state"] for r in latest.get("modelReplicaState", {}).values()})
    return f"{available}/{desired}", latest.get("serverName", ""), ",".join(states)


def model_row(s: pb.ResourceStatus, wide: bool) -> list[object]:
    ready, server, replicas = _model(s)
    row: list[object] = [s.name, s.version, s.state, ready]
    return [*row, server, replicas, s.reason, age(s.updated_unix_ms)] if wide else row


def server_row(s: pb.ResourceStatus, wide: bool) -> list[object]:
    doc = render(s)
    row: list[object] = [s.name, f"{doc['availableReplicas']}/{doc['expectedReplicas']}",
                         doc["numLoadedModelReplicas"]]
    if not wide:
        return row
    free = sum(int(r["availableMemoryBytes"]) for r in doc["resources"])
    total = sum(int(r["totalMemoryBytes"]) for r in doc["resources"])
    return [*row, s.state, f"{free >> 20}/{total >> 20}", s.reason, age(s.updated_unix_ms)]


def pipeline_row(s: pb.ResourceStatus, wide: bool) -> list[object]:
    state = render(s)["versions"][0]["state"]
    row: list[object] = [s.name, s.version, s.state, str(state["modelsReady"]).lower()]
    return [*row, s.reason, age(s.updated_unix_ms)] if wide else row


def experiment_row(s: pb.ResourceStatus, wide: bool) -> list[object]:
    doc = render(s)
    row: list[object] = [s.name, s.state, str(doc["active"]).lower()]
    if not wide:
        return row
    return [*row, str(doc["candidatesReady"]).lower(), str(doc["mirrorReady"]).lower(),
            s.reason, age(s.updated_unix_ms)]


HEADERS = {
    "Model": (["NAME", "VERSION", "STATE", "READY"], ["SERVER", "REPLICAS", "REASON", "AGE"]),
    "Server": (["NAME", "READY", "MODELS"], ["STATE", "MEMORY FREE/TOTAL (MiB)", "REASON",
                                             "AGE"]),
    "Pipeline": (["NAME", "VERSION", "STATE", "MODELS READY"], ["REASON", "AGE"]),
    "Experiment": (["NAME", "STATE", "ACTIVE"], ["CANDIDATES READY", "MIRROR READY", "REASON",
                                                 "AGE"]),
}
ROWS = {"Model": model_row, "Server": server_row, "Pipeline": pipeline_row,
        "Experiment": experiment_row}


def of(kind: str, wide: bool) -> tuple[list[str], Row]:
    """The headers and the row function of a kind's table."""
    short, extra = HEADERS[kind]
    return (short + extra if wide else short), lambda s: ROWS[kind](s, wide)
