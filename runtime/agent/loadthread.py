"""Model loads off MLServer's event loop: each `MLModel.load()` runs on one loader thread (its
own event loop), so requests to models already loaded keep being served while a model loads.

Stock MLServer (with `parallel_workers` 0) awaits `load()` on the serving loop, and runtimes
do their blocking work there (scikit-learn's `joblib.load`, reading weights). On a thread the
work still needs the GIL, and a thread that wants it back waits up to Python's switch interval
(5 ms) each time, several times per request; so while a load runs the interval is lowered
and the serving loop gets the GIL back within `switch_interval`. One thread: the agent loads
one model at a time anyway, and a second loader would only compete with inference.
"""

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable

from mlserver.model import MLModel

SWITCH_INTERVAL = 0.0005  # seconds; see the agent README for the measurement

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()
_running = 0
_normal_interval = sys.getswitchinterval()
switch_interval = SWITCH_INTERVAL


def _loader_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="core2-model-loader",
                             daemon=True).start()
        return _loop


async def _on_loader(load: Callable[[], Awaitable[bool]]) -> bool:
    """Runs on the loader loop; the interval is back to normal once no load runs."""
    global _running
    _running += 1
    sys.setswitchinterval(switch_interval)
    try:
        return await load()
    finally:
        _running -= 1
        if not _running:
            sys.setswitchinterval(_normal_interval)


async def load_off_loop(model: MLModel) -> MLModel:
    """An `on_model_load` hook of MLServer's registry (run just before `model.load()`):
    makes this model's `load` run on the loader thread. The caller's context (MLServer's
    model context variables) goes with it."""
    load = model.load

    async def threaded_load() -> bool:
        future = asyncio.run_coroutine_threadsafe(_on_loader(load), _loader_loop())
        return await asyncio.wrap_future(future)

    model.load = threaded_load  # type: ignore[method-assign]
    return model
