"""Step batching (`steps[].batch`) for the model gateway: requests' inputs are concatenated
along the first dimension into one inference request, and the model's outputs are split back
in the same order.

All requests of a batch must carry the same tensor names, datatypes and trailing shapes (else
`merge` returns None and the caller sends them one by one). Data is flattened row-major, so
nested or flat `data` both work. A batch is flushed when `size` records wait, or `windowMs`
after the first one waited; without `windowMs`, when no more records are immediately
available (the end of the records fetched by one consume).
"""

import asyncio
from collections.abc import Callable
from math import prod


def _flat(data) -> list:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    return [x for d in data for x in _flat(d)]


def _rows(t: dict) -> int | None:
    shape = t.get("shape") or []
    return shape[0] if shape and isinstance(shape[0], int) else None


def merge(docs: list[dict]) -> tuple[dict, list[int]] | None:
    """One OIP request of all `docs` and each doc's row count, or None if they cannot join."""
    try:
        first = docs[0]["inputs"]
        sig = [(t["name"], t["datatype"], list(t["shape"][1:])) for t in first]
        sizes: list[int] = []
        for doc in docs:
            ins = doc["inputs"]
            if [(t["name"], t["datatype"], list(t["shape"][1:])) for t in ins] != sig:
                return None
            rows = {_rows(t) for t in ins}
            size = rows.pop() if len(rows) == 1 else None
            if size is None:
                return None
            sizes.append(size)
    except (KeyError, TypeError, IndexError):
        return None
    if not sig:
        return None
    inputs = []
    for i, (name, datatype, trailing) in enumerate(sig):
        data = [x for doc in docs for x in _flat(doc["inputs"][i].get("data"))]
        tensor = {"name": name, "datatype": datatype, "shape": [sum(sizes), *trailing],
                  "data": data}
        params = first[i].get("parameters")
        if params:
            tensor["parameters"] = params
        inputs.append(tensor)
    return {"inputs": inputs}, sizes


def split(doc: dict, sizes: list[int]) -> list[list[dict]] | None:
    """Each request's outputs from the batched response, or None if an output's first
    dimension is not the batch's row count."""
    total = sum(sizes)
    parts: list[list[dict]] = [[] for _ in sizes]
    for t in doc.get("outputs") or []:
        shape = t.get("shape") or []
        if not shape or shape[0] != total:
            return None
        data, per_row = _flat(t.get("data")), prod(shape[1:])
        if len(data) != total * per_row:
            return None
        start = 0
        for part, rows in zip(parts, sizes, strict=True):
            part.append({**t, "shape": [rows, *shape[1:]],
                         "data": data[start:start + rows * per_row]})
            start += rows * per_row
    return parts


class Batcher:
    """Groups records per key (pipeline, step, model); calls `flush(key, records)` when full,
    when its window ends, or (no window) at `end_of_fetch()`."""

    def __init__(self, flush: Callable[[tuple, list], None]):
        self._flush = flush
        self._pending: dict[tuple, list] = {}
        self._timers: dict[tuple, asyncio.TimerHandle] = {}

    def add(self, key: tuple, record, size: int | None, window_ms: int | None) -> None:
        waiting = self._pending.setdefault(key, [])
        waiting.append(record)
        if size and len(waiting) >= size:
            self._take(key)
        elif window_ms and key not in self._timers:
            self._timers[key] = asyncio.get_running_loop().call_later(
                window_ms / 1000, self._take, key)

    def end_of_fetch(self) -> None:
        for key in [k for k in self._pending if k not in self._timers]:
            self._take(key)

    def _take(self, key: tuple) -> None:
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        records = self._pending.pop(key, [])
        if records:
            self._flush(key, records)
